"""Dataset parsers, the registry and ``check_dataset``, on tiny fake folders (tests/fake_datasets.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nas_reid.data.cuhk03 as cuhk03_module
from nas_reid.data import ReIDDataset, dataset_names, load_dataset, register_dataset
from nas_reid.data.base import SplitStats
from nas_reid.data.check import check_dataset, format_check
from nas_reid.data.market_style import load_market_style, read_market_folder
from nas_reid.data.registry import official_counts
from nas_reid.errors import DatasetError, UserError

sys.path.insert(0, str(Path(__file__).parent))
import fake_datasets as fake  # noqa: E402


def pids(items):
    return sorted({pid for _, pid, _ in items})


def cams(items):
    return sorted({cam for _, _, cam in items})


def names(items):
    return [Path(path).name for path, _, _ in items]


# ----------------------------------------------------------------------------- Market-1501


def test_market_counts_relabel_distractors_junk(tmp_path):
    folder = fake.build_market(tmp_path)
    ds = load_dataset("market1501", folder)
    assert isinstance(ds, ReIDDataset) and ds.name == "market1501"
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (6, 2, 5)  # 2 junk files dropped
    assert pids(ds.train) == [0, 1, 2]  # 2, 5, 7 relabelled in sorted order
    assert ds.extra["train_pids"] == [2, 5, 7]
    by_name = {Path(p).name: pid for p, pid, _ in ds.train}
    assert by_name[fake.market_name(7, 1, 0)] == 2 and by_name[fake.market_name(5, 4, 5)] == 1
    assert pids(ds.query) == [3, 4]  # kept as is
    assert pids(ds.gallery) == [0, 3, 4]  # distractor 0 kept, junk -1 gone
    assert sum(pid == 0 for _, pid, _ in ds.gallery) == 2
    assert cams(ds.train) == [0, 1, 2, 3, 5] and cams(ds.query) == [0, 1]  # 0-based
    for split in (ds.train, ds.query, ds.gallery):
        assert [p for p, _, _ in split] == sorted(p for p, _, _ in split)
        assert all(os.path.isabs(p) and os.path.isfile(p) for p, _, _ in split)
    assert ds.stats("gallery") == SplitStats(ids=3, images=5, cameras=5)
    assert ds.root == folder


def test_market_output_is_deterministic(tmp_path):
    folder = fake.build_market(tmp_path)
    assert load_dataset("market1501", folder) == load_dataset("market1501", folder)


@pytest.mark.parametrize("sub", ["Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501"])
def test_market_root_resolution(tmp_path, sub):
    folder = fake.build_market(tmp_path, sub=sub)
    for root in (tmp_path, folder):
        assert load_dataset("market1501", root).root == folder


def test_root_not_found_lists_paths_tried(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("market1501", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "Market-1501-v15.09.15") in msg
    assert str(tmp_path / "market1501" / "Market-1501-v15.09.15") in msg
    with pytest.raises(DatasetError, match="root folder not found"):
        load_dataset("market1501", tmp_path / "nowhere")


def test_extensions_hidden_and_other_files(tmp_path):
    folder = fake.write_split(
        tmp_path / "imgs", ["0001_c1_a.JPG", "0002_c2_b.jpeg", "0003_c1_c.png", "._0001_c1_a.JPG"]
    )
    (folder / "Thumbs.db").write_bytes(b"x")
    (folder / "readme.txt").write_text("not an image")
    (folder / "0004_c1_sub.jpg").mkdir()  # a folder is not an image
    items = read_market_folder(folder, max_pid=10, num_cameras=2)
    assert names(items) == ["0001_c1_a.JPG", "0002_c2_b.jpeg", "0003_c1_c.png"]


def test_nine_cameras_for_the_synthetic_layout(tmp_path):
    train = [(1, 9), (2, 1)]
    folder = fake.build_market_layout(tmp_path / "synth", train, [(3, 9)], [(3, 8)], name=fake.duke_name)
    ds = load_market_style("synth", folder, max_pid=100, num_cameras=9)
    assert cams(ds.train) == [0, 8] and cams(ds.gallery) == [7]
    with pytest.raises(DatasetError, match=r"c9 is out of range c1\.\.c8"):
        load_market_style("synth", folder, max_pid=100, num_cameras=8)


def test_no_relabel_option(tmp_path):
    folder = fake.build_market(tmp_path)
    ds = load_market_style("m", folder, max_pid=1501, num_cameras=6, relabel_train=False)
    assert pids(ds.train) == [2, 5, 7] and "train_pids" not in ds.extra


# ----------------------------------------------------------------------------- Market errors


def test_missing_split_folder(tmp_path):
    folder = fake.build_market(tmp_path)
    for f in (folder / "query").iterdir():
        f.unlink()
    (folder / "query").rmdir()
    with pytest.raises(DatasetError, match=str(folder / "query") + ": folder not found"):
        load_dataset("market1501", tmp_path)


def test_unparsable_file_name(tmp_path):
    folder = fake.build_market(tmp_path)
    bad = fake.write_image(folder / "bounding_box_test" / "person12_cam3.jpg")
    with pytest.raises(DatasetError, match=str(bad)):
        load_dataset("market1501", folder)


def test_non_integer_pid(tmp_path):
    folder = fake.build_market(tmp_path)
    bad = fake.write_image(folder / "query" / "1-2_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match=f"{bad}: pid '1-2'"):
        load_dataset("market1501", folder)


@pytest.mark.parametrize("content", [[], ["-1_c1s1_000001_00.jpg"]], ids=["empty", "junk-only"])
def test_empty_split(tmp_path, content):
    folder = fake.build_market(tmp_path)
    query = folder / "query"
    for f in query.iterdir():
        f.unlink()
    fake.write_split(query, content)
    with pytest.raises(DatasetError, match=f"{query}: no usable image"):
        load_dataset("market1501", folder)


def test_camera_out_of_range(tmp_path):
    folder = fake.build_market(tmp_path)
    bad = fake.write_image(folder / "bounding_box_train" / fake.market_name(2, 7, 1))
    with pytest.raises(DatasetError, match=f"{bad}: camera c7 is out of range"):
        load_dataset("market1501", folder)
    bad.unlink()
    bad = fake.write_image(folder / "bounding_box_train" / fake.market_name(2, 0, 1))
    with pytest.raises(DatasetError, match="camera c0 is out of range"):
        load_dataset("market1501", folder)


def test_pid_out_of_range(tmp_path):
    folder = fake.build_market(tmp_path)
    bad = fake.write_image(folder / "bounding_box_test" / fake.market_name(1502, 1, 1))
    with pytest.raises(DatasetError, match=f"{bad}: pid 1502 is out of range"):
        load_dataset("market1501", folder)
    bad.unlink()
    bad = fake.write_image(folder / "bounding_box_test" / "-2_c1s1_000001_00.jpg")
    with pytest.raises(DatasetError, match="pid -2 is out of range"):
        load_dataset("market1501", folder)


def test_distractor_in_train_is_an_error(tmp_path):
    folder = fake.build_market(tmp_path)
    bad = fake.write_image(folder / "bounding_box_train" / fake.market_name(0, 1, 1))
    with pytest.raises(DatasetError, match=f"{bad}: distractor pid 0"):
        load_dataset("market1501", folder)


def test_dataset_error_is_a_user_error():
    assert issubclass(DatasetError, UserError)


# ----------------------------------------------------------------------------- Duke family


@pytest.mark.parametrize("sub", ["DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID"])
def test_dukemtmc(tmp_path, sub):
    folder = fake.build_duke(tmp_path, sub=sub)
    ds = load_dataset("dukemtmc", tmp_path)
    assert ds.root == folder
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5, 2, 4)
    assert pids(ds.train) == [0, 1, 2] and ds.extra["train_pids"] == [1, 12, 30]
    assert pids(ds.gallery) == [40, 41, 5000]
    assert cams(ds.train) == [0, 1, 2, 4, 7]
    assert load_dataset("dukemtmc", folder).train == ds.train


def test_occluded_duke(tmp_path):
    fake.build_duke(tmp_path)  # a sibling must not be picked up
    folder = fake.build_occluded_duke(tmp_path)
    ds = load_dataset("occluded_duke", tmp_path)
    assert ds.root == folder and ds.name == "occluded_duke"
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5, 2, 3)
    assert len(load_dataset("dukemtmc", tmp_path).gallery) == 4
    with pytest.raises(DatasetError, match="Occluded_Duke"):
        load_dataset("occluded_duke", tmp_path / "DukeMTMC-reID" / "query")


# ----------------------------------------------------------------------------- MSMT17


@pytest.mark.parametrize("version", ["V1", "V2"])
def test_msmt17_versions(tmp_path, version):
    folder = fake.build_msmt17(tmp_path, version)
    ds = load_dataset("msmt17", tmp_path)
    assert ds.root == folder and ds.extra["version"] == version
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5, 2, 4)
    assert pids(ds.train) == [0, 1, 2] and pids(ds.query) == [0, 1] and pids(ds.gallery) == [0, 1, 2]
    assert cams(ds.train) == [0, 2, 3, 14] and cams(ds.gallery) == [1, 5, 6, 10]
    image_dir = "train" if version == "V1" else "mask_train_v2"
    assert all(Path(p).is_relative_to(folder / image_dir) for p, _, _ in ds.train)
    assert ds.extra["test_ids_separate"] is True


def test_msmt17_combine_val_and_nested_root(tmp_path):
    folder = fake.build_msmt17(tmp_path, "V2", sub="msmt17/MSMT17_V2")
    ds = load_dataset("msmt17", tmp_path, combine_val=True)
    assert ds.root == folder and len(ds.train) == len(fake.MSMT_TRAIN) + len(fake.MSMT_VAL)
    assert cams(ds.train) == [0, 2, 3, 8, 9, 14]
    assert len(load_dataset("msmt17", folder).train) == len(fake.MSMT_TRAIN)
    with pytest.raises(DatasetError, match="combine_val"):
        load_dataset("msmt17", folder, combine_val="yes")


def test_msmt17_v1_checked_first(tmp_path):
    fake.build_msmt17(tmp_path, "V2")
    v1 = fake.build_msmt17(tmp_path, "V1")
    assert load_dataset("msmt17", tmp_path).root == v1


@pytest.mark.parametrize(
    "line, message",
    [
        ("0000/0000_000_01_0303morning_0000_0.jpg", "expected '<folder>/<file>.jpg <pid>'"),
        ("0000/0000_000_01_0303morning_0000_0.jpg zero", "pid 'zero' is not an integer"),
        ("0000/0000_000_01_0303morning_0000_0.jpg -3", "pid -3 is negative"),
        ("0000/0000_000.jpg 0", "cannot read the camera"),
        ("0000/0000_000_16_0303morning_0000_0.jpg 0", "camera 16 is out of range"),
        ("0000/0000_999_01_0303morning_0000_0.jpg 0", "image .* not found"),
    ],
    ids=["one-field", "pid-text", "pid-negative", "no-camera", "camera-range", "missing-image"],
)
def test_msmt17_bad_list_line(tmp_path, line, message):
    folder = fake.build_msmt17(tmp_path)
    list_file = folder / "list_query.txt"
    list_file.write_text(list_file.read_text() + "\n" + line + "\n")  # blank line 3 is skipped
    with pytest.raises(DatasetError, match=f"{list_file}, line 4: {message}"):
        load_dataset("msmt17", folder)


def test_msmt17_missing_or_empty_list(tmp_path):
    folder = fake.build_msmt17(tmp_path)
    (folder / "list_val.txt").unlink()
    load_dataset("msmt17", folder)  # list_val is only needed with combine_val
    with pytest.raises(DatasetError, match=f"{folder / 'list_val.txt'}: list file not found"):
        load_dataset("msmt17", folder, combine_val=True)
    (folder / "list_gallery.txt").write_text("\n")
    with pytest.raises(DatasetError, match="list_gallery.txt: list file is empty"):
        load_dataset("msmt17", folder)


def test_msmt17_missing_test_folder(tmp_path):
    folder = fake.build_msmt17(tmp_path)
    (folder / "test").rename(folder / "elsewhere")
    with pytest.raises(DatasetError, match=f"{folder / 'test'}: folder not found"):
        load_dataset("msmt17", folder)


# ----------------------------------------------------------------------------- CUHK03-NP images


@pytest.mark.parametrize("variant", ["labeled", "detected"])
@pytest.mark.parametrize("sub", ["cuhk03-np", "cuhk03/cuhk03-np"])
def test_cuhk03_np_images(tmp_path, variant, sub):
    folder = fake.build_cuhk03_np(tmp_path, sub=sub)
    ds = load_dataset("cuhk03", tmp_path, variant=variant)
    spec = fake.CUHK_NP[variant]
    assert ds.root == folder / variant
    assert ds.extra["form"] == "np-images" and ds.extra["variant"] == variant
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == tuple(len(spec[s]) for s in ("train", "query", "gallery"))
    assert pids(ds.train) == list(range(len({p for p, _ in spec["train"]})))
    assert pids(ds.query) == [20] and cams(ds.query) == [0, 1]
    assert load_dataset("cuhk03", folder, variant=variant).train == ds.train


def test_cuhk03_default_variant_is_labeled(tmp_path):
    fake.build_cuhk03_np(tmp_path)
    assert load_dataset("cuhk03", tmp_path).extra["variant"] == "labeled"


def test_cuhk03_np_camera_range(tmp_path):
    folder = fake.build_cuhk03_np(tmp_path, variants=("labeled",))
    fake.write_image(folder / "labeled" / "query" / fake.cuhk_np_name(20, 3, 9))
    with pytest.raises(DatasetError, match="c3 is out of range c1..c2"):
        load_dataset("cuhk03", tmp_path)


def test_cuhk03_bad_variant_and_missing_variant(tmp_path):
    fake.build_cuhk03_np(tmp_path, variants=("labeled",))
    with pytest.raises(DatasetError, match="variant must be one of labeled, detected"):
        load_dataset("cuhk03", tmp_path, variant="Labeled")
    with pytest.raises(DatasetError) as err:
        load_dataset("cuhk03", tmp_path, variant="detected")
    assert str(tmp_path / "cuhk03-np" / "detected") in str(err.value)
    assert str(tmp_path / "cuhk03" / "cuhk03_release" / "cuhk-03.mat") in str(err.value)


# ----------------------------------------------------------------------------- CUHK03 original .mat


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_cuhk03_mat_extract_and_protocol(tmp_path, variant):
    folder = fake.build_cuhk03_mat(tmp_path)
    ds = load_dataset("cuhk03", tmp_path, variant=variant)
    images = folder / f"images_{variant}"
    assert ds.root == folder and ds.extra["form"] == "mat" and ds.extra["variant"] == variant
    expected = fake.cuhk_mat_names(variant)
    assert sorted(os.listdir(images)) == sorted(n for n, _, _ in expected)
    # the image round trip: HxWx3, not transposed, same pixels
    pixels = np.asarray(Image.open(images / "2_002_2_10.png"))
    assert pixels.shape == (8, 4, 3) and tuple(pixels[0, 0]) == (2, 2, 9)
    # train: labels 1 and 4 relabelled to 0 and 1; test labels kept
    n_train = sum(label in fake.CUHK_MAT_TRAIN_LABELS for _, label, _ in expected)
    assert len(ds.train) == n_train and pids(ds.train) == [0, 1] and ds.extra["train_pids"] == [1, 4]
    assert pids(ds.query) == [2, 3, 5] and len(ds.query) == 6  # one image per view per test id
    assert len(ds.query) + len(ds.gallery) + len(ds.train) == len(expected)
    assert pids(ds.gallery) == [2, 3, 5]
    for path, _, cam in ds.train + ds.query + ds.gallery:
        assert cam == int(Path(path).name.split("_")[2]) - 1
    assert all(Path(p).parent == images for p, _, _ in ds.gallery)


def test_cuhk03_mat_reuses_extracted_images(tmp_path, monkeypatch):
    fake.build_cuhk03_mat(tmp_path)
    first = load_dataset("cuhk03", tmp_path)

    def no_writes(*args):
        raise AssertionError("images extracted twice")

    monkeypatch.setattr(cuhk03_module, "_write_png", no_writes)
    assert load_dataset("cuhk03", tmp_path) == first


def test_cuhk03_mat_interrupted_extraction_leaves_nothing(tmp_path, monkeypatch):
    folder = fake.build_cuhk03_mat(tmp_path)
    real = cuhk03_module._write_png
    written = []

    def write_then_die(image, path):
        if len(written) == 3:
            raise KeyboardInterrupt  # like a Ctrl-C midway
        real(image, path)
        written.append(path)

    monkeypatch.setattr(cuhk03_module, "_write_png", write_then_die)
    before = sorted(os.listdir(folder))
    with pytest.raises(KeyboardInterrupt):
        load_dataset("cuhk03", tmp_path)
    assert len(written) == 3 and all(not p.exists() for p in written)
    assert sorted(os.listdir(folder)) == before  # no images_labeled, no temp folder
    monkeypatch.setattr(cuhk03_module, "_write_png", real)
    ds = load_dataset("cuhk03", tmp_path)
    assert len(os.listdir(folder / "images_labeled")) == len(fake.cuhk_mat_names("labeled"))
    assert len(ds.train) + len(ds.query) + len(ds.gallery) == len(fake.cuhk_mat_names("labeled"))


def test_cuhk03_missing_protocol(tmp_path):
    folder = fake.build_cuhk03_mat(tmp_path, protocols=("labeled",))
    expected = folder / "cuhk03_new_protocol_config_detected.mat"
    with pytest.raises(DatasetError, match=f"{expected}: CUHK03 new-protocol file not found"):
        load_dataset("cuhk03", tmp_path, variant="detected")
    assert not (folder / "images_detected").exists()  # nothing extracted for nothing


def test_cuhk03_protocol_lists_missing_image(tmp_path):
    folder = fake.build_cuhk03_mat(tmp_path)
    load_dataset("cuhk03", folder)
    (folder / "images_labeled" / "1_003_2_09.png").unlink()
    with pytest.raises(DatasetError, match="lists 1_003_2_09.png, which is not in"):
        load_dataset("cuhk03", folder)


def test_cuhk03_unreadable_protocol(tmp_path):
    folder = fake.build_cuhk03_mat(tmp_path)
    protocol = folder / "cuhk03_new_protocol_config_labeled.mat"
    protocol.write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=f"{protocol}: cannot read"):
        load_dataset("cuhk03", folder)


def test_cuhk03_without_h5py(tmp_path, monkeypatch):
    fake.build_cuhk03_mat(tmp_path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # makes `import h5py` fail
    with pytest.raises(DatasetError, match=r"pip install h5py .*nas-reid\[cuhk03\]"):
        load_dataset("cuhk03", tmp_path)


def test_cuhk03_image_form_preferred_over_mat(tmp_path):
    fake.build_cuhk03_mat(tmp_path)
    fake.build_cuhk03_np(tmp_path)
    assert load_dataset("cuhk03", tmp_path).extra["form"] == "np-images"
    assert not (tmp_path / "cuhk03" / "images_labeled").exists()


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_errors(tmp_path):
    assert {"market1501", "dukemtmc", "msmt17", "cuhk03", "occluded_duke"} <= set(dataset_names())
    with pytest.raises(DatasetError) as err:
        load_dataset("market", tmp_path)
    assert "'market'" in str(err.value) and "market1501, msmt17" in str(err.value)
    with pytest.raises(DatasetError, match="unknown option 'labelled' for dataset 'cuhk03'.*variant"):
        load_dataset("cuhk03", tmp_path, labelled=True)
    with pytest.raises(DatasetError, match="unknown option 'variant' for dataset 'market1501'.*none"):
        load_dataset("market1501", tmp_path, variant="labeled")
    with pytest.raises(DatasetError, match="unknown option 'combine'"):
        official_counts("msmt17", combine=True)
    folder = fake.build_market(tmp_path)
    assert load_dataset("Market1501", folder).name == "market1501"  # case-insensitive


def test_register_custom_dataset(tmp_path):
    folder = fake.build_market_layout(tmp_path / "mine", [(1, 1)], [(2, 1)], [(2, 2)])

    def load_mine(root, num_cameras=6):
        return load_market_style("mine_test", root, max_pid=99, num_cameras=num_cameras)

    register_dataset("mine_test", load_mine)
    register_dataset("mine_test", load_mine)  # same loader again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("mine_test", lambda root: None)
    assert "mine_test" in dataset_names()
    assert len(load_dataset("mine_test", folder, num_cameras=3).gallery) == 1
    assert official_counts("mine_test") is None


def test_official_counts():
    assert official_counts("market1501") == {
        "train": SplitStats(751, 12936, 6),
        "query": SplitStats(750, 3368, 6),
        "gallery": SplitStats(751, 15913, 6),
    }
    assert official_counts("dukemtmc")["gallery"] == SplitStats(1110, 17661, 8)
    assert official_counts("msmt17")["train"] == SplitStats(1041, 30248, 15)
    assert official_counts("msmt17", combine_val=True)["train"] == SplitStats(1041, 32621, 15)
    assert official_counts("msmt17", combine_val=True)["gallery"] == SplitStats(3060, 82161, 15)
    assert official_counts("cuhk03")["gallery"] == SplitStats(700, 5328, 2)
    detected = official_counts("cuhk03", variant="detected")
    assert detected["train"] == SplitStats(767, 7365, 2) and detected["gallery"] == SplitStats(700, 5332, 2)
    assert official_counts("occluded_duke")["query"] == SplitStats(519, 2210, 8)


# ----------------------------------------------------------------------------- check_dataset


def test_check_flags_mismatch_with_official(tmp_path):
    ds = load_dataset("market1501", fake.build_market(tmp_path))
    check = check_dataset(ds, official_counts("market1501"))
    assert not check.ok
    assert all(row.ok is False for row in check.rows)
    assert "train images: found 6, official 12,936" in check.warnings
    assert "gallery cameras: found 5, official 6" in check.warnings
    text = format_check(check)
    assert "train" in text and "6 (12,936)" in text and " NO" in text and "warning(s)" in text


def test_check_clean_dataset_matching_its_counts(tmp_path):
    ds = load_dataset("market1501", fake.build_market(tmp_path))
    official = {split: tuple(vars(ds.stats(split)).values()) for split in ("train", "query", "gallery")}
    check = check_dataset(ds, official)
    assert check.ok and check.warnings == [] and check.unmatched_queries == 0
    assert all(row.ok for row in check.rows) and check.overlap_ids == []
    text = format_check(check)
    assert "no warnings" in text and "yes" in text and "NO" not in text
    lines = text.splitlines()
    assert len({len(line) for line in lines[1:6]}) == 1  # fixed width: header, rule, 3 rows


def test_check_queries_without_cross_camera_match(tmp_path):
    # query ids 3 and 4 appear in the gallery only from the query's own camera; id 5 is fine
    folder = fake.build_market_layout(
        tmp_path / "custom",
        train=[(1, 1), (1, 2)],
        query=[(3, 1), (3, 1), (4, 2), (5, 1)],
        gallery=[(3, 1), (4, 2), (5, 2), (0, 1)],
    )
    ds = load_market_style("custom", folder, max_pid=10, num_cameras=2)
    check = check_dataset(ds)
    assert check.unmatched_queries == 3 and check.unmatched_query_ids == [3, 4]
    [warning] = check.warnings
    assert warning.startswith("3 of 4 query images (2 ids, e.g. 3, 4) have no gallery image")
    assert "no official counts" in format_check(check)
    all_bad = ReIDDataset("x", tmp_path, ds.train, ds.query[:3], ds.gallery)
    assert "no query can be evaluated" in check_dataset(all_bad).warnings[0]


def test_check_train_test_overlap(tmp_path):
    folder = fake.build_market_layout(
        tmp_path / "leaky", train=[(3, 1), (8, 1)], query=[(3, 1)], gallery=[(3, 2), (0, 2)]
    )
    ds = load_market_style("leaky", folder, max_pid=10, num_cameras=2)
    check = check_dataset(ds)
    assert check.overlap_ids == [3]
    assert check.warnings == ["1 id appears in both train and test (e.g. 3)"]


def test_check_overlap_skipped_when_ids_not_comparable(tmp_path):
    ds = load_dataset("msmt17", fake.build_msmt17(tmp_path))  # train and test pids both start at 0
    check = check_dataset(ds)
    assert check.overlap_ids == [] and check.ok
    assert any("overlap not checked" in note for note in check.notes)
    plain = ReIDDataset("plain", tmp_path, ds.train, ds.query, ds.gallery)  # no extra info
    assert check_dataset(plain).overlap_ids == []
