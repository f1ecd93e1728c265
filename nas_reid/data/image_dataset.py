"""A torch ``Dataset`` over ``(path, pid, camid)`` lists: decoded, transformed images."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DatasetError
from .base import Item


def worker_context(num_workers: int):
    """The multiprocessing context for a DataLoader's ``num_workers`` image-loading processes:
    ``fork`` on Linux, whatever the calling process was started with; None (the default)
    without workers or elsewhere.

    A DataLoader's workers start like their parent by default, so in a process that was itself
    spawned (``ProcessPoolExecutor(mp_context=get_context("spawn"))``, as
    ``bench/ground_truth.py --jobs 2`` runs its retrains) every worker is spawned afresh each
    epoch and imports torch and the package again: ``python bench/loader_start.py`` measures
    what that costs against the same epoch loaded in the parent. Forked workers only read
    images (no CUDA), which is torch's own default on Linux.
    """
    if num_workers <= 0 or not sys.platform.startswith("linux"):
        return None
    return multiprocessing.get_context("fork")


class ImageDataset(Dataset):
    """Returns ``(image, pid, camid, index)``; the image goes through ``transform`` if given."""

    def __init__(self, items: Sequence[Item], transform: Callable | None = None) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, pid, camid = self.items[index]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"cannot read image {path}: {exc}") from None
        if self.transform is not None:
            img = self.transform(img)
        return img, pid, camid, index

    @property
    def pids(self) -> list[int]:
        return [pid for _, pid, _ in self.items]
