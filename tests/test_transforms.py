import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nas_reid.data.image_dataset import ImageDataset
from nas_reid.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from nas_reid.errors import DatasetError, UserError


def _image(h=40, w=20, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_test_pipeline_resizes_and_normalises():
    img = _image()
    out = build_transforms(32, 16, train=False)(img)
    assert out.shape == (3, 32, 16) and out.dtype == torch.float32
    ref = torch.from_numpy(np.array(img.resize((16, 32), Image.BILINEAR))).permute(2, 0, 1) / 255
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    # antialiased resize vs PIL bilinear differ slightly; the normalisation must be right
    assert torch.allclose(out * std + mean, ref, atol=0.12)


def test_train_pipeline_flip_only_equals_flipped_test_image():
    img = _image()
    flip = build_transforms(32, 16, train=True, flip_p=1.0, pad=0, erasing_p=0.0)(img)
    plain = build_transforms(32, 16, train=False)(img)
    assert torch.allclose(flip, plain.flip(-1))


def test_random_erasing_fills_with_the_mean_colour():
    torch.manual_seed(0)
    img = Image.new("RGB", (64, 128), (255, 255, 255))
    out = build_transforms(128, 64, train=True, flip_p=0.0, pad=0, erasing_p=1.0)(img)
    erased = (out == 0).all(dim=0)
    assert 0.02 * 128 * 64 * 0.9 <= erased.sum() <= 0.4 * 128 * 64 * 1.1


def test_pad_and_crop_keeps_size_and_shifts_content():
    torch.manual_seed(1)
    img = _image(32, 16)
    outs = [build_transforms(32, 16, train=True, flip_p=0.0, erasing_p=0.0)(img) for _ in range(8)]
    assert all(o.shape == (3, 32, 16) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_bad_parameters():
    with pytest.raises(UserError):
        build_transforms(0, 16, train=False)
    with pytest.raises(UserError):
        build_transforms(32, 16, train=True, flip_p=1.5)


def test_image_dataset_reads_and_names_a_broken_file(tmp_path):
    good = tmp_path / "0001_c1s1_000001_00.jpg"
    _image().save(good)
    bad = tmp_path / "0002_c1s1_000001_00.jpg"
    bad.write_bytes(b"not an image")
    ds = ImageDataset([(str(good), 0, 0), (str(bad), 1, 0)], build_transforms(32, 16, train=False))
    img, pid, cam, idx = ds[0]
    assert img.shape == (3, 32, 16) and (pid, cam, idx) == (0, 0, 0)
    with pytest.raises(DatasetError, match="0002_c1s1_000001_00.jpg"):
        ds[1]


def _four_images(folder: Path) -> list:
    """Two identities x two cameras, as (path, pid, camid) items."""
    items = []
    for pid in range(2):
        for i in range(2):
            path = folder / f"{pid + 1:04d}_c{i + 1}s1_000001_00.jpg"
            _image().save(path)
            items.append((str(path), pid, i))
    return items


@pytest.mark.parametrize("loader", ["plain", "stream"])
def test_a_broken_file_read_in_a_worker_process_is_one_line_naming_it(tmp_path, loader):
    from nas_reid.data.streams import BatchStream, plain_loader

    items = _four_images(tmp_path)
    bad = Path(items[1][0])
    bad.write_bytes(b"")  # zero bytes
    if loader == "plain":
        batches = plain_loader(items, (32, 16), batch_size=4, num_workers=1)
    else:
        batches = BatchStream(items, (32, 16), p=2, k=2, seed=0, stream=0,
                              num_workers=1).epoch_batches(0)
    with pytest.raises(DatasetError) as caught:
        list(batches)
    message = str(caught.value)
    assert message.startswith(f"cannot read image {bad}") and "\n" not in message
    assert "Traceback" not in message and "worker" not in message


def _loader_start_methods(items: list) -> list:
    """In a spawned process: each loader's worker start method, and one batch's shape from it."""
    from nas_reid.data.streams import BatchStream, plain_loader

    loaders = [plain_loader(items, (32, 16), batch_size=4, num_workers=1),
               BatchStream(items, (32, 16), p=2, k=2, seed=0, stream=0, num_workers=1).loader]
    return [(loader.multiprocessing_context.get_start_method(), tuple(next(iter(loader))[0].shape))
            for loader in loaders]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork is the workers' start on Linux only")
def test_loaders_in_a_spawned_process_fork_their_workers(tmp_path):
    # A spawned parent (bench/ground_truth.py --jobs 2) would otherwise spawn every worker anew
    # each epoch, re-importing torch: 3.7x the epoch's time measured by bench/loader_start.py.
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from nas_reid.data.image_dataset import worker_context

    assert worker_context(0) is None and worker_context(2).get_start_method() == "fork"
    items = _four_images(tmp_path)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        got = pool.submit(_loader_start_methods, items).result()
    assert got == [("fork", (4, 3, 32, 16)), ("fork", (4, 3, 32, 16))]
