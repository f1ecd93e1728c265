"""PK identity sampling: batches of P identities x K images each, DDP-aware and resumable.

An epoch is built as in torchreid's ``RandomIdentitySampler`` (KaiyangZhou/deep-person-reid,
``torchreid/data/sampler.py``) and BoT's (michuanhaohao/reid-strong-baseline,
``data/samplers/triplet_sampler.py``): every identity's images are shuffled (an identity with
fewer than K images is drawn K times with replacement) and cut into chunks of K; batches then
repeatedly take P identities, without replacement, among those that still have chunks, one
chunk each, until fewer than P remain.
So an epoch has about ``sum_pid floor(max(n_pid, K) / K) / P`` batches (about 185 on Market at
16x4).

Everything comes from a ``numpy`` generator seeded by ``(seed, epoch)``: every rank builds the
same global list of batches and takes every ``num_replicas``-th one starting at its rank, so
ranks see disjoint batches and the same number of them. ``set_epoch(epoch, start_batch)`` lets a
resumed run continue with the very next batch. The number of batches can differ by one or two
between epochs, since which identities run out first depends on the draw.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from ..errors import UserError


class PKBatchSampler(Sampler[list[int]]):
    """Yields lists of ``p * k`` dataset indices (``p`` identities, ``k`` images each).

    Use it as ``DataLoader(dataset, batch_sampler=PKBatchSampler(pids, p, k))``. Call
    :meth:`set_epoch` before each epoch for a new order.
    """

    def __init__(
        self,
        pids: Sequence[int],
        p: int = 16,
        k: int = 4,
        *,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise UserError(f"PK sampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        if num_replicas is None or rank is None:
            num_replicas, rank = _dist_world()
        if not 0 <= rank < num_replicas:
            raise UserError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self._by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            self._by_pid[int(pid)].append(index)
        if len(self._by_pid) < p:
            raise UserError(
                f"PK sampler needs at least p={p} identities, the training set has {len(self._by_pid)}"
            )
        self.p, self.k, self.seed = p, k, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.start_batch = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def _global_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        chunks: dict[int, list[list[int]]] = {}
        for pid in sorted(self._by_pid):
            idxs = np.array(self._by_pid[pid])
            if len(idxs) < self.k:
                idxs = rng.choice(idxs, size=self.k, replace=True)
            else:
                idxs = rng.permutation(idxs)
            n = len(idxs) // self.k
            chunks[pid] = [idxs[i * self.k:(i + 1) * self.k].tolist() for i in range(n)]
        active = [pid for pid in sorted(chunks) if chunks[pid]]
        batches = []
        while len(active) >= self.p:
            chosen = rng.choice(len(active), size=self.p, replace=False)
            batch: list[int] = []
            for j in chosen:
                batch.extend(chunks[active[j]].pop())
            batches.append(batch)
            active = [pid for pid in active if chunks[pid]]
        return batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch to yield next, starting at this rank's batch ``start_batch``.

        A resumed run passes the number of batches it had already trained on in that epoch.
        (The position is not tracked inside the iterator: a DataLoader prefetches batches ahead
        of training, so only the training loop knows how many were really consumed.)
        """
        if start_batch < 0:
            raise UserError(f"start_batch must be >= 0, got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def _my_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self._global_batches(self.epoch)
            per_rank = len(batches) // self.num_replicas
            self._cache = (self.epoch, batches[self.rank::self.num_replicas][:per_rank])
        return self._cache[1]

    def __len__(self) -> int:
        """Batches this rank yields in the current epoch, from its first one."""
        return len(self._my_batches())

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._my_batches()[self.start_batch:]


def _dist_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
