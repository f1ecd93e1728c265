"""Resumable PK training streams whose augmentation does not depend on the loader.

Augmentation. The training transform of image ``i`` in epoch ``e`` of a stream runs under a
torch generator state seeded from ``(seed, stream, e, i)`` (:class:`SeededDataset`), inside
:func:`torch.random.fork_rng` so the global RNG (which Gumbel sampling or dropout draw from) is
left untouched. The augmented batch is therefore the same with or without worker processes, and
a resumed run sees exactly the images the interrupted one would have seen. Each loader also gets
its own ``torch.Generator``, so creating an iterator does not draw from the global RNG either.

Streams. :class:`BatchStream` walks one :class:`~nas_reid.data.sampler.PKBatchSampler` epoch
after epoch and knows its position ``(epoch, batch)``: :meth:`BatchStream.epoch_batches` walks
one epoch from a given batch on, :meth:`BatchStream.next` hands out one batch at a time and
rolls over into the next epoch when one runs out. :func:`plain_loader` gives test-transform
images in dataset order.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from nas_reid.data.base import Item
from nas_reid.data.image_dataset import ImageDataset, worker_context
from nas_reid.data.sampler import PKBatchSampler
from nas_reid.data.transforms import build_transforms
from nas_reid.errors import UserError


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

    ``batch`` counts the batches this rank has consumed in ``epoch``. ``transform`` defaults to
    :func:`train_transform` at ``input_size``.
    """

    def __init__(self, items: Sequence[Item], input_size: tuple[int, int], *, p: int, k: int,
                 seed: int, stream: int, num_replicas: int = 1, rank: int = 0,
                 num_workers: int = 0, pin_memory: bool = False,
                 transform: Callable | None = None) -> None:
        transform = train_transform(*input_size) if transform is None else transform
        self.dataset = SeededDataset(items, transform, seed, stream)
        self.sampler = PKBatchSampler(self.dataset.pids, p, k, seed=int(seed) * 2 + stream,
                                      num_replicas=num_replicas, rank=rank)
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler, num_workers=num_workers,
                                 multiprocessing_context=worker_context(num_workers),
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



def plain_loader(items: Sequence[Item], input_size: tuple[int, int], *, batch_size: int,
                 num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """Test-transform images in dataset order (for feature extraction and the RIB clusters)."""
    dataset = ImageDataset(items, build_transforms(*input_size, train=False))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      multiprocessing_context=worker_context(num_workers), pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(0))
