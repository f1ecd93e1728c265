"""Model checkpoints of a retrained genotype: what ``evaluate`` and ``export`` read.

A retrain run folder holds ``checkpoints/last.pt`` (the model and the complete training state,
for ``--resume``; what a run folder given to ``evaluate`` / ``export`` stands for) and
``checkpoints/best.pt`` (the model of the best evaluation mAP; the last model when the run never
evaluated). Both are one ``torch.save`` dict with at least ``version`` (1), ``kind``
(``"nas-reid/model"``), ``run``, ``genotype`` (its JSON text), ``num_classes``, ``model`` (the
:class:`~nas_reid.space.discrete.ReIDNet` state_dict), ``epoch``, ``data`` and ``metrics``;
``last.pt`` adds the training state (``"training"``). Everything is a tensor, a number, a
string, or a list / dict of those, so :func:`load_model` reads it with
``torch.load(weights_only=True)``: loading a checkpoint runs no code. Writes are atomic
(temporary sibling, fsync, rename).
Each key in detail: docs/training.md, section `nas_reid.train.checkpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas_reid.errors import UserError
from nas_reid.fileio import atomic_torch_save, torch_load_safe
from nas_reid.space.genotype import Genotype, GenotypeError
from nas_reid.engine.resumable import RUN_KEY, checkpoint_kind
from nas_reid.space.discrete import ReIDNet, build_model

VERSION = 1
KIND = "nas-reid/model"
LAST = Path("checkpoints") / "last.pt"
BEST = Path("checkpoints") / "best.pt"


class ModelCheckpointError(UserError):
    """A model checkpoint that is missing, unreadable, or not a nas-reid model checkpoint."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns."""

    model: ReIDNet
    """The network with the checkpoint's weights, in eval mode, on the requested device."""
    genotype: Genotype
    num_classes: int
    path: Path
    state: dict[str, Any]
    """The whole checkpoint dict (``epoch``, ``data``, ``metrics``, ...)."""


def model_state(model: ReIDNet, *, num_classes: int, epoch: int, data: dict[str, Any],
                metrics: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (``extra`` keys are added as they are)."""
    net = getattr(model, "module", model)
    return {"version": VERSION, "kind": KIND, RUN_KEY: "retrain",
            "genotype": net.genotype.to_json(),
            "num_classes": int(num_classes),
            "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "epoch": int(epoch), "data": dict(data), "metrics": metrics, **extra}


def save_model_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save(state)`` to ``path`` atomically."""
    return atomic_torch_save(path, state)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict, read with ``weights_only=True`` onto the CPU and checked for version
    and kind; :class:`ModelCheckpointError` otherwise. A run folder stands for its ``last.pt``
    (the final model, the one its results.json reports)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / LAST).is_file():
            raise ModelCheckpointError(f"{path} is a folder without {LAST}; name a checkpoint file "
                                       "or a retrain run folder")
        path = path / LAST
    state = torch_load_safe(path, ModelCheckpointError)
    if not isinstance(state, dict) or state.get("kind") != KIND:
        hint = (" (written by a search run: retrain its genotype.json first)"
                if checkpoint_kind(state) == "search" else "")
        raise ModelCheckpointError(f"{path} is not a nas-reid model checkpoint{hint}")
    if state.get("version") != VERSION:
        raise ModelCheckpointError(f"checkpoint {path} has version {state.get('version')!r}; "
                                   f"this nas-reid reads version {VERSION}")
    state["_path"] = str(path)
    return state


def weights_misfit(expected: dict[str, torch.Tensor], weights: Any, shown: int = 3) -> str | None:
    """How the state dict ``weights`` differs from a network's ``expected`` one, naming the
    first ``shown`` keys of each kind (missing, unexpected, of another shape); None if it fits."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        return "the model entry is not a dict of tensors"
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [f"{k} {list(weights[k].shape)} (the network's: {list(expected[k].shape)})"
              for k in expected if k in weights and weights[k].shape != expected[k].shape]

    def first(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    parts = [f"{what}: {first(keys)}" for what, keys in (
        ("missing", missing), ("unexpected", unexpected), ("other shape", shapes)) if keys]
    return "; ".join(parts) or None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the network of a model checkpoint from its genotype and load its weights."""
    state = read_checkpoint(path)
    where = Path(state.pop("_path"))
    try:
        genotype = Genotype.from_json(state["genotype"])
    except GenotypeError as exc:
        raise ModelCheckpointError(f"checkpoint {where}: its genotype is invalid: {exc}") from None
    model = build_model(genotype, int(state["num_classes"]))
    misfit = weights_misfit(model.state_dict(), state["model"])
    if misfit:
        raise ModelCheckpointError(f"checkpoint {where}: its weights do not fit its genotype "
                                   f"({misfit})")
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return LoadedModel(model, genotype, int(state["num_classes"]), where, state)
