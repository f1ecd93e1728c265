"""Feature extraction for retrieval: one model output per image, in dataset order.

:func:`extract` runs ``model(x)[key]`` over test-transformed images (resize and normalise only)
and returns a float32 ``(N, D)`` tensor. ``flip=True`` averages each image's feature with that
of its horizontal mirror (the usual re-ID test-time augmentation). Under DDP (``world > 1``)
each rank extracts every ``world``-th image and the shards are all-gathered, so every rank
returns the same full tensor. ``autocast`` (a dtype, e.g. ``torch.bfloat16``) runs the forward
passes under :func:`torch.autocast` on the model's device; features are returned in float32.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Subset

from nas_reid.data.base import Item
from nas_reid.data.image_dataset import ImageDataset, worker_context
from nas_reid.data.transforms import build_transforms


@torch.no_grad()
def extract(model: torch.nn.Module, items: Sequence[Item], input_size: tuple[int, int], key: str,
            device: torch.device, *, batch_size: int = 128, num_workers: int = 0,
            world: int = 1, rank: int = 0, flip: bool = False,
            autocast: torch.dtype | None = None,
            channels_last: bool = False) -> torch.Tensor:
    """``model(x)[key]`` for every item in order, as a float32 (N, D) tensor on ``device``.

    ``model`` must be in eval mode (see the module doc for ``flip``, ``autocast``, DDP).
    """
    dataset = ImageDataset(items, build_transforms(*input_size, train=False))
    n = len(dataset)
    mine = list(range(rank, n, world))
    loader = DataLoader(Subset(dataset, mine), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, multiprocessing_context=worker_context(num_workers),
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(0))
    context = (torch.autocast(device.type, dtype=autocast) if autocast is not None
               else nullcontext())
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    parts = []
    for imgs, *_ in loader:
        imgs = imgs.to(device, non_blocking=True).contiguous(memory_format=memory_format)
        with context:
            feat = model(imgs)[key].float()
            if flip:
                feat = (feat + model(imgs.flip(3))[key].float()) / 2
        parts.append(feat)
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


