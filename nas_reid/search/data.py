"""The search's data: disjoint weight / held-out identities, resumable PK streams, a quick eval.

Split: the dataset's ``train`` identities are shuffled with a generator seeded by the search
seed and cut in two *disjoint* shares, ``round(heldout_fraction * N)`` held-out identities for
the architecture step and the rest for the weights (each at least P identities), each relabelled
``0..n-1`` in the order of the original pids (the identity-disjoint split of MSINet's Twins
Contrastive Mechanism: Gu et al., "MSINet: Twins Contrastive Search of Multi-Scale Interaction
for Object ReID", CVPR 2023; code vimar-gu/MSINet, ``reid/engine/searcher.py``). Each share is
walked by a resumable :class:`~nas_reid.data.streams.BatchStream`. :func:`query_gallery_split`
splits the held-out images into query and gallery by camera; :func:`quick_eval` ranks them by
cosine distance between ``feat_bn`` features and returns mAP and CMC rank-1/5 as fractions.
Why the shares are disjoint, how the streams roll over and the query rule: docs/search.md,
section `nas_reid.search.data`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from nas_reid.data.base import Item
from nas_reid.data.streams import BatchStream, SeededDataset, plain_loader, train_transform
from nas_reid.errors import UserError
from nas_reid.evaluation import evaluate_features
from nas_reid.evaluation.features import extract

__all__ = ["BatchStream", "HELDOUT_STREAM", "IdentitySplit", "QueryGallery", "SeededDataset",
           "WEIGHT_STREAM", "extract", "plain_loader", "query_gallery_split", "quick_eval",
           "split_identities", "train_transform"]

WEIGHT_STREAM, HELDOUT_STREAM = 0, 1


# ------------------------------------------------------------------------------ the split


@dataclass(frozen=True)
class IdentitySplit:
    """Two disjoint shares of the training identities, each relabelled ``0..n-1``.

    ``weight_pids[j]`` / ``heldout_pids[j]`` is the original (dataset) pid of label ``j``.
    """

    weight: list[Item]
    heldout: list[Item]
    weight_pids: list[int]
    heldout_pids: list[int]

    @property
    def num_weight_ids(self) -> int:
        return len(self.weight_pids)

    @property
    def num_heldout_ids(self) -> int:
        return len(self.heldout_pids)


def split_identities(items: Sequence[Item], heldout_fraction: float, seed: int, *,
                     min_ids: int = 2) -> IdentitySplit:
    """Split ``items`` by identity: ``round(heldout_fraction * N)`` held-out ids, the rest for the
    weights, each share with at least ``min_ids`` identities (:class:`UserError` otherwise)."""
    pids = sorted({int(pid) for _, pid, _ in items})
    n = len(pids)
    if n < 2 * min_ids:
        raise UserError(
            f"the training split has {n} identities; the search needs at least {2 * min_ids} "
            f"(P={min_ids} identities per batch for the weights and P for the held-out share)")
    n_held = min(max(int(round(heldout_fraction * n)), min_ids), n - min_ids)
    order = np.random.default_rng([int(seed), 0x5E1D]).permutation(n)
    held = sorted(pids[i] for i in order[:n_held])
    weight = sorted(set(pids) - set(held))

    def relabel(share: list[int]) -> list[Item]:
        label = {pid: j for j, pid in enumerate(share)}
        return [(path, label[int(pid)], cam) for path, pid, cam in items if int(pid) in label]

    return IdentitySplit(relabel(weight), relabel(held), weight, held)


# ------------------------------------------------------------------------------ quick eval


@dataclass(frozen=True)
class QueryGallery:
    query: list[Item]
    gallery: list[Item]


def query_gallery_split(items: Sequence[Item]) -> QueryGallery:
    """One query per identity per camera where possible, every other image in the gallery.

    Images are taken in list order. A camera's first image of an identity becomes a query if,
    with it taken out, every query of that identity still has a gallery image under another
    camera; otherwise it stays in the gallery.
    """
    by_pid: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (_, pid, cam) in enumerate(items):
        by_pid[int(pid)][int(cam)].append(i)
    query_idx: set[int] = set()
    for pid in sorted(by_pid):
        cams = by_pid[pid]
        chosen: dict[int, int] = {}  # camera -> query image

        def valid(chosen: dict[int, int]) -> bool:
            taken = set(chosen.values())
            return all(any(i not in taken for c, idx in cams.items() if c != qc for i in idx)
                       for qc in chosen)

        for cam in sorted(cams):
            trial = {**chosen, cam: cams[cam][0]}
            if valid(trial):
                chosen = trial
        query_idx.update(chosen.values())
    query = [items[i] for i in range(len(items)) if i in query_idx]
    gallery = [items[i] for i in range(len(items)) if i not in query_idx]
    return QueryGallery(query, gallery)


def quick_eval(model: torch.nn.Module, split: QueryGallery, input_size: tuple[int, int],
               device: torch.device, *, batch_size: int = 128, num_workers: int = 0,
               world: int = 1, rank: int = 0, autocast: torch.dtype | None = None,
               channels_last: bool = False) -> dict[str, float] | None:
    """mAP, R1, R5 (fractions) of ``model``'s ``feat_bn`` on the held-out query/gallery split,
    ``None`` when the split has no query. ``model`` must be in eval mode; every rank returns
    the same figures. ``autocast``, ``channels_last``: as :func:`extract` takes them."""
    if not split.query or not split.gallery:
        return None
    common = dict(batch_size=batch_size, num_workers=num_workers, world=world, rank=rank,
                  autocast=autocast, channels_last=channels_last)
    qf = extract(model, split.query, input_size, "feat_bn", device, **common)
    gf = extract(model, split.gallery, input_size, "feat_bn", device, **common)

    def labels(items, j):
        return torch.tensor([item[j] for item in items])

    result = evaluate_features(qf, gf, labels(split.query, 1), labels(split.gallery, 1),
                               labels(split.query, 2), labels(split.gallery, 2),
                               metric="cosine", max_rank=5)
    cmc = result["cmc"]
    return {"mAP": float(result["mAP"]), "R1": float(cmc[0]), "R5": float(cmc[4]),
            "queries": int(result["num_valid_queries"]), "gallery": len(split.gallery)}
