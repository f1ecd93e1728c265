"""The bilevel search: weights on one share of the identities, the architecture on the other.

First-order DARTS (and GDAS when the space samples with ``gumbel``); the two steps themselves
are :class:`nas_reid.search.bilevel.Bilevel`, this module builds their losses and runs them in a
run folder. Per step: a **weight step** on a PK batch of the *weight-share* identities,
``id * CE_ls(logits) + triplet * batch_hard(feat) + rib_weight(epoch) * IBB(feat)``; from epoch
``warmup_epochs`` on, an **architecture step** on a PK batch of the *held-out* identities
(batch-hard triplet on the L2-normalised ``feat_bn``, margin ``triplet_margin``; no classifier,
no RIB term), on the architecture parameters only. Strategies
(:mod:`nas_reid.search.strategies`) decide whether the architecture step runs and what happens
at the end of an epoch. Every epoch is logged (:mod:`nas_reid.search.runlog`) and checkpointed
(:mod:`nas_reid.search.checkpoint`). The final genotype is the last epoch's (DARTS' convention);
the best held-out mAP is recorded alongside. The same seed with the same thread count on the same
machine gives the same genotype (with a latency cost: given a fixed ``table:``), and a resumed
run ends as an uninterrupted one. Under ``torchrun`` it runs DDP; only rank 0 writes files.
The steps, temperature, logs, precision, reproducibility, latency and DDP in detail:
docs/search.md, section `nas_reid.search.loop`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from nas_reid import __version__
from nas_reid.data import ReIDDataset, resolve_dataset
from nas_reid.search.decisions import DecisionReport, bootstrap_report, decision_report
from nas_reid.errors import UserError
from nas_reid.engine.feedback import announce_data, run_folder_lines, say
from nas_reid.space.genotype import Genotype, derive_genotype
from nas_reid.losses import CrossEntropyLabelSmooth, RIBLoss, TripletLoss
from nas_reid.ops.dcs import dcs_keep_ratios
from nas_reid.engine.precision import Precision
from nas_reid.engine.resumable import ResumableRun, check_new_total, inspect_run_folder
from nas_reid.engine.optim import build_optimizer
from nas_reid.engine.runtime import (
    World,
    all_reduce_sums,
    broadcast_buffers,
    derived_seed,
    deterministic,
    device_type,
    gather_rng_states,
    join_world,
    resolve_device,
    restore_rng_states,
    seed_all,
)
from nas_reid.search.bilevel import Bilevel, NonFiniteLoss
from nas_reid.search.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from nas_reid.search.cost import CostModel
from nas_reid.search.data import (
    HELDOUT_STREAM,
    WEIGHT_STREAM,
    BatchStream,
    IdentitySplit,
    extract,
    query_gallery_split,
    quick_eval,
    split_identities,
)
from nas_reid.search.guards import CollapseWarning, check_collapse, collapse_report
from nas_reid.search.latency import LATENCY_FILE, LatencyTable, LatencyTableError, table_for
from nas_reid.search.runlog import HISTORY_FILE, RunLog
from nas_reid.search.strategies import SUBNETS_FILE, NoSteps, scored_line, strategy_for
from nas_reid.space import SearchSpace, Supernet, load_space
from nas_reid.space.reference import search_space_path
from nas_reid.train.pretrain import file_sha256, resolve_backbone_weights

GENOTYPE_FILE = "genotype.json"
CELLS_PICTURE = "cells.png"
PROBS_PICTURE = "arch_probs.png"
CONFIG_KEYS = {"space": dict, "search.data.name": str, "search.data.root": str,
               "search.epochs": int, "search.seed": int}
"""What a search's config.yaml must hold for ``--resume`` to start it again from it."""


def default_space_path() -> Path:
    """The shipped ``search_spaces/cpu_small.yaml`` (source checkout, editable or wheel install;
    see :func:`nas_reid.space.reference.shipped_file`)."""
    from nas_reid.space.reference import shipped_file

    try:
        return shipped_file("cpu_small.yaml")
    except UserError as exc:
        raise UserError(f"the default search space is missing: {exc}; pass --space") from None


@dataclass
class SearchResult:
    """What :func:`search` returns (on every DDP rank)."""

    out_dir: Path
    finished: bool
    """False when the search stopped early (``max_steps``); ``resume=True`` continues it."""
    genotype: Genotype | None
    """The final genotype (the last derived one if unfinished; None before the first epoch)."""
    genotype_path: Path | None
    epochs: int
    epochs_done: int
    steps: int
    best: dict[str, Any]
    arch_parameters: dict[str, torch.Tensor]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """The epoch records of metrics.jsonl."""
    decisions: DecisionReport | None = None
    """Which choices of the final genotype the search had settled (:mod:`nas_reid.search.decisions`);
    None before the first epoch."""


# ------------------------------------------------------------------------------ set-up helpers


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def _effective_space(space: SearchSpace, epochs: int | None, seed: int | None,
                     overrides: Mapping[str, Any] | Sequence[str] | None = None) -> SearchSpace:
    """``space`` with ``overrides`` (a nested dict or ``"key.sub=value"`` strings, as for a
    recipe) merged in, then ``schedule.epochs`` / ``schedule.seed`` replaced when given;
    validated again (a bad override names its field)."""
    from nas_reid.train.recipe import merge, parse_overrides

    source = space.source
    resolved = space.resolved()
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(list(overrides))
        resolved = merge(resolved, overrides)
        try:
            resolved = load_space(resolved).resolved()
        except UserError as exc:
            raise UserError(f"--set {_shown_overrides(overrides)}: {exc}") from None
    schedule = resolved["schedule"]
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise UserError(f"epochs must be a positive integer, got {epochs!r}")
        if epochs <= schedule["warmup_epochs"]:
            raise UserError(f"epochs={epochs} leaves no architecture epoch: the space "
                            f"{space.name!r} has schedule.warmup_epochs={schedule['warmup_epochs']}")
        schedule["epochs"] = epochs
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"seed must be an integer, got {seed!r}")
        schedule["seed"] = seed
    out = load_space(resolved)
    out._source = source
    return out


def _shown_overrides(overrides: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v!r}" for k, v in _flat(dict(overrides)).items())


# ------------------------------------------------------------------------------ the search


def search(space: str | os.PathLike | dict | SearchSpace | None = None,
           data: ReIDDataset | str | None = None, *,
           out_dir: str | os.PathLike | None = None,
           epochs: int | None = None,
           device: str | torch.device = "cpu",
           resume: bool = False,
           seed: int | None = None,
           overrides: Mapping[str, Any] | Sequence[str] | None = None,
           progress: bool = True,
           root: str | os.PathLike | None = None,
           num_workers: int = 0,
           checkpoint_every: int = 0,
           log_every: int = 0,
           max_steps: int | None = None) -> SearchResult:
    """Search ``space`` on the training identities of ``data``; write the run folder ``out_dir``.

    Args:
        space: a search-space YAML path, the name of a shipped one (``cpu_small``,
            ``mobile_cpu``, ...), a dict or a :class:`SearchSpace`; default the packaged
            ``cpu_small.yaml``, or, with ``resume``, the run's own.
        data: a :class:`ReIDDataset` or a registered dataset name (with ``root``); default the
            built-in ``synthreid`` benchmark, or, with ``resume``, the run's own.
        out_dir: the run folder; default ``runs/search-<timestamp>`` under the current folder.
            It must not hold anything unless ``resume``, but a search that stopped before its
            first checkpoint, which starts again (:mod:`nas_reid.engine.resumable`).
        epochs, seed: override the space's ``schedule.epochs`` / ``schedule.seed``; with
            ``resume``, ``epochs`` is a new total (at least the epochs begun), followed by every
            schedule from where the run resumes (:mod:`nas_reid.engine.resumable`).
        overrides: fields of the space to change, ``{"schedule": {"cost": {"form":
            "additive"}}}`` or ``["schedule.cost.form=additive"]`` (values parsed as YAML);
            not with ``resume``.
        device: ``cpu`` or ``cuda`` (``cuda:<local rank>`` under torchrun).
        resume: continue from ``out_dir/checkpoints/last.pt`` (a finished run is returned as is;
            one without a checkpoint starts again from its ``config.yaml``).
        progress: a progress bar with losses and ETA (on a terminal) and one summary line per
            epoch (stderr).
        num_workers: image-loading worker processes (results do not depend on it).
        checkpoint_every: also checkpoint every this many steps (0: once per epoch).
        log_every: also write a step record to metrics.jsonl every this many steps (0: never).
        max_steps: stop after this many steps in total, checkpointed, as if interrupted (a
            time-sliced job; ``resume=True`` continues).

    Raises :class:`UserError` (before anything is written) for a bad space, dataset, device or
    run folder.
    """
    world = join_world(device_type(device))
    try:
        dev = resolve_device(device, world.local_rank)
        with deterministic(dev):
            return _Search(space, data, out_dir=out_dir, epochs=epochs, device=dev,
                           resume=resume, seed=seed, overrides=overrides, progress=progress, root=root,
                           num_workers=num_workers, checkpoint_every=checkpoint_every,
                           log_every=log_every, max_steps=max_steps, world=world).run()
    finally:
        if world.owns_group:
            dist.destroy_process_group()


class _Search(ResumableRun):
    """One search session (fresh or resumed); :meth:`run` does the work."""

    def __init__(self, space, data, *, out_dir, epochs, device, resume, seed, overrides, progress,
                 root, num_workers, checkpoint_every, log_every, max_steps, world: World) -> None:
        self.world, self.device = world, device
        self.is_main = world.rank == 0
        self.progress = progress and self.is_main
        self.num_workers, self.max_steps = int(num_workers), max_steps
        self.checkpoint_every, self.log_every = int(checkpoint_every), int(log_every)

        # -- the run folder: decide everything before writing anything
        if out_dir is None:
            if resume:
                raise UserError("--resume needs --out: the run folder to continue")
            name = [f"runs/search-{datetime.now():%Y%m%d-%H%M%S}"]
            if world.size > 1:
                dist.broadcast_object_list(name, src=0)
            out_dir = name[0]
        self.out = Path(out_dir).expanduser()
        folder = inspect_run_folder(self.out, self.kind, resume=resume, checkpoint=CHECKPOINT,
                                    finished=("genotype", GENOTYPE_FILE), config_keys=CONFIG_KEYS)
        ckpt = None
        if folder.state in ("finished", "unfinished"):
            ckpt = load_checkpoint(self.out / CHECKPOINT)
            if epochs is not None:
                check_new_total(epochs, (ckpt["epoch"], ckpt["batch"]), self.kind, self.out)
        self.ckpt, self.restart = ckpt, folder.restart
        saved = ckpt["config"] if ckpt is not None else folder.config

        # -- the space and the schedule (a resumed run keeps its own, but a new total of epochs)
        if saved is not None:
            epochs = saved["search"]["epochs"] if epochs is None else epochs
            seed = saved["search"]["seed"] if seed is None else seed
        if saved is not None and overrides:
            raise UserError("--resume continues the run's own search space; leave out --set")
        if space is None:
            space = saved["space"] if saved is not None else default_space_path()
        elif isinstance(space, (str, os.PathLike)):
            space = search_space_path(space)
        self.space = _effective_space(load_space(space), epochs, seed, overrides)
        if saved is not None:
            self._check_same(saved["space"], self.space.resolved())
        sched = self.space.schedule
        self.strategy = strategy_for(self.space)
        self.epochs, self.seed = self.strategy.epochs(sched.epochs), sched.seed

        # -- the data
        saved_data = saved["search"]["data"] if saved is not None else None
        announce_data(self.progress, data, root, saved_data)
        ds = resolve_dataset(data, root, saved_data)
        self.data_ref = {"name": ds.name, "root": str(ds.root)}
        p, k = sched.batch.p, sched.batch.k
        self.split: IdentitySplit = split_identities(ds.train, sched.heldout_fraction, self.seed,
                                                     min_ids=p)
        if ckpt is not None and ckpt["split"] != {"weight": self.split.weight_pids,
                                                  "heldout": self.split.heldout_pids}:
            raise UserError(f"--resume: the training identities of {ds.name} ({ds.root}) differ "
                            f"from those of the run in {self.out}")
        common = dict(p=p, k=k, seed=self.seed, num_replicas=world.size, rank=world.rank,
                      num_workers=self.num_workers, pin_memory=device.type == "cuda")
        size = self.space.input_size
        self.weight_stream = BatchStream(self.split.weight, size, stream=WEIGHT_STREAM, **common)
        self.heldout_stream = BatchStream(self.split.heldout, size, stream=HELDOUT_STREAM, **common)
        for name, stream, ids in (("weight", self.weight_stream, self.split.num_weight_ids),
                                  ("held-out", self.heldout_stream, self.split.num_heldout_ids)):
            if stream.batches_in(0) == 0:
                raise UserError(f"the {name} share ({ids} identities) gives no PK batch of "
                                f"P={p} x K={k} per rank with {world.size} rank(s); lower "
                                "schedule.batch.p or use a larger dataset")
        self.eval_split = query_gallery_split(self.split.heldout)
        self.eval_batch = 256 if device.type == "cuda" else 128

        # -- the model, losses and optimizers (seeded: the same seed builds the same supernet)
        bb = self.space.backbone
        weights = None
        if ckpt is None and not bb.searchable:
            weights = resolve_backbone_weights(
                bb.weights, bb.name, size, bb.last_stride, device=device, progress=self.progress,
                may_train=world.size == 1,
                log=lambda text: tqdm.write(text, file=sys.stderr) if self.is_main else None)
        if ckpt is None and not self.strategy.trains_weights and weights is None:
            warnings.warn(f"sampling.strategy {self.strategy.name!r} scores the sub-networks at "
                          "initialisation, which says little with a randomly initialised backbone "
                          "(backbone.weights: none); give the space pretrained weights", stacklevel=2)
        seed_all(self.seed)
        self.precision = Precision.resolve(self.space.schedule.precision, device,
                                           where="schedule.precision")
        self.net = self.precision.model(Supernet(self.space, self.split.num_weight_ids,
                                                 load_weights=False,
                                                 backbone_weights=weights).to(device))
        self.arch = self.net.arch_parameters()
        self.weights = [q for q in self.net.weight_parameters() if q.requires_grad]
        w = sched.weights
        self.weight_opt = build_optimizer(self.weights, w)
        if w.lr_schedule == "cosine":
            self.weight_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.weight_opt, T_max=self.epochs, eta_min=w.lr_min)
        else:
            self.weight_sched = torch.optim.lr_scheduler.LambdaLR(self.weight_opt, _constant)
        a = sched.arch
        self.arch_opt = torch.optim.Adam(self.arch, lr=a.lr, betas=tuple(a.betas),
                                         weight_decay=a.weight_decay)
        loss = sched.loss
        self.loss_cfg = loss
        self.id_loss = CrossEntropyLabelSmooth(self.split.num_weight_ids, loss.label_smoothing)
        self.triplet = TripletLoss(loss.triplet_margin)
        self.rib = (RIBLoss(self.split.num_weight_ids, weight=loss.rib, warmup_ratio=loss.rib_warmup,
                            beta=loss.rib_beta, seed=self.seed).to(device)
                    if loss.rib > 0 and self.strategy.trains_weights else None)
        self.cost, self.latency_table = None, None
        if sched.cost.form != "none" or self.space.backbone.searchable:
            if sched.cost.metric == "latency":
                self.latency_table = self._latency_table(resumed=ckpt is not None)
            self.cost = CostModel(self.net, sched.cost, self.latency_table)
            self.cost.check(self.net)
        self.model: nn.Module = self.net
        if world.size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)
        self.bilevel = Bilevel(self.net, self.weight_opt, self.arch_opt, self._weight_loss,
                               self._arch_loss, device=device, model=self.model,
                               precision=self.precision, world_size=world.size,
                               grad_clip=sched.weights.grad_clip)

        # -- the position in the search
        self.epoch, self.batch, self.step = 0, 0, 0
        self.finished = False
        self.best: dict[str, Any] = {"mAP": None, "R1": None, "epoch": None}
        self.elapsed = 0.0
        self.sums = self._zero_sums()
        self.dcs_keep: dict[str, float] = {}
        metrics, history = [], []
        if ckpt is not None:
            metrics, history = self._restore(ckpt)
        else:
            seed_all(derived_seed(self.seed, world.rank, 1))  # each rank its own Gumbel draws
        self.metrics_lines, self.history_lines = metrics, history
        self._genotypes: list[Genotype] | None = None
        """The genotype of every epoch so far (parsed from the history once, when first needed)."""
        self.config = saved if saved is not None else {
            "space": self.space.resolved(),
            "search": {"space_file": self.space.source, "data": self.data_ref,
                       "epochs": self.epochs, "seed": self.seed, "device": str(device),
                       "world_size": world.size, "num_workers": self.num_workers,
                       "threads": torch.get_num_threads(), "out_dir": str(self.out),
                       **self.precision.as_dict(),
                       "checkpoint_every": self.checkpoint_every, "log_every": self.log_every,
                       "backbone_weights": ({"file": str(weights), "sha256": file_sha256(weights)}
                                            if weights is not None else None),
                       "package_version": __version__, "torch_version": str(torch.__version__)},
        }
        if ckpt is not None and ckpt["epochs"] != self.epochs:
            self._change_epochs(ckpt["epochs"])
        elif saved is not None:
            self._set_epochs_in_config(None)  # a restart from config.yaml may have --epochs
        if self.latency_table is not None and ckpt is None:
            meta = self.latency_table.meta
            self.config["search"]["latency"] = {
                "table": LATENCY_FILE, "device": self.latency_table.device,
                "from": sched.cost.latency.table or "measured at the search's start",
                "entries": len(self.latency_table.entries),
                **{k: meta.get(k) for k in ("batch", "warmup", "repeats", "threads", "torch", "date")}}
        for line in run_folder_lines(self.out, "search", self.epoch if ckpt is not None else None,
                                     self.epochs):
            say(self.progress, line)

    # -- helpers

    def _latency_table(self, *, resumed: bool) -> LatencyTable:
        """The latency lookup table of a ``metric: latency`` search: a resumed run's own
        (``latency_table.json``, never measured again), else ``schedule.cost.latency.table``,
        else measured now on ``latency.device`` or the search's device. Under DDP rank 0 gets
        it and broadcasts it, so every rank prices the networks alike."""
        cfg = self.space.schedule.cost.latency
        payload: list[Any] = [None]
        error: Exception | None = None
        if self.is_main:
            try:
                if resumed:
                    path = self.out / LATENCY_FILE
                    if not path.is_file():
                        raise LatencyTableError(
                            f"--resume: {path} is missing; the run prices its networks with the "
                            "latency table it had at its start")
                    table, how = LatencyTable.load(path), f"read from {path}"
                else:
                    table = table_for(self.space, self.device, progress=self.progress)
                    how = (f"read from {cfg.table}" if cfg.table is not None
                           else f"measured in {table.meta['seconds']:.1f} s")
                payload = [table.to_dict()]
                if self.progress:
                    tqdm.write(f"latency table: {len(table.entries)} blocks on {table.device}, "
                               f"{how}", file=sys.stderr)
            except Exception as exc:  # the other ranks wait in the broadcast: tell them
                error, payload = exc, [{"error": str(exc)}]
        if self.world.size > 1:
            dist.broadcast_object_list(payload, src=0)
        if error is not None:
            raise error
        if "error" in payload[0]:
            raise LatencyTableError(f"rank 0 could not get the latency table: {payload[0]['error']}")
        return LatencyTable.from_dict(payload[0], where=f"of the run in {self.out}")

    def _check_same(self, saved: dict, now: dict) -> None:
        try:  # defaults added by later releases count as the run's
            saved = load_space(saved).resolved()
        except UserError:
            pass
        a, b = _flat(saved), _flat(now)
        diffs = [f"{key}: {a.get(key)!r} in the run, {b.get(key)!r} now"
                 for key in sorted(set(a) | set(b))
                 if a.get(key) != b.get(key) and key != "schedule.epochs"]  # --epochs may change
        if diffs:
            raise UserError(f"--resume: the search space differs from the run's in {self.out} ("
                            + "; ".join(diffs[:3]) + ("; ..." if len(diffs) > 3 else "")
                            + "); leave out --space/--seed to continue it as it was")

    @staticmethod
    def _zero_sums() -> dict[str, float]:
        return {"steps": 0.0, "total": 0.0, "id": 0.0, "triplet": 0.0, "rib": 0.0,
                "arch_steps": 0.0, "arch_triplet": 0.0, "arch_total": 0.0}

    def _restore(self, ckpt: dict) -> tuple[list[str], list[str]]:
        self.net.load_state_dict(ckpt["model"])
        self.weight_opt.load_state_dict(ckpt["weight_optimizer"])
        self.arch_opt.load_state_dict(ckpt["arch_optimizer"])
        self.weight_sched.load_state_dict(ckpt["weight_scheduler"])
        if self.rib is not None:
            self.rib.load_state_dict(ckpt["rib"])
        self.heldout_stream.load_state_dict(ckpt["heldout_stream"])
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.finished = bool(ckpt["finished"])
        self.best, self.elapsed = dict(ckpt["best"]), float(ckpt["elapsed"])
        self.sums = dict(ckpt["accumulators"])
        self.dcs_keep = dict(ckpt["dcs_keep"])
        restore_rng_states(ckpt["rng"], self.world, what="the search",
                           reseed=derived_seed(self.seed, self.world.rank, 2, self.step))
        return list(ckpt["metrics"]), list(ckpt["genotype_history"])

    def _save(self, session_start: float) -> None:
        rngs = gather_rng_states(self.world)  # a collective: every rank calls it
        if not self.is_main:
            return
        save_checkpoint(self.out / CHECKPOINT, {
            "config": self.config, "space_hash": self.space.canonical_hash(),
            "seed": self.seed, "epochs": self.epochs, "world_size": self.world.size,
            "split": {"weight": self.split.weight_pids, "heldout": self.split.heldout_pids},
            "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "finished": self.finished,
            "model": self.net.state_dict(),
            "weight_optimizer": self.weight_opt.state_dict(),
            "arch_optimizer": self.arch_opt.state_dict(),
            "weight_scheduler": self.weight_sched.state_dict(),
            "rib": self.rib.state_dict() if self.rib is not None else {},
            "heldout_stream": self.heldout_stream.state_dict(),
            "rng": rngs, "accumulators": self.sums, "dcs_keep": self.dcs_keep,
            "best": self.best, "elapsed": self.elapsed + time.monotonic() - session_start,
            "metrics": self.log.metrics, "genotype_history": self.log.history,
        })

    # -- the steps

    def _weight_loss(self, out: dict, pids: torch.Tensor, index: torch.Tensor):
        """ID (label-smoothed CE) + triplet on the features, + RIB once its warm-up is over."""
        cfg = self.loss_cfg
        feat = out["feat"].float()
        id_loss = self.id_loss(out["logits"].float(), pids)
        tri = self.triplet(feat, pids)
        total = cfg.id * id_loss + cfg.triplet * tri
        rib_value = torch.zeros(())
        if self.rib_weight > 0:
            rib_value = self.rib(feat, pids, index.to(self.device))
            total = total + self.rib_weight * rib_value
        return total, {"id": id_loss, "triplet": tri, "rib": rib_value}

    def _arch_loss(self, out: dict, pids: torch.Tensor):
        """Triplet on the normalised BN features of held-out identities, + the cost term."""
        task = self.triplet(F.normalize(out["feat_bn"].float(), dim=1), pids)
        loss = task
        if self.cost is not None and self.cost.config.form != "none":
            loss = self.cost.loss(task, self.cost.expected(self.net))
        return task, loss

    def _weight_step(self, batch) -> dict[str, float]:
        try:
            return self.bilevel.weight_step(batch)
        except NonFiniteLoss as e:
            raise UserError(f"the weight loss became {e.value} at epoch {self.epoch + 1}, step "
                            f"{self.step + 1}; lower schedule.weights.lr (the last checkpoint in "
                            f"{self.out} is from before)") from None

    # -- epochs

    def _start_epoch(self) -> None:
        """Temperature and RIB clusters of a fresh epoch (a mid-epoch resume has both)."""
        self.net.set_temperature(self.space.sampling.tau.at_epoch(
            self.epoch, self.epochs, self.space.schedule.warmup_epochs))
        if self.rib is not None:
            broadcast_buffers(self.net, self.world)
            self.net.eval()
            feats = extract(self.net, self.split.weight, self.space.input_size, "feat", self.device,
                            batch_size=self.eval_batch, num_workers=self.num_workers,
                            world=self.world.size, rank=self.world.rank,
                            autocast=self.precision.autocast_dtype,
                            channels_last=self.precision.channels_last)
            self.net.train()
            labels = torch.tensor([pid for _, pid, _ in self.split.weight], device=self.device)
            self.rib.start_epoch(feats, labels)

    def _end_epoch(self, session_start: float) -> None:
        self.sums = all_reduce_sums(self.sums, self.world, self.device)
        self._update_dcs_keep()
        broadcast_buffers(self.net, self.world)
        self.net.eval()
        heldout = quick_eval(self.net, self.eval_split, self.space.input_size, self.device,
                             batch_size=self.eval_batch, num_workers=self.num_workers,
                             world=self.world.size, rank=self.world.rank,
                             autocast=self.precision.autocast_dtype,
                             channels_last=self.precision.channels_last)
        self.net.train()
        number = self.epoch + 1
        subnets = self.strategy.end_epoch(self, number)
        provenance = {"seed": self.seed, "epoch": number, "search_run": str(self.out)}
        genotype = derive_genotype(self.net, provenance=provenance)
        raw = derive_genotype(self.net, provenance=provenance, skip_cap=None)
        agree = True
        if self.world.size > 1:
            texts: list[Any] = [None] * self.world.size
            dist.all_gather_object(texts, genotype.to_json())
            agree = all(t == texts[0] for t in texts)
            if not agree:
                warnings.warn("DDP ranks derived different genotypes; rank 0's is kept", stacklevel=2)
        decisions = self._decision_report(genotype, scored=subnets is not None)
        decided = self.strategy.decided(subnets is not None)
        collapse = check_collapse(raw) if decided else None
        if collapse:
            warnings.warn(collapse, CollapseWarning, stacklevel=2)
        if heldout is not None and (self.best["mAP"] is None or heldout["mAP"] > self.best["mAP"]):
            self.best = {"mAP": heldout["mAP"], "R1": heldout["R1"], "epoch": number}
        s = self.sums
        n, na = max(s["steps"], 1.0), s["arch_steps"]
        rib = None
        if self.rib is not None:
            rib = {"weight": self.rib_weight, **self.rib.estimates()}
        record = {
            "epoch": number, "epochs": self.epochs, "step": self.step,
            "time": round(self.elapsed + time.monotonic() - session_start, 3),
            "lr": {"weights": self.weight_opt.param_groups[0]["lr"],
                   "arch": self.arch_opt.param_groups[0]["lr"]},
            "tau": self.net.temperature, "arch_updates": self.arch_on,
            "loss": {"weights": {k: s[k] / n for k in ("total", "id", "triplet", "rib")},
                     "arch": {"triplet": s["arch_triplet"] / na,
                              "total": s.get("arch_total", s["arch_triplet"]) / na} if na else None},
            "rib": rib, "heldout": heldout,
            "arch_probs": {pos: [[round(v, 6) for v in row] for row in p.tolist()]
                           for pos, p in self.net.arch_probabilities().items()},
            "backbone_probs": {k: [round(v, 6) for v in p.tolist()]
                               for k, p in self.net.backbone_probabilities().items()},
            "backbone": genotype.backbone.summary(), "cost": self._cost_record(genotype),
            "genotype": genotype.summary(), "op_counts": genotype.op_counts(),
            "collapse": {**collapse_report(raw).as_dict(), "warning": collapse is not None},
            "decisions": decisions.as_dict(), "dcs_keep": self.dcs_keep, "best": self.best,
            "ddp": {"world_size": self.world.size, "genotypes_agree": agree},
            "subnets": subnets,
        }
        edges = {pos: cell.edge_list for pos, cell in self.net.cells.items()}
        self.log.epoch(record, genotype.to_dict(), self.space.labels, edges)
        if self.progress:
            h = (f"held-out mAP {100 * heldout['mAP']:.1f} R1 {100 * heldout['R1']:.1f}  "
                 if heldout else "")
            c = record["cost"]
            cost = ("" if not c else f"MFLOPs {c['achieved']:.2f}  " if c["unit"] == "MFLOPs"
                    else f"latency {c['achieved']:.3f} {c['unit']}  ")
            arch = (("" if not self.strategy.temperature else f"tau {self.net.temperature:.2f}  ")
                    + (genotype.summary() if decided else "architecture: not chosen yet"))
            loss = f"loss {s['total'] / n:.3f}" if s["steps"] else "no training step"
            tqdm.write(f"epoch {number}/{self.epochs}  {loss}  {h}{cost}{arch}",
                       file=sys.stderr)
            if subnets is not None:
                tqdm.write(f"  {scored_line(subnets)}", file=sys.stderr)
            if genotype.backbone.mobile is not None:
                tqdm.write(f"  backbone {genotype.backbone.mobile.summary()}", file=sys.stderr)
            if collapse:
                tqdm.write(f"warning: {collapse}", file=sys.stderr)
        with warnings.catch_warnings():  # a session resumed at an epoch's end has not stepped
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.weight_sched.step()
        self.epoch, self.batch, self.sums = number, 0, self._zero_sums()
        self._checkpoint(session_start)

    def _cost_record(self, genotype: Genotype) -> dict[str, Any] | None:
        if self.cost is None:
            return None
        c = self.cost.config
        with torch.no_grad():
            expected = float(self.cost.expected(self.net))
        record = {"form": c.form, "metric": c.metric, "unit": c.unit_name, "target": c.target,
                  "expected": round(expected, 6), "achieved": round(self.cost.achieved(genotype), 6)}
        if self.latency_table is not None:
            record["device"] = self.latency_table.device
        return record

    @property
    def arch_on(self) -> bool:
        return self.strategy.arch_updates(self.epoch)

    @property
    def rib_weight(self) -> float:
        return self.rib.weight_at(self.epoch, self.epochs) if self.rib is not None else 0.0

    # -- the whole search

    # -- the hooks of ResumableRun (run() is the shared skeleton)

    kind = "search"
    own_files = (HISTORY_FILE, LATENCY_FILE, GENOTYPE_FILE, CELLS_PICTURE, PROBS_PICTURE,
                 SUBNETS_FILE)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT

    def _write_run_files(self) -> None:
        if self.latency_table is not None:
            self.latency_table.save(self.out / LATENCY_FILE)

    def _open_log(self) -> RunLog:
        return RunLog(self.out, enabled=self.is_main, metrics=self.metrics_lines,
                      history=self.history_lines,
                      purge_step=self.step + 1 if self.ckpt is not None else None)

    def _prepare(self) -> None:
        if self.rib is not None:
            say(self.progress, f"set-up: fitting the RIB's input clusters on the "
                               f"{len(self.split.weight):,} weight-share images ...")
            self.rib.fit_on_images(self.split.weight, self.space.input_size,
                                   batch_size=self.eval_batch, num_workers=self.num_workers,
                                   device=self.device)

    @property
    def _stream(self) -> BatchStream | NoSteps:
        return self.weight_stream if self.strategy.trains_weights else NoSteps()

    def _train_step(self, batch) -> tuple[Any, dict[str, str]]:
        losses = self._weight_step(batch)
        arch = self.bilevel.arch_step(self.heldout_stream.next()) if self.arch_on else None
        self._accumulate(losses, arch)
        return (losses, arch), {"loss": f"{losses['total']:.3f}",
                                "arch": f"{arch['triplet']:.3f}" if arch else "-",
                                "tau": f"{self.net.temperature:.2f}"}

    def _log_step(self, info, seconds: float) -> None:
        losses, arch = info
        self.log.step({"epoch": self.epoch + 1, "step": self.step, "time": round(seconds, 3),
                       "lr": {"weights": self.weight_opt.param_groups[0]["lr"]},
                       "tau": self.net.temperature, "loss": {"weights": losses, "arch": arch}})

    def _before_save(self) -> None:
        self._update_dcs_keep()

    def _accumulate(self, losses: dict[str, float], arch: dict[str, float] | None) -> None:
        s = self.sums
        s["steps"] += 1
        for k in ("total", "id", "triplet", "rib"):
            s[k] += losses[k]
        if arch is not None:
            s["arch_steps"] += 1
            s["arch_triplet"] += arch["triplet"]
            s["arch_total"] = s.get("arch_total", 0.0) + arch["total"]

    def _update_dcs_keep(self) -> None:
        """Keep ratio of each DCS op's last training forward, in module order; an op that has not
        run since this session started keeps its value of the checkpoint (a mid-epoch resume
        reports what an uninterrupted run does)."""
        now = dcs_keep_ratios(self.net)
        keep = {k: v if math.isfinite(v) else self.dcs_keep.get(k) for k, v in now.items()}
        self.dcs_keep = {k: v for k, v in keep.items() if v is not None}

    def _finish(self, session_start: float) -> None:
        """The final genotype and pictures, then the finished checkpoint."""
        genotype = self._last_genotype()
        if self.is_main:
            from nas_reid.viz.genotype_plots import plot_arch_probabilities, plot_cells

            genotype.save(self.out / GENOTYPE_FILE)
            plot_cells(genotype, self.out / CELLS_PICTURE)
            plot_arch_probabilities(genotype, self.out / PROBS_PICTURE)
        self.finished = True
        self._checkpoint(session_start)

    def _schedules(self) -> dict[str, Any]:
        schedules: dict[str, Any] = {}
        if self.strategy.temperature:
            tau, warmup = self.space.sampling.tau, self.space.schedule.warmup_epochs
            schedules["temperature"] = lambda e, n: tau.at_epoch(e, n, warmup)
        w = self.space.schedule.weights
        if w.lr_schedule == "cosine":
            schedules["weights lr"] = lambda e, n: _cosine(w.lr, w.lr_min, e, n)
        if self.rib is not None:
            schedules["RIB weight"] = self.rib.weight_at
        return schedules

    def _follow_new_total(self) -> None:
        sched = self.weight_sched
        if isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR):
            sched.T_max = self.epochs  # the next steps go on from this epoch's new value
            lrs = [_cosine(base, sched.eta_min, sched.last_epoch, self.epochs)
                   for base in sched.base_lrs]
            for group, lr in zip(self.weight_opt.param_groups, lrs):
                group["lr"] = lr
            sched._last_lr = lrs
        if self.batch > 0:  # the rest of a part-done epoch
            self.net.set_temperature(self.space.sampling.tau.at_epoch(
                self.epoch, self.epochs, self.space.schedule.warmup_epochs))

    def _set_epochs_in_config(self, change: dict[str, Any] | None) -> None:
        self.config["space"]["schedule"]["epochs"] = self.config["search"]["epochs"] = self.epochs
        if change is not None:
            self.config["search"].setdefault("epochs_changed", []).append(change)

    def _decision_report(self, new: Genotype | None = None, *,
                         scored: bool = False) -> DecisionReport | None:
        """The strategy's decisions over the genotype history, ``new`` (this epoch's genotype,
        not yet in the log) appended first; ``scored``: the strategy's ``end_epoch`` chose the
        architecture this epoch (without ``new``: the search is finished)."""
        if self._genotypes is None:
            self._genotypes = [Genotype.from_dict(json.loads(line), where="genotype history")
                               for line in (self.log.history if self.log is not None else [])]
        if new is not None:
            self._genotypes.append(new)
        return self.strategy.decisions(self._genotypes, scored or (new is None and self.finished))

    def _last_genotype(self) -> Genotype | None:
        if not self.log.history:
            return None
        return Genotype.from_dict(json.loads(self.log.history[-1]), where="genotype history")

    def _result(self) -> SearchResult:
        return SearchResult(
            out_dir=self.out, finished=self.finished, genotype=self._last_genotype(),
            genotype_path=self.out / GENOTYPE_FILE if self.finished else None,
            epochs=self.epochs, epochs_done=self.epoch, steps=self.step, best=dict(self.best),
            arch_parameters={name.removeprefix("arch."): p.detach().cpu().clone()
                             for name, p in self.net.named_arch_parameters()},
            metrics=[r for r in map(json.loads, self.log.metrics) if r["kind"] == "epoch"],
            decisions=self._decision_report())


def _constant(epoch: int) -> float:
    return 1.0


def _cosine(lr: float, lr_min: float, epoch: int, epochs: int) -> float:
    """The cosine schedule's learning rate of 0-based ``epoch`` out of ``epochs``."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2
