"""Dataset names -> loaders, plus the official split sizes used by ``nas-reid data check``.

A loader is ``loader(root, **options) -> ReIDDataset``; its keyword parameters are the options
the dataset accepts. Other code adds datasets with :func:`register_dataset` (e.g. the synthetic
benchmark). Official counts are what the standard loaders produce: the docstrings of torchreid's
``market1501.py``, ``dukemtmcreid.py`` and ``msmt17.py`` (KaiyangZhou/deep-person-reid,
``torchreid/data/datasets/image/``), the CUHK03-NP split (zhunzhong07/person-re-ranking,
``CUHK03-NP/README.md``) and the Occluded-Duke name lists, counted
(lightas/ICCV19_Pose_Guided_Occluded_Person_ReID, ``dataset/Occluded_Duke/*.list``); a dataset
may have none.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

from nas_reid.data.base import SPLITS, ReIDDataset, SplitStats
from nas_reid.data.cuhk03 import VARIANTS, load_cuhk03
from nas_reid.data.dukemtmc import load_dukemtmc
from nas_reid.data.market1501 import load_market1501
from nas_reid.data.msmt17 import load_msmt17
from nas_reid.data.occluded_duke import load_occluded_duke
from nas_reid.data.pretrain_set import load_synthreid_pretrain
from nas_reid.data.synthreid_dataset import load_synthreid
from nas_reid.errors import DatasetError, UserError

BUILT_IN = ("synthreid", "synthreid_pretrain")
"""Datasets generated on first use: ``root`` is optional."""

Loader = Callable[..., ReIDDataset]
Counts = Mapping[str, Union[SplitStats, tuple]]
"""split -> ``SplitStats`` or an ``(ids, images, cameras)`` tuple."""
CountsSpec = Union[Counts, Callable[..., Union[Counts, None]], None]


@dataclass(frozen=True)
class _Entry:
    loader: Loader
    counts: CountsSpec
    options: frozenset[str] | None  # None: the loader takes **kwargs


_REGISTRY: dict[str, _Entry] = {}


def _loader_options(loader: Loader) -> frozenset[str] | None:
    params = list(inspect.signature(loader).parameters.values())[1:]  # skip root
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(
        p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def register_dataset(
    name: str, loader: Loader, official_counts: CountsSpec = None, *, replace: bool = False
) -> None:
    """Register ``loader`` under ``name`` (lower case).

    ``official_counts`` is a mapping split -> (ids, images, cameras), or a callable taking the
    dataset options and returning one (or None). Registering a different loader under a taken
    name raises ``ValueError`` unless ``replace``; registering the same loader again is a no-op.
    """
    key = name.lower()
    old = _REGISTRY.get(key)
    if old is not None and old.loader is not loader and not replace:
        raise ValueError(f"dataset {key!r} is already registered")
    _REGISTRY[key] = _Entry(loader, official_counts, _loader_options(loader))


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str, options: Mapping) -> _Entry:
    entry = _REGISTRY.get(str(name).lower())
    if entry is None:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(dataset_names())}")
    if entry.options is not None:
        unknown = sorted(set(options) - entry.options)
        if unknown:
            accepted = ", ".join(sorted(entry.options)) or "none"
            raise DatasetError(
                f"unknown option {unknown[0]!r} for dataset {name!r}; accepted options: {accepted}"
            )
    return entry


def load_dataset(name: str, root: str | os.PathLike, **options) -> ReIDDataset:
    """Load dataset ``name`` from ``root`` with its ``options``."""
    return _entry(name, options).loader(root, **options)


def resolve_dataset(data: ReIDDataset | str | None, root: str | os.PathLike | None,
                    saved: Mapping[str, Any] | None = None) -> ReIDDataset:
    """The dataset a training command runs on: ``data`` itself when it is a
    :class:`ReIDDataset`; else the dataset named (``--root`` required but for ``synthreid``);
    when no name is given, the ``{"name", "root"}`` a resumed run ``saved``, else ``synthreid``."""
    if isinstance(data, ReIDDataset):
        return data
    if data is None:
        if saved is not None:
            return load_dataset(saved["name"], saved["root"])
        data = "synthreid"
    if root is None and data not in BUILT_IN:
        raise UserError(f"--root is required for --data {data}")
    return load_dataset(data, root)


def official_counts(name: str, **options) -> dict[str, SplitStats] | None:
    """Official (ids, images, cameras) per split for ``name`` with ``options``, or None if unknown."""
    counts = _entry(name, options).counts
    if callable(counts):
        accepted = inspect.signature(counts).parameters
        counts = counts(**{k: v for k, v in options.items() if k in accepted})
    if counts is None:
        return None
    return {split: SplitStats(*counts[split]) for split in SPLITS if split in counts}


def _msmt17_counts(combine_val: bool = False) -> Counts:
    return {
        "train": (1041, 32621 if combine_val else 30248, 15),
        "query": (3060, 11659, 15),
        "gallery": (3060, 82161, 15),
    }


def _cuhk03_counts(variant: str = "labeled") -> Counts:
    if variant not in VARIANTS:
        raise DatasetError(f"cuhk03 option variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    train, gallery = {"labeled": (7368, 5328), "detected": (7365, 5332)}[variant]
    return {"train": (767, train, 2), "query": (700, 1400, 2), "gallery": (700, gallery, 2)}


register_dataset(
    "market1501",
    load_market1501,
    {"train": (751, 12936, 6), "query": (750, 3368, 6), "gallery": (751, 15913, 6)},
)
register_dataset(
    "dukemtmc",
    load_dukemtmc,
    {"train": (702, 16522, 8), "query": (702, 2228, 8), "gallery": (1110, 17661, 8)},
)
register_dataset("msmt17", load_msmt17, _msmt17_counts)
register_dataset("cuhk03", load_cuhk03, _cuhk03_counts)
register_dataset(
    "occluded_duke",
    load_occluded_duke,
    {"train": (702, 15618, 8), "query": (519, 2210, 8), "gallery": (1110, 17661, 8)},
)
register_dataset("synthreid", load_synthreid)
register_dataset("synthreid_pretrain", load_synthreid_pretrain)
