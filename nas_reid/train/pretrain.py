"""Pretraining a ResNet backbone on the synthetic pretraining set, once per machine.

With no download allowed, the built-in benchmark's backbone is pretrained locally instead of on
ImageNet: :func:`pretrain` trains the ``baseline`` network (the backbone, a BNNeck, no
attention) with the ``pretrain_synthetic`` recipe on ``synthreid_pretrain``
(:mod:`nas_reid.data.pretrain_set`) and keeps the backbone's state_dict in torchvision's own key
layout, so the file is what ``--backbone-weights`` takes for an ImageNet one. Entries are cached
under ``$NAS_REID_CACHE/pretrained/<backbone>-<H>x<W>-<key>/`` (``backbone.pth``,
``pretrain.json``, ``metrics.jsonl``), keyed by everything that changes the weights; a finished
entry is reused, a killed pretraining resumes, processes asking at once wait for one another.
:func:`resolve_backbone_weights` turns ``backbone: {weights: synthetic}`` (a space's or a
recipe's; ``--backbone-weights synthetic``) into the file, pretraining on first use.
The cache in detail: docs/training.md, section `nas_reid.train.pretrain`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from nas_reid import __version__
from nas_reid.data.pretrain_set import PRETRAIN_CONFIG, ensure_pretrain_set, load_synthreid_pretrain
from nas_reid.data.synthreid import INFO_FILE, SynthConfig
from nas_reid.errors import UserError
from nas_reid.fileio import atomic_torch_save, atomic_write_json
from nas_reid.space.backbone import BACKBONES
from nas_reid.space.config import NO_WEIGHTS, SYNTHETIC_WEIGHTS

VERSION = 1
"""Bumped whenever the same inputs would train different weights; part of the key."""

RECIPE = "pretrain_synthetic"
WEIGHTS_FILE, INFO = "backbone.pth", "pretrain.json"


@dataclass(frozen=True)
class PretrainedBackbone:
    path: Path
    """``backbone.pth``: a torchvision-layout state_dict of the backbone (no ``fc``)."""
    info: dict[str, Any]
    """``pretrain.json``."""


def cache_root() -> Path:
    return Path(os.environ.get("NAS_REID_CACHE") or "~/.cache/nas_reid").expanduser() / "pretrained"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inputs(backbone: str, last_stride: int, input_size: tuple[int, int], recipe,
            set_config: SynthConfig, set_root: Path) -> dict[str, Any]:
    info = json.loads((set_root / INFO_FILE).read_text())
    return {"version": VERSION, "backbone": backbone, "last_stride": last_stride,
            "input": {"height": input_size[0], "width": input_size[1]},
            # fields at their defaults are left out: a field added to the recipe schema later
            # does not change the key (a changed default bumps VERSION instead)
            "recipe": recipe.model_dump(mode="json", exclude_defaults=True),
            "set": {"config_hash": set_config.config_hash(),
                    "content_sha256": info["content_sha256"]}}


def _entry_dir(inputs: Mapping[str, Any]) -> Path:
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    h, w = inputs["input"]["height"], inputs["input"]["width"]
    return cache_root() / f"{inputs['backbone']}-{h}x{w}-{key}"


def _read_entry(folder: Path) -> PretrainedBackbone | None:
    """The finished entry in ``folder`` if its weights match their recorded hash."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        info = json.loads((folder / INFO).read_text())
        path = folder / WEIGHTS_FILE
        if info["sha256"] == file_sha256(path):
            return PretrainedBackbone(path, info)
    return None


@contextlib.contextmanager
def _locked(folder: Path):
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recipe(recipe, overrides):
    from nas_reid.train.recipe import load_recipe

    return load_recipe(recipe or RECIPE, overrides)


def _check_backbone(backbone: str, input_size: Sequence[int]) -> tuple[int, int]:
    if backbone == "mobilenetv2":
        raise UserError("backbone weights 'synthetic': a searched mobilenetv2 backbone is trained "
                        "from scratch (there is no pretrained one); set backbone.weights: none, "
                        "e.g. --backbone-weights none or the mobile_synthetic recipe")
    if backbone not in BACKBONES:
        raise UserError(f"pretrain: backbone {backbone!r} cannot be pretrained; choose one of "
                        f"{', '.join(BACKBONES)}")
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise UserError(f"pretrain: input size must be (height, width), got {input_size!r}") from None
    if h < 32 or w < 16:
        raise UserError(f"pretrain: input {h}x{w} is too small (at least 32x16)")
    return h, w


def find_pretrained(backbone: str = "resnet18", input_size: Sequence[int] = (128, 64),
                    last_stride: int = 1, *, recipe=None, overrides=None,
                    set_config: SynthConfig | None = None) -> PretrainedBackbone | None:
    """The cached backbone for these inputs, or None (nothing is trained or rendered, but the
    pretraining set must be cached already: its image hash is part of the key)."""
    from nas_reid.data.synthreid import synthreid_cache_dir

    size = _check_backbone(backbone, input_size)
    config = set_config or PRETRAIN_CONFIG
    root = synthreid_cache_dir(config)
    if not (root / INFO_FILE).is_file():
        return None
    return _read_entry(_entry_dir(_inputs(backbone, last_stride, size, _recipe(recipe, overrides),
                                          config, root)))


def pretrain(backbone: str = "resnet18", input_size: Sequence[int] = (128, 64),
             last_stride: int = 1, *, recipe=None, overrides=None,
             set_config: SynthConfig | None = None, device: str | torch.device = "cpu",
             num_workers: int = 0, progress: bool = True,
             log: Callable[[str], None] | None = None) -> PretrainedBackbone:
    """The pretrained backbone for these inputs: from the cache, or trained now and cached.

    ``recipe`` / ``overrides`` change the ``pretrain_synthetic`` recipe (and so the key);
    ``set_config`` replaces the pretraining set (tests use a tiny one). ``log`` gets one line
    before a pretraining starts (what, where, its cost) and one when it ends.
    """
    from nas_reid.space.reference import resolve_genotype, retarget
    from nas_reid.train.loop import retrain

    from nas_reid.engine.runtime import resolve_device

    size = _check_backbone(backbone, input_size)
    r = _recipe(recipe, overrides)
    device = resolve_device(device, 0)  # before anything is rendered or trained
    config = set_config or PRETRAIN_CONFIG
    set_root = ensure_pretrain_set(config, progress=progress)
    inputs = _inputs(backbone, last_stride, size, r, config, set_root)
    folder = _entry_dir(inputs)
    with _locked(folder):
        done = _read_entry(folder)
        if done is not None:
            return done
        run_dir = folder.with_name(folder.name + ".run")
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)  # a start killed before its checkpoint
        if log:
            log(f"pretraining {backbone} at {size[0]}x{size[1]} on synthreid_pretrain, "
                f"{r.epochs} epochs ({'resumed' if resume else 'once per machine'}) -> {folder}")
        started = time.perf_counter()
        ds = load_synthreid_pretrain(set_root)
        genotype = retarget(resolve_genotype("baseline")[0], backbone=backbone,
                            last_stride=last_stride, input_size=size)
        result = retrain(None if resume else genotype, ds, recipe=None if resume else r,
                         out_dir=run_dir, resume=resume, device=device, progress=progress,
                         num_workers=num_workers)
        ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
        state = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        atomic_torch_save(tmp / WEIGHTS_FILE, state)
        shutil.copy2(run_dir / "metrics.jsonl", tmp / "metrics.jsonl")
        info = {**inputs, "sha256": file_sha256(tmp / WEIGHTS_FILE),
                "heldout": {k: result.results["plain"][k] for k in ("mAP", "R1", "mINP")},
                "train_seconds": result.metrics[-1]["time"],
                "session_seconds": time.perf_counter() - started,
                "threads": torch.get_num_threads(), "device": str(device),
                "torch": torch.__version__, "package_version": __version__}
        atomic_write_json(tmp / INFO, info)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        shutil.rmtree(run_dir, ignore_errors=True)
        out = _read_entry(folder)
        assert out is not None
        if log:
            held = info["heldout"]
            log(f"pretrained {backbone}: held-out mAP {100 * held['mAP']:.1f}, R1 "
                f"{100 * held['R1']:.1f} on the pretraining set's own query / gallery; "
                f"{info['train_seconds'] / 60:.1f} min of training")
        return out


def resolve_backbone_weights(weights: str | os.PathLike | None, backbone: str,
                             input_size: Sequence[int], last_stride: int = 1, *,
                             device: str | torch.device = "cpu", progress: bool = True,
                             may_train: bool = True,
                             log: Callable[[str], None] | None = None) -> Path | None:
    """The file a ``weights`` setting names: None for ``None`` / ``"none"`` (random
    initialisation), the pretrained backbone for ``"synthetic"`` (pretrained now if not cached
    and ``may_train``; else a :class:`UserError` naming the command that pretrains it), else the
    path itself (checked when loaded)."""
    if weights is None or str(weights) == NO_WEIGHTS:
        return None
    if str(weights) == SYNTHETIC_WEIGHTS:
        if not may_train:
            found = find_pretrained(backbone, input_size, last_stride)
            if found is None:
                h, w = input_size
                raise UserError(
                    f"backbone weights 'synthetic': no pretrained {backbone} at {h}x{w} on this "
                    f"machine yet; run `nas-reid pretrain --backbone {backbone} --size {h}x{w}` "
                    "once first (it is not trained inside a distributed run)")
            return found.path
        return pretrain(backbone, input_size, last_stride, device=device, progress=progress,
                        log=log).path
    return Path(weights).expanduser()
