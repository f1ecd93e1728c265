"""Search checkpoints: the complete state of a search, written atomically, read without pickle.

``checkpoints/last.pt`` in the run folder is one ``torch.save`` dict (:data:`VERSION` 1):

=====================  =====================================================================
``version``            this format's version
``run``                ``"search"``: the kind of run that wrote it (a retrain's says ``"retrain"``)
``space_hash``         the search space's canonical hash (a resume must use the same space)
``seed``, ``epochs``   the search seed and the total number of epochs
``world_size``         how many DDP ranks wrote it
``split``              the original pids of the weight and held-out shares
``epoch``, ``batch``   position: epoch ``epoch`` (0-based), ``batch`` batches of it done on
                       every rank (``batch == 0``: the epoch has not started)
``step``               optimisation steps done since the start of the search
``finished``           the final genotype and pictures are written
``model``              the supernet's state_dict: weights, architecture parameters
                       (``arch.<position>``), the Gumbel temperature ``tau`` and every buffer
``weight_optimizer``,  the two optimizers' state_dicts (momentum / Adam moments)
``arch_optimizer``
``weight_scheduler``   the weights' learning-rate scheduler state
``rib``                the RIB loss's buffers (input clusters, per-image assignments, feature
                       centroids, Q, estimates); ``{}`` when the RIB weight is 0
``heldout_stream``     the held-out PK stream's ``{"epoch", "batch"}``
``rng``                one entry per rank: ``python`` (``random.getstate()``), ``numpy``
                       (the legacy global generator's ``bit_generator`` state dict, key as a
                       list), ``torch`` (CPU generator state), ``cuda`` (one per device)
``accumulators``       running sums of the current epoch's losses (a mid-epoch resume
                       continues the epoch's means)
``best``               best held-out mAP so far: ``{"mAP", "R1", "epoch"}``
``elapsed``            seconds of search so far, over every session
``metrics``            every metrics.jsonl line so far (JSON text)
``genotype_history``   every genotype_history.jsonl line so far (JSON text)
=====================  =====================================================================

Everything is a tensor, a number, a string, or a list / dict / tuple of those, so the file
loads with ``torch.load(weights_only=True)``: reading a checkpoint runs no code. Writing goes to
a temporary sibling, is flushed to disk and renamed over the old file
(:func:`nas_reid.fileio.atomic_write_bytes`), so a kill at any moment leaves the previous
checkpoint or the new one. The metrics and genotype-history files are rewritten from the
checkpoint's lines on resume, so lines written after the last checkpoint are dropped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_torch_save, torch_load_safe
from nas_reid.engine.resumable import RUN_KEY, checkpoint_kind

VERSION = 1
CHECKPOINT = Path("checkpoints") / "last.pt"


class CheckpointError(UserError):
    """A checkpoint that cannot be read or does not belong to this search."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to ``path`` atomically (temporary sibling, fsync, rename)."""
    return atomic_torch_save(path, {"version": VERSION, RUN_KEY: "search", **state})


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; :class:`CheckpointError` if it
    is missing, unreadable, written by another kind of run or of another version."""
    state = torch_load_safe(path, CheckpointError)
    kind = checkpoint_kind(state)
    if kind != "search":
        raise CheckpointError(f"checkpoint {path} was written by a {kind} run, not a search"
                              if kind else f"{path} is not a search checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state.get('version')!r}; this "
                              f"nas-reid reads version {VERSION}")
    return state
