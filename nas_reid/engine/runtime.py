"""Process set-up shared by every training loop: DDP world, device, determinism, seeds, RNG state.

- :func:`join_world` joins the ``torchrun`` process group (gloo on CPU, NCCL on CUDA) when
  ``WORLD_SIZE`` > 1 and returns this process's :class:`World`.
- :func:`resolve_device` checks ``--device`` (``cpu`` or ``cuda[:i]``; one GPU per local rank)
  and raises :class:`~nas_reid.errors.UserError` for anything else or a missing CUDA.
- :func:`deterministic` switches deterministic algorithms on (and cuDNN benchmark off) for a
  block and restores the previous settings afterwards.
- :func:`seed_all`, :func:`derived_seed`: seeding python / numpy / torch, and seeds derived from
  several integers (``numpy.random.SeedSequence``).
- :func:`rng_state`, :func:`set_rng_state`: the generators' states as tensors, numbers and
  lists only, so a checkpoint holding them loads with ``torch.load(weights_only=True)``;
  :func:`gather_rng_states` / :func:`restore_rng_states`: every rank's, for a checkpoint.
- :func:`broadcast_buffers`, :func:`all_reduce_sums`: the two DDP collectives the loops share.
"""

from __future__ import annotations

import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from nas_reid.errors import UserError


@dataclass(frozen=True)
class World:
    size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False


def join_world(device_type: str) -> World:
    """Join the torchrun process group (if launched by torchrun and not joined yet)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)))
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return World(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), True)


def device_type(device: str | torch.device) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"--device must be cpu or cuda, got {device!r}") from None


def resolve_device(device: str | torch.device, local_rank: int) -> torch.device:
    device_type(device)
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {device}: CUDA is not available on this machine "
                            "(torch.cuda.is_available() is False); use --device cpu")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise UserError(f"--device must be cpu or cuda, got {device!r}")
    return dev


@contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    previous = (torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def rng_state() -> dict[str, Any]:
    """This process's python / numpy / torch (CPU and CUDA) generator states, pickle-free."""
    np_state = np.random.get_state(legacy=False)
    np_state = {**np_state, "state": {**np_state["state"],
                                      "key": [int(v) for v in np_state["state"]["key"]]}}
    state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [t.cpu() for t in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(_tuples(state["python"]))
    np_state = dict(state["numpy"])
    np_state["state"] = {**np_state["state"],
                         "key": np.asarray(np_state["state"]["key"], dtype=np.uint32)}
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value):
    """``random.setstate`` wants tuples where a round trip may have given lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def gather_rng_states(world: World) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective under DDP: every rank calls
    it, every rank gets the list)."""
    state = rng_state()
    if world.size == 1:
        return [state]
    states: list[Any] = [None] * world.size
    dist.all_gather_object(states, state)
    return states


def restore_rng_states(states: list[dict[str, Any]], world: World, *, reseed: int,
                       what: str) -> None:
    """This rank's state of :func:`gather_rng_states`'s list; when the list comes from another
    number of ranks, warn that ``what`` will not repeat an uninterrupted run and seed with
    ``reseed`` instead."""
    if len(states) == world.size:
        set_rng_state(states[world.rank])
        return
    warnings.warn(f"the checkpoint was written by {len(states)} rank(s), this run has "
                  f"{world.size}: random streams are reseeded, so {what} will not repeat an "
                  "uninterrupted run exactly", stacklevel=4)
    seed_all(reseed)


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's buffers (BN statistics) to every rank, so evaluations agree."""
    if world.size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def all_reduce_sums(sums: dict[str, float], world: World, device: torch.device) -> dict[str, float]:
    """``sums`` added over the ranks (float64; returned as is on one rank)."""
    if world.size == 1:
        return sums
    keys = sorted(sums)
    values = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(keys, values.tolist()))
