"""synthreid-pretrain: a pretraining set whose people never appear in synthreid.

:data:`PRETRAIN_CONFIG` is a synthreid config with another seed (other people, other cameras and
backgrounds), more people (640 for training, 60 held out for a retrieval check) and the full
clothing palette: the analogue of pretraining on another re-ID dataset, not of ImageNet (same
rendering style, disjoint identities). Why: docs/data.md, section `nas_reid.data.pretrain_set`.

- Disjoint: no look (:func:`~nas_reid.data.synthreid.appearance_key`: every discrete attribute of
  a person) of the pretraining set is a look of the benchmark's train, query, gallery or
  distractors; :func:`check_disjoint` proves it for the two configs before any image is used.
- Deterministic and cached: generated once into ``$NAS_REID_CACHE/synthreid/<config hash>``
  like the benchmark (:func:`~nas_reid.data.synthreid.ensure_synthreid`).
- Hash-checked: every use recomputes the SHA-256 of the images and compares it with the one the
  manifest recorded when they were rendered; a modified set is rendered again.

``load_dataset("synthreid_pretrain", None)`` reads it (``root`` may name a folder written by
``nas-reid data synth`` with this config).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from nas_reid.data.base import ReIDDataset
from nas_reid.data.synthreid import (INFO_FILE, SynthConfig, appearance_keys, content_digest,
                                     ensure_synthreid)
from nas_reid.errors import DatasetError

PRETRAIN_CONFIG = SynthConfig(seed=1, ids=700, train_ids=640, cameras=8, images_per_id=8,
                              palette_size=16)
"""The default pretraining set: 640 training identities x 8 images (5,120), 60 held out."""

DATASET_NAME = "synthreid_pretrain"


def check_disjoint(pretrain: SynthConfig, benchmark: SynthConfig | None = None) -> None:
    """Raise :class:`DatasetError` if a look of ``pretrain`` is also one of ``benchmark``'s."""
    benchmark = benchmark or SynthConfig()
    mine, theirs = appearance_keys(pretrain), appearance_keys(benchmark)
    shared = sorted(set(mine) & set(theirs), key=str)
    if shared:
        key = shared[0]
        raise DatasetError(
            f"pretraining set (seed {pretrain.seed}) is not disjoint from the benchmark (seed "
            f"{benchmark.seed}): {len(shared)} shared look(s), e.g. its {mine[key]} is the "
            f"benchmark's {theirs[key]}; choose another seed")


def _digest_ok(root: Path) -> bool:
    try:
        recorded = json.loads((root / INFO_FILE).read_text()).get("content_sha256")
    except (OSError, ValueError):
        return False
    return bool(recorded) and recorded == content_digest(root)


def ensure_pretrain_set(config: SynthConfig | None = None, *, benchmark: SynthConfig | None = None,
                        progress: bool = True) -> Path:
    """The cached pretraining set for ``config`` (default :data:`PRETRAIN_CONFIG`), checked
    disjoint from ``benchmark`` (default synthreid's) and against its recorded image hash;
    rendered (again) when missing or modified."""
    config = (config or PRETRAIN_CONFIG).validate()
    check_disjoint(config, benchmark)
    root = ensure_synthreid(config, progress=progress)
    if not _digest_ok(root):
        shutil.rmtree(root, ignore_errors=True)
        root = ensure_synthreid(config, progress=progress)
        if not _digest_ok(root):
            raise DatasetError(f"pretraining set {root}: its images do not match the hash its "
                               "manifest recorded, even after rendering it again")
    return root


def load_synthreid_pretrain(root: str | os.PathLike | None = None) -> ReIDDataset:
    """The pretraining set at ``root``, or the cached default one when ``root`` is None."""
    from nas_reid.data.synthreid_dataset import load_synthreid

    if root is None:
        root = ensure_pretrain_set(progress=sys.stderr.isatty())
    ds = load_synthreid(root)
    ds.name = DATASET_NAME
    return ds
