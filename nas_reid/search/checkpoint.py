"""Search checkpoints: the complete state of a search, written atomically, read without pickle.

``checkpoints/last.pt`` in the run folder is one ``torch.save`` dict (:data:`VERSION` 1): the
format's ``version``, the ``run`` kind (``"search"``), the space's ``space_hash`` (a resume must
use the same space), ``seed``, ``epochs``, ``world_size``, the identity ``split``, the position
(``epoch``, ``batch``, ``step``, ``finished``), the supernet's ``model`` state_dict (with the
architecture parameters ``arch.<position>`` and the Gumbel temperature ``tau``), the
``weight_optimizer``, ``arch_optimizer`` and ``weight_scheduler`` states, the ``rib`` buffers,
the ``heldout_stream`` position, every rank's ``rng`` states, the epoch's ``accumulators``,
``best``, ``elapsed`` and the ``metrics`` and ``genotype_history`` lines so far. Everything is a
tensor, a number, a string, or a list / dict / tuple of those, so the file loads with
``torch.load(weights_only=True)``. Writing is atomic (:func:`nas_reid.fileio.atomic_write_bytes`).
Every key in detail, and what a resume rewrites: docs/search.md, section
`nas_reid.search.checkpoint`.
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
