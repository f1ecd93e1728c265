"""A torch ``Dataset`` over ``(path, pid, camid)`` lists: decoded, transformed images."""

from __future__ import annotations

from typing import Callable, Sequence

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DatasetError
from .base import Item


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
