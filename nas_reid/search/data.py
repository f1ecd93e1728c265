"""The search's data: disjoint weight / held-out identities, resumable PK streams, a quick eval.

Split. The training identities of a dataset (its ``train`` split only; query and gallery are
left for the retrained model) are shuffled with a generator seeded by the search seed and cut
in two *disjoint* shares: ``round(heldout_fraction * N)`` held-out identities for the
architecture step, the rest for the weights (each share at least P identities, so a PK batch
fits). Each share is relabelled ``0..n-1`` in the order of the original pids. The weights never
see a held-out identity, so the architecture is chosen by how well it serves identities it
was not trained on (MSINet's identity-disjoint split; nas.md section 3).

Augmentation that does not depend on the loader. The training transform of image ``i`` in
epoch ``e`` of a stream runs under a torch generator state seeded from ``(seed, stream, e, i)``
(:class:`SeededDataset`), inside :func:`torch.random.fork_rng` so the global RNG (which the
Gumbel sampling draws from) is left untouched. The augmented batch is therefore the same with
or without worker processes, and a resumed run sees exactly the images the interrupted one
would have seen. Each loader also gets its own ``torch.Generator``, so creating an iterator
does not draw from the global RNG either.

Streams. :class:`BatchStream` walks one PK sampler epoch after epoch and knows its position
``(epoch, batch)``; the weight stream is walked epoch by epoch by the loop, the held-out stream
hands out one batch per architecture step and rolls over into its next epoch when it runs out
(the held-out share may have more or fewer batches than the weight share).

Quick eval. The held-out images are split into query and gallery by camera
(:func:`query_gallery_split`): for every identity, the first image seen under each camera is a
query, where possible (a query needs a gallery image of its identity under another camera, the
Market protocol ignoring same-camera matches), and all the other images are gallery.
:func:`quick_eval` ranks them by cosine distance between ``feat_bn`` features (the retrieval
feature of the BNNeck) and returns mAP and CMC rank-1/5 as fractions.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset

from nas_reid.data.base import Item
from nas_reid.data.image_dataset import ImageDataset
from nas_reid.data.sampler import PKBatchSampler
from nas_reid.data.transforms import build_transforms
from nas_reid.errors import UserError
from nas_reid.evaluation import evaluate_features

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


# ------------------------------------------------------------------------------ datasets


def _augment_seed(seed: int, stream: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), stream, int(epoch), int(index)]).generate_state(1)[0])


class SeededDataset(Dataset):
    """An :class:`ImageDataset` whose random transform of item ``i`` in epoch ``epoch`` is a pure
    function of ``(seed, stream, epoch, i)``; set :attr:`epoch` before iterating."""

    def __init__(self, items: Sequence[Item], transform: Callable, seed: int, stream: int) -> None:
        self.images = ImageDataset(items, None)
        self.transform = transform
        self.seed, self.stream = int(seed), int(stream)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img, pid, camid, index = self.images[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_augment_seed(self.seed, self.stream, self.epoch, index))
            img = self.transform(img)
        return img, pid, camid, index

    @property
    def pids(self) -> list[int]:
        return self.images.pids


def train_transform(height: int, width: int):
    """The re-ID training pipeline, its padding scaled with the input (10 px at 256 high)."""
    return build_transforms(height, width, train=True, pad=max(1, round(10 * height / 256)))


class BatchStream:
    """PK batches of one share, epoch after epoch, with a resumable position ``(epoch, batch)``.

    ``batch`` counts the batches this rank has consumed in ``epoch``.
    """

    def __init__(self, items: Sequence[Item], input_size: tuple[int, int], *, p: int, k: int,
                 seed: int, stream: int, num_replicas: int = 1, rank: int = 0,
                 num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = SeededDataset(items, train_transform(*input_size), seed, stream)
        self.sampler = PKBatchSampler(self.dataset.pids, p, k, seed=int(seed) * 2 + stream,
                                      num_replicas=num_replicas, rank=rank)
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 pin_memory=pin_memory, generator=torch.Generator().manual_seed(int(seed)))
        self.epoch = 0
        self.batch = 0
        self._iter: Iterator | None = None

    def batches_in(self, epoch: int) -> int:
        """How many batches this rank gets in ``epoch``."""
        self.sampler.set_epoch(epoch, 0)
        return len(self.sampler)

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator:
        """The batches of ``epoch`` from this rank's batch ``start`` on; tracks the position."""
        self.epoch, self.batch = int(epoch), int(start)
        self._iter = None
        self.dataset.epoch = self.epoch
        self.sampler.set_epoch(self.epoch, self.batch)
        for batch in self.loader:
            self.batch += 1
            yield batch

    def next(self):
        """The next batch, rolling over into the next epoch at the end of one."""
        for _ in range(2):
            if self._iter is None:
                self.dataset.epoch = self.epoch
                self.sampler.set_epoch(self.epoch, self.batch)
                self._iter = iter(self.loader)
            try:
                batch = next(self._iter)
            except StopIteration:
                self.epoch, self.batch, self._iter = self.epoch + 1, 0, None
                continue
            self.batch += 1
            return batch
        raise UserError("a PK sampler produced an empty epoch; the share has too few identities")

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self._iter = int(state["epoch"]), int(state["batch"]), None


# ------------------------------------------------------------------------------ features


def plain_loader(items: Sequence[Item], input_size: tuple[int, int], *, batch_size: int,
                 num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Test-transform images in dataset order (for feature extraction and the RIB clusters)."""
    dataset = ImageDataset(items, build_transforms(*input_size, train=False))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def extract(model: torch.nn.Module, items: Sequence[Item], input_size: tuple[int, int], key: str,
            device: torch.device, *, batch_size: int = 128, num_workers: int = 0,
            world: int = 1, rank: int = 0) -> torch.Tensor:
    """``model(x)[key]`` for every item in order, as a float32 (N, D) tensor on ``device``.

    ``model`` must be in eval mode. With ``world > 1`` each rank extracts every ``world``-th
    item and the shards are all-gathered, so every rank returns the same full tensor.
    """
    dataset = ImageDataset(items, build_transforms(*input_size, train=False))
    n = len(dataset)
    mine = list(range(rank, n, world))
    loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    parts = [model(imgs.to(device, non_blocking=True))[key].float() for imgs, *_ in loader]
    local = torch.cat(parts) if parts else torch.zeros(0, 0, device=device)
    if world == 1:
        return local
    per_rank = math.ceil(n / world)
    dim = torch.tensor([local.shape[1] if local.numel() else 0], device=device)
    dist.all_reduce(dim, op=dist.ReduceOp.MAX)
    padded = torch.zeros(per_rank, int(dim), device=device)
    padded[:local.shape[0]] = local
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    out = torch.empty(n, int(dim), device=device)
    for r, shard in enumerate(shards):
        count = len(range(r, n, world))
        out[r::world] = shard[:count]
    return out


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
               world: int = 1, rank: int = 0) -> dict[str, float] | None:
    """mAP, R1, R5 (fractions) of ``model``'s ``feat_bn`` on the held-out query/gallery split,
    ``None`` when the split has no query. ``model`` must be in eval mode; every rank returns
    the same figures."""
    if not split.query or not split.gallery:
        return None
    common = dict(batch_size=batch_size, num_workers=num_workers, world=world, rank=rank)
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
