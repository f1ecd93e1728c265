"""Dataset parsers: ``load_dataset(name, root, **options)`` returns a :class:`ReIDDataset`."""

from nas_reid.data.base import ReIDDataset
from nas_reid.data.registry import dataset_names, load_dataset, register_dataset, resolve_dataset

__all__ = ["ReIDDataset", "dataset_names", "load_dataset", "register_dataset", "resolve_dataset"]
