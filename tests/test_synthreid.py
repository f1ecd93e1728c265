import dataclasses
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from nas_reid.data import synthreid as sr
from nas_reid.data.synthreid import (
    LOCAL_DETAILS,
    SynthConfig,
    ensure_synthreid,
    generate_synthreid,
    make_identities,
    synthreid_cache_dir,
)
from nas_reid.errors import UserError
from nas_reid.viz.contact_sheet import make_contact_sheet, sheet_size

SMALL = dict(ids=12, cameras=3, images_per_id=6, height=64, width=32, seed=3)
FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
MARKET_REGEX = re.compile(r"([-\d]+)_c(\d)")
FULL_NAME = re.compile(r"^(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")


def small(**changes) -> SynthConfig:
    return SynthConfig(**{**SMALL, **changes})


def read_split(root: Path, folder: str) -> list[tuple[str, int, int]]:
    """(name, pid, camera 1-based) of every image, parsed the way the Market toolboxes do."""
    out = []
    for path in sorted((root / folder).iterdir()):
        match = MARKET_REGEX.search(path.name)
        assert match is not None, path.name
        out.append((path.name, int(match.group(1)), int(match.group(2))))
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "synthreid"
    return generate_synthreid(root, small(distractor_fraction=0.2), workers=2, progress=False)


def test_generation_is_byte_identical_whatever_the_number_of_workers(bench, tmp_path):
    again = generate_synthreid(tmp_path / "again", small(distractor_fraction=0.2), workers=1, progress=False)
    reference = tree_bytes(bench)
    assert len(reference) > 12 * 6 + 1  # images, distractors, synthreid.json
    assert tree_bytes(again) == reference
    other_seed = generate_synthreid(tmp_path / "seed4", small(distractor_fraction=0.2, seed=4),
                                    workers=1, progress=False)
    assert tree_bytes(other_seed) != reference


def test_file_names_follow_the_market_pattern(bench):
    train_pids = set(range(1, 7))
    test_pids = set(range(7, 13))
    for folder in FOLDERS:
        for name, pid, cam in read_split(bench, folder):
            full = FULL_NAME.match(name)
            assert full is not None, name
            assert (int(full.group(1)), int(full.group(2))) == (pid, cam)
            assert 1 <= cam <= 3
            with Image.open(bench / folder / name) as img:
                assert img.size == (32, 64) and img.format == "JPEG"
            if folder == "bounding_box_train":
                assert pid in train_pids
            elif folder == "query":
                assert pid in test_pids
            else:
                assert pid in test_pids | {0}
    gallery_pids = {pid for _, pid, _ in read_split(bench, "bounding_box_test")}
    assert 0 in gallery_pids  # distractors
    assert {pid for _, pid, _ in read_split(bench, "bounding_box_train")} == train_pids


def test_counts_in_synthreid_json_match_the_files(bench):
    info = json.loads((bench / "synthreid.json").read_text())
    assert info["generator_version"] == sr.GENERATOR_VERSION
    assert info["config"] == small(distractor_fraction=0.2).to_dict()
    for split, folder in zip(("train", "query", "gallery"), FOLDERS):
        items = read_split(bench, folder)
        counts = info["counts"][split]
        assert counts["images"] == len(items)
        assert counts["ids"] == len({pid for _, pid, _ in items if pid > 0})
        assert counts["cameras"] == len({cam for _, _, cam in items})
        assert counts["distractors"] == sum(pid == 0 for _, pid, _ in items)
    total = sum(info["counts"][s]["images"] for s in ("train", "query", "gallery"))
    assert total == 12 * 6 + info["counts"]["gallery"]["distractors"]


def test_queries_have_cross_camera_gallery_matches_and_at_most_one_per_camera(bench):
    gallery = defaultdict(set)
    for _, pid, cam in read_split(bench, "bounding_box_test"):
        gallery[pid].add(cam)
    seen = set()
    for _, pid, cam in read_split(bench, "query"):
        assert (pid, cam) not in seen, f"two queries of pid {pid} in camera {cam}"
        seen.add((pid, cam))
        assert gallery[pid] - {cam}, f"query of pid {pid} in camera {cam} has no cross-camera match"


def test_every_identity_appears_in_at_least_two_cameras(bench):
    cams = defaultdict(set)
    for folder in FOLDERS:
        for _, pid, cam in read_split(bench, folder):
            cams[pid].add(cam)
    assert all(len(c) >= 2 for pid, c in cams.items() if pid > 0)


def test_hard_negatives_differ_from_their_source_in_exactly_one_local_detail():
    config = SynthConfig(ids=200, hard_negative_fraction=0.3, seed=11)
    identities = {i.pid: i for i in make_identities(config)}
    hard = [i for i in identities.values() if i.source]
    assert len(hard) == 2 * round(0.3 * 100)
    assert len({i.source for i in hard}) == len(hard)  # distinct sources
    for ident in hard:
        source = identities[ident.source]
        assert source.split == ident.split and not source.source
        diff = [f.name for f in dataclasses.fields(ident.spec)
                if getattr(ident.spec, f.name) != getattr(source.spec, f.name)]
        assert diff == [ident.changed], (ident.pid, diff)
        assert ident.changed in LOCAL_DETAILS
    assert {i.changed for i in hard} == set(LOCAL_DETAILS)
    # without hard negatives, no identity is a copy; a larger fraction only adds pairs
    plain = make_identities(dataclasses.replace(config, hard_negative_fraction=0.0))
    assert not any(i.source for i in plain)
    fewer = make_identities(dataclasses.replace(config, hard_negative_fraction=0.1))
    fewer_pairs = {(i.pid, i.source, i.changed) for i in fewer if i.source}
    assert fewer_pairs < {(i.pid, i.source, i.changed) for i in hard}


def test_hard_negatives_are_listed_in_synthreid_json(bench):
    info = json.loads((bench / "synthreid.json").read_text())
    expected = [{"pid": i.pid, "source": i.source, "changed": i.changed}
                for i in make_identities(small(distractor_fraction=0.2)) if i.source]
    assert info["hard_negatives"] == expected and len(expected) == 2


@pytest.mark.parametrize("field,value", [
    ("cameras", 1), ("cameras", 10), ("ids", 3), ("images_per_id", 3), ("height", 8),
    ("train_ids", 11), ("hard_negative_fraction", 0.6), ("occluder_prob", 1.5), ("blur", -1.0),
    ("palette_size", 2), ("seed", -1), ("noise", float("nan")), ("ids", "12"), ("view_bias", 2),
])
def test_validation_errors_name_the_field(field, value, tmp_path):
    config = small(**{field: value})
    with pytest.raises(UserError, match=rf"\b{field}="):
        config.validate()
    with pytest.raises(UserError, match=rf"\b{field}="):
        generate_synthreid(tmp_path / "out", config, workers=1, progress=False)
    assert not any(tmp_path.iterdir())


def test_bad_workers_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="workers"):
        generate_synthreid(tmp_path / "out", small(), workers=0, progress=False)


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    generate_synthreid(out, small(), workers=1, progress=False)  # an empty folder is fine
    (out / "note.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        generate_synthreid(out, small(), workers=1, progress=False)
    assert (out / "note.txt").exists()
    generate_synthreid(out, small(), workers=1, overwrite=True, progress=False)
    assert not (out / "note.txt").exists() and (out / "synthreid.json").exists()


def _failing_renderer(monkeypatch, after: int):
    real = sr.render_image
    calls = {"n": 0}

    def render(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            raise RuntimeError("renderer failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sr, "render_image", render)
    return calls


def test_no_partial_output_when_generation_fails_midway(tmp_path, monkeypatch):
    calls = _failing_renderer(monkeypatch, after=10)
    with pytest.raises(RuntimeError, match="renderer failed"):
        generate_synthreid(tmp_path / "out", small(), workers=1, progress=False)
    assert calls["n"] == 11
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary sibling


def test_failed_overwrite_keeps_the_old_folder(tmp_path, monkeypatch):
    out = generate_synthreid(tmp_path / "out", small(), workers=1, progress=False)
    before = tree_bytes(out)
    _failing_renderer(monkeypatch, after=5)
    with pytest.raises(RuntimeError):
        generate_synthreid(out, small(seed=9), workers=1, overwrite=True, progress=False)
    assert tree_bytes(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_ensure_synthreid_generates_once_then_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_REID_CACHE", str(tmp_path / "cache"))
    config = small()
    path = ensure_synthreid(config, workers=1, progress=False)
    assert path == synthreid_cache_dir(config)
    assert path.parent == tmp_path / "cache" / "synthreid"
    assert (path / "synthreid.json").exists()
    calls = _failing_renderer(monkeypatch, after=0)
    assert ensure_synthreid(small(), workers=1, progress=False) == path
    assert calls["n"] == 0
    # another config is another folder; train_ids=None and its resolved value are the same config
    assert synthreid_cache_dir(small(seed=4)) != path
    assert synthreid_cache_dir(small(train_ids=6)) == path
    assert synthreid_cache_dir(small(blur=1)) == synthreid_cache_dir(small(blur=1.0))


def test_ensure_synthreid_uses_the_winner_of_a_race(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_REID_CACHE", str(tmp_path / "cache"))
    config = small()
    final = synthreid_cache_dir(config)
    real_build = sr._build

    def build_then_lose(root, *args):
        real_build(root, *args)
        shutil.copytree(root, final)  # another process renames its copy first
        (final / "winner").write_text("x")

    monkeypatch.setattr(sr, "_build", build_then_lose)
    assert ensure_synthreid(config, workers=1, progress=False) == final
    assert (final / "winner").exists()
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # our copy was dropped


def test_contact_sheet_has_the_expected_size_and_is_deterministic(bench, tmp_path):
    items = [(str(bench / "bounding_box_train" / name), pid, cam - 1)
             for name, pid, cam in read_split(bench, "bounding_box_train")]
    out = make_contact_sheet(items, tmp_path / "sheet.png", ids=3, per_id=4, cell_height=64, title="train")
    with Image.open(out) as img:
        assert img.size == sheet_size(3, 4, 64, title=True) == (2 + 4 * 34, 18 + 2 + 3 * (64 + 12 + 2))
    again = make_contact_sheet(items, tmp_path / "again.png", ids=3, per_id=4, cell_height=64, title="train")
    assert again.read_bytes() == out.read_bytes()
    # more rows asked than identities: one row per identity
    with Image.open(make_contact_sheet(items, tmp_path / "all.png", ids=50, per_id=2)) as img:
        assert img.size == sheet_size(6, 2, 128, title=False)
    with pytest.raises(UserError, match="per_id"):
        make_contact_sheet(items, tmp_path / "bad.png", per_id=0)
