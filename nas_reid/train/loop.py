"""Retraining a genotype from scratch: the discrete network, the recipe, a run folder.

Contract of :func:`retrain`: builds :func:`~nas_reid.space.discrete.build_model` of the genotype
alone (backbone random, or from a local weights file), trains it on a dataset's training
identities with a :class:`~nas_reid.train.recipe.Recipe`, evaluates on query / gallery every
``eval.every`` epochs and at the end, and writes ``config.yaml``, ``genotype.json``,
``metrics.jsonl``, ``tensorboard/``, ``checkpoints/{last,best}.pt`` and ``results.json`` (the
*last* model's evaluation: ``best.pt`` is chosen on the test split, so its figure is optimistic
and reported apart). ``resume=True`` ends with the same weights as an uninterrupted run (CPU;
CUDA with ``deterministic: true``). bf16 autocast and channels_last on CUDA
(:mod:`nas_reid.engine.precision`); under ``torchrun`` each rank trains on a disjoint share of
every PK batch and only rank 0 evaluates and writes. The files, the epoch record and the
resume, precision and DDP details: docs/training.md, section `nas_reid.train.loop`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from nas_reid import __version__
from nas_reid.data import ReIDDataset, resolve_dataset
from nas_reid.data.streams import BatchStream
from nas_reid.data.transforms import build_transforms
from nas_reid.errors import UserError
from nas_reid.evaluation.evaluate import EvaluationResult, evaluate_model, write_results
from nas_reid.evaluation.features import extract
from nas_reid.engine.feedback import announce_data, run_folder_lines, say
from nas_reid.space.genotype import Genotype
from nas_reid.losses import CenterLoss, CrossEntropyLabelSmooth, RIBLoss, TripletLoss
from nas_reid.engine.precision import Precision
from nas_reid.engine.resumable import ResumableRun, check_new_total, inspect_run_folder
from nas_reid.engine.runlog import MetricsLog
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
from nas_reid.space.discrete import ReIDNet, build_model
from nas_reid.space.reference import REFERENCES, resolve_genotype
from nas_reid.train.checkpoint import (
    BEST,
    LAST,
    ModelCheckpointError,
    model_state,
    read_checkpoint,
    save_model_checkpoint,
)
from nas_reid.train.pretrain import file_sha256, resolve_backbone_weights
from nas_reid.train.recipe import (
    Recipe,
    default_recipe,
    load_recipe,
    merge,
    parse_overrides,
    scaled_to,
)

GENOTYPE_FILE = "genotype.json"
RESULTS_FILE = "results.json"
TRAIN_STREAM = 2
CONFIG_KEYS = {"recipe": dict, "data.name": str, "data.root": str, "train": dict,
               "reference": (str, type(None))}
"""What a retrain's config.yaml must hold for ``--resume`` to start it again from it."""


@dataclass
class TrainResult:
    """What :func:`retrain` returns (on every DDP rank)."""

    out_dir: Path
    finished: bool
    """False when stopped early by ``max_steps`` (``resume=True`` continues)."""
    genotype: Genotype
    epochs: int
    epochs_done: int
    steps: int
    num_parameters: int
    results: dict[str, Any] | None
    """The final evaluation (``results.json``) when finished."""
    best: dict[str, Any]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    """The epoch records of metrics.jsonl."""


def retrain(genotype: Genotype | str | os.PathLike | None = None,
            data: ReIDDataset | str | None = None, *,
            recipe: str | os.PathLike | Mapping[str, Any] | Recipe | None = None,
            overrides: Mapping[str, Any] | Sequence[str] | None = None,
            out_dir: str | os.PathLike | None = None,
            epochs: int | None = None,
            seed: int | None = None,
            device: str | torch.device = "cpu",
            resume: bool = False,
            progress: bool = True,
            root: str | os.PathLike | None = None,
            num_workers: int = 0,
            backbone_weights: str | os.PathLike | None = None,
            rerank: bool = False,
            checkpoint_every: int = 0,
            log_every: int = 0,
            max_steps: int | None = None,
            on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train the network of ``genotype`` on ``data``; write the run folder ``out_dir``.

    Args:
        genotype: a :class:`Genotype`, a genotype JSON path, a search run folder, or a shipped
            reference name (``baseline``, ``rga_s``, ``rga_c``, ``rga_sc``, ``rib_dcs``,
            ``rib_ca``; their recipe overrides, e.g. the RIB loss, are applied under
            ``overrides``). With ``resume``, default the run's own.
        data: a :class:`ReIDDataset` or a dataset name (with ``root``); default ``synthreid``.
        recipe: a recipe name, YAML path, dict or :class:`Recipe`; default ``synthetic`` on
            the built-in benchmark and ``bot`` otherwise, ``mobile_synthetic`` / ``mobile``
            for a mobile backbone (:func:`~nas_reid.train.recipe.default_recipe`; the run's own
            with ``resume``).
        overrides: recipe overrides, ``{"loss": {"rib": 0.1}}`` or ``["loss.rib=0.1"]``.
        epochs, seed: override the recipe's; ``epochs`` scales the recipe's warm-up and step
            milestones with it (:func:`~nas_reid.train.recipe.scaled_to`, said on stderr with
            ``progress``) unless ``overrides`` sets them. With ``resume``, ``epochs`` is a new
            total (at least the epochs begun), followed by every schedule from where the run
            resumes (:mod:`nas_reid.engine.resumable`).
        device: ``cpu`` or ``cuda`` (``cuda:<local rank>`` under torchrun).
        resume: continue ``out_dir/checkpoints/last.pt`` (a finished run is returned as is;
            one without a checkpoint starts again from its ``config.yaml``). Without it,
            ``out_dir`` must be new or empty or hold a retrain that stopped before its first
            checkpoint (started again).
        backbone_weights: a local torchvision state_dict file for the backbone (ImageNet).
        rerank: the final evaluation also reports k-reciprocal re-ranking.
        checkpoint_every: also checkpoint every this many steps (0: once per epoch).
        log_every: also write a step record every this many steps (0: never).
        max_steps: stop after this many steps in total, checkpointed, as if interrupted.
        on_epoch: called on rank 0 after each epoch's record and checkpoint with the epoch
            record as logged; an exception it raises stops the run with the checkpoint in
            place, resumable.

    Raises :class:`UserError` (before anything is written) for a bad genotype, recipe,
    dataset, device or run folder.
    """
    world = join_world(device_type(device))
    try:
        dev = resolve_device(device, world.local_rank)
        run = _Retrain(genotype, data, recipe=recipe, overrides=overrides, out_dir=out_dir,
                       epochs=epochs, seed=seed, device=dev, resume=resume, progress=progress,
                       root=root, num_workers=num_workers, backbone_weights=backbone_weights,
                       rerank=rerank, checkpoint_every=checkpoint_every, log_every=log_every,
                       max_steps=max_steps, world=world, on_epoch=on_epoch)
        with deterministic(dev) if run.recipe.deterministic else nullcontext():
            return run.run()
    finally:
        if world.owns_group:
            dist.destroy_process_group()


class _Retrain(ResumableRun):
    """One retrain session (fresh or resumed); :meth:`run` does the work."""

    def __init__(self, genotype, data, *, recipe, overrides, out_dir, epochs, seed, device,
                 resume, progress, root, num_workers, backbone_weights, rerank,
                 checkpoint_every, log_every, max_steps, world: World,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.world, self.device = world, device
        self.on_epoch = on_epoch
        self.is_main = world.rank == 0
        self.progress = progress and self.is_main
        self.num_workers, self.max_steps = int(num_workers), max_steps
        self.checkpoint_every, self.log_every = int(checkpoint_every), int(log_every)
        self.rerank = bool(rerank)
        self.notes: list[str] = []
        """What the set-up changed and says on stderr once nothing can fail any more."""

        # -- the run folder: decide everything before writing anything
        if out_dir is None:
            if resume:
                raise UserError("--resume needs --out: the run folder to continue")
            name = [f"runs/retrain-{datetime.now():%Y%m%d-%H%M%S}"]
            if world.size > 1:
                dist.broadcast_object_list(name, src=0)
            out_dir = name[0]
        self.out = Path(out_dir).expanduser()
        folder = inspect_run_folder(self.out, self.kind, resume=resume, checkpoint=LAST,
                                    finished=("results", RESULTS_FILE), config_keys=CONFIG_KEYS)
        ckpt = None
        if folder.state in ("finished", "unfinished"):
            try:
                ckpt = read_checkpoint(self.out / LAST)
            except ModelCheckpointError as exc:
                raise UserError(f"--resume: {exc}") from None
            if "training" not in ckpt:
                raise UserError(f"--resume: {self.out / LAST} holds no training state")
            if epochs is not None:
                t = ckpt["training"]
                check_new_total(epochs, (t["epoch"], t["batch"]), self.kind, self.out)
        self.ckpt, self.restart = ckpt, folder.restart
        saved = ckpt["training"]["config"] if ckpt is not None else folder.config

        # -- the genotype
        reference = None
        if saved is not None:
            if genotype is not None:
                raise UserError("--resume continues the run's own genotype; leave out --genotype")
            if ckpt is not None:
                self.genotype = Genotype.from_json(ckpt["genotype"])
            elif (self.out / GENOTYPE_FILE).is_file():
                self.genotype = Genotype.from_json(self.out / GENOTYPE_FILE)
            else:
                raise UserError(f"--resume: {self.out} stopped before writing its "
                                f"{GENOTYPE_FILE}; run the retrain again without --resume")
            reference = saved["reference"]
            recorded = saved["train"].get("backbone_weights")  # {"spec", "file", "sha256"}
            backbone_weights = recorded.get("spec") if isinstance(recorded, Mapping) else recorded
        elif isinstance(genotype, Genotype):
            self.genotype = genotype
        elif genotype is None:
            raise UserError("--genotype is required: a genotype.json, a search run folder, or a "
                            "reference name")
        else:
            self.genotype, reference = resolve_genotype(genotype)
        self.reference = reference

        # -- the data and the recipe
        announce_data(self.progress, data, root, saved["data"] if saved is not None else None)
        ds = resolve_dataset(data, root, saved["data"] if saved is not None else None)
        self.data_ref = {"name": ds.name, "root": str(ds.root)}
        self.dataset = ds
        if saved is not None:
            if self.data_ref != saved["data"]:
                raise UserError(f"--resume: the run in {self.out} trained on {saved['data']}, "
                                f"not {self.data_ref}")
            if recipe is not None or overrides or seed is not None:
                raise UserError("--resume continues the run's own recipe; leave out --recipe, "
                                "--set and --seed (--epochs may change its total)")
            self.recipe = load_recipe(saved["recipe"],
                                      None if epochs is None else {"epochs": epochs})
        else:
            if recipe is None:
                recipe = default_recipe(ds.name, self.genotype.backbone.name)
            extra: dict[str, Any] = {}
            if reference is not None:
                extra = merge(extra, REFERENCES[reference].recipe_overrides)
            if overrides:
                extra = merge(extra, overrides if isinstance(overrides, Mapping)
                              else parse_overrides(list(overrides)))
            if epochs is not None:
                extra = merge(extra, self._epochs_overrides(recipe, extra, epochs))
            if seed is not None:
                extra["seed"] = seed
            self.recipe = load_recipe(recipe, extra or None)
        r = self.recipe
        self.epochs, self.seed = r.epochs, r.seed
        self.num_classes = ds.num_train_pids
        if self.num_classes < r.batch.p:
            raise UserError(f"the training split of {ds.name} has {self.num_classes} identities; "
                            f"the recipe's PK batch needs P={r.batch.p}")
        h, w = self.genotype.input_size
        transform = build_transforms(h, w, train=True, flip_p=r.augment.flip,
                                     pad=r.augment.pad_for(h), erasing_p=r.augment.random_erasing)
        self.stream = BatchStream(ds.train, (h, w), p=r.batch.p, k=r.batch.k, seed=self.seed,
                                  stream=TRAIN_STREAM, num_replicas=world.size, rank=world.rank,
                                  num_workers=self.num_workers, pin_memory=device.type == "cuda",
                                  transform=transform)
        if self.stream.batches_in(0) == 0:
            raise UserError(f"the training split gives no PK batch of P={r.batch.p} x K={r.batch.k} "
                            f"per rank with {world.size} rank(s); lower batch.p")
        self.precision = Precision.resolve(r.precision, device)
        self.eval_batch = 256 if device.type == "cuda" else 128

        # -- the model, losses and optimizers (seeded: the same seed builds the same network)
        weights_file = self.weights_info = None
        if ckpt is None:  # a resumed run has its own weights
            spec = backbone_weights if backbone_weights is not None else r.backbone.weights
            weights_file = resolve_backbone_weights(
                spec, self.genotype.backbone.name, self.genotype.input_size,
                self.genotype.backbone.last_stride, device=device, progress=self.progress,
                may_train=world.size == 1, log=self._say)
            known = weights_file is not None and weights_file.is_file()  # else the load says why
            self.weights_info = {"spec": None if spec is None else str(spec),
                                 "file": str(weights_file) if known else None,
                                 "sha256": file_sha256(weights_file) if known else None}
        seed_all(self.seed)
        self.net: ReIDNet = build_model(self.genotype, self.num_classes,
                                        backbone_weights=weights_file).to(device)
        self.net = self.precision.model(self.net)
        self.params = [q for q in self.net.parameters() if q.requires_grad]
        o = r.optimizer
        groups: list = self.params
        if o.new_lr_mult != 1.0:  # the backbone at lr, the cells and the head at new_lr_mult x lr
            backbone = {id(q) for q in self.net.backbone.parameters()}
            groups = [{"params": [q for q in self.params if id(q) in backbone]},
                      {"params": [q for q in self.params if id(q) not in backbone],
                       "lr": o.lr * o.new_lr_mult}]
        self.opt = build_optimizer(groups, o)
        schedule = r.lr_schedule
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda e: schedule.factor(e, self.epochs))
        loss = r.loss
        self.id_loss = CrossEntropyLabelSmooth(self.num_classes, loss.label_smoothing)
        self.triplet = TripletLoss(loss.triplet_margin)
        self.center = self.center_opt = None
        if loss.center > 0:
            self.center = CenterLoss(self.num_classes, self.net.backbone.out_channels).to(device)
            self.center_opt = torch.optim.SGD(self.center.parameters(), lr=loss.center_lr)
        self.rib = (RIBLoss(self.num_classes, weight=loss.rib, warmup_ratio=loss.rib_warmup,
                            beta=loss.rib_beta, seed=self.seed).to(device) if loss.rib > 0 else None)
        self.model: nn.Module = self.net
        if world.size > 1:
            self.model = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None)

        # -- the position
        self.epoch, self.batch, self.step = 0, 0, 0
        self.finished = False
        self.best: dict[str, Any] = {"mAP": None, "R1": None, "epoch": None}
        self.last_eval: dict[str, Any] | None = None
        self.last_result: EvaluationResult | None = None  # this session's evaluation of the last epoch
        self.last_evaluated = False
        self.results: dict[str, Any] | None = None
        self.elapsed = 0.0
        self.sums = self._zero_sums()
        metrics: list[str] = []
        if ckpt is not None:
            metrics = self._restore(ckpt)
        else:
            seed_all(derived_seed(self.seed, world.rank, 3))
        self.metrics_lines = metrics
        self.config = saved if saved is not None else {
            "genotype": {"source": str(genotype) if not isinstance(genotype, Genotype) else None,
                         "reference": reference, "summary": self.genotype.summary()},
            "reference": reference,
            "recipe": r.resolved(),
            "data": self.data_ref,
            "train": {"device": str(device), "world_size": world.size,
                      "num_workers": self.num_workers, "threads": torch.get_num_threads(),
                      **self.precision.as_dict(),
                      "backbone_weights": self.weights_info,
                      "num_classes": self.num_classes, "parameters": self.net.num_parameters(),
                      "out_dir": str(self.out), "package_version": __version__,
                      "torch_version": str(torch.__version__)},
        }
        if ckpt is not None and ckpt["training"]["config"]["recipe"]["epochs"] != self.epochs:
            self._change_epochs(ckpt["training"]["config"]["recipe"]["epochs"])
        elif saved is not None:
            self._set_epochs_in_config(None)  # a restart from config.yaml may have --epochs
        for line in [*self.notes, *run_folder_lines(
                self.out, "retrain", self.epoch if ckpt is not None else None, self.epochs)]:
            say(self.progress, line)

    # -- helpers

    def _say(self, text: str) -> None:
        if self.is_main:
            tqdm.write(text, file=sys.stderr)

    def _epochs_overrides(self, recipe: Any, extra: dict[str, Any], epochs: int) -> dict[str, Any]:
        """``--epochs``: the recipe's schedule scaled to them (:func:`scaled_to`; what changes
        is kept in ``notes``, said once the run is set up); the plain ``epochs`` override when
        the recipe does not load without it (its error comes from loading it with it)."""
        try:
            base = load_recipe(recipe, extra or None)
        except UserError:
            return {"epochs": epochs}
        scaled, note = scaled_to(base, epochs, keep=extra)
        if note:
            self.notes.append(note)
        return scaled

    @staticmethod
    def _zero_sums() -> dict[str, float]:
        return {"steps": 0.0, "images": 0.0, "seconds": 0.0, "total": 0.0, "id": 0.0,
                "triplet": 0.0, "center": 0.0, "rib": 0.0}

    def _restore(self, ckpt: dict) -> list[str]:
        t = ckpt["training"]
        self.net.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(t["optimizer"])
        self.sched.load_state_dict(t["scheduler"])
        if self.center is not None:
            self.center.load_state_dict(t["center"])
            self.center_opt.load_state_dict(t["center_optimizer"])
        if self.rib is not None:
            self.rib.load_state_dict(t["rib"])
        self.epoch, self.batch, self.step = t["epoch"], t["batch"], t["step"]
        self.finished = bool(t["finished"])
        self.best, self.elapsed = dict(t["best"]), float(t["elapsed"])
        self.last_eval = t["last_eval"]
        self.sums = dict(t["accumulators"])
        restore_rng_states(t["rng"], self.world, what="the retrain",
                           reseed=derived_seed(self.seed, self.world.rank, 4, self.step))
        return list(t["metrics"])

    def _model_state(self, **extra: Any) -> dict[str, Any]:
        return model_state(self.net, num_classes=self.num_classes, epoch=self.epoch,
                           data=self.data_ref, metrics=self.last_eval, **extra)

    def _save(self, session_start: float) -> None:
        rngs = gather_rng_states(self.world)  # a collective: every rank calls it
        if not self.is_main:
            return
        training = {
            "config": self.config, "epoch": self.epoch, "batch": self.batch, "step": self.step,
            "finished": self.finished, "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "center": self.center.state_dict() if self.center is not None else {},
            "center_optimizer": self.center_opt.state_dict() if self.center_opt is not None else {},
            "rib": self.rib.state_dict() if self.rib is not None else {},
            "rng": rngs, "accumulators": self.sums, "best": self.best,
            "last_eval": self.last_eval,
            "elapsed": self.elapsed + time.monotonic() - session_start,
            "metrics": self.log.metrics,
        }
        save_model_checkpoint(self.out / LAST, self._model_state(training=training))

    # -- a step

    def _step(self, batch) -> dict[str, float]:
        imgs, pids, _, index = batch
        imgs = self.precision.images(imgs.to(self.device, non_blocking=True))
        pids = pids.to(self.device)
        cfg = self.recipe.loss
        with self.precision.autocast(self.device.type):
            out = self.model(imgs)
        feat = out["feat"].float()
        id_loss = self.id_loss(out["logits"].float(), pids)
        tri = self.triplet(feat, pids)
        total = cfg.id * id_loss + cfg.triplet * tri
        center = torch.zeros((), device=self.device)
        if self.center is not None:
            center = self.center(feat, pids)
            total = total + cfg.center * center
        rib_value = torch.zeros((), device=self.device)
        rib_weight = self.rib_weight
        if rib_weight > 0:
            rib_value = self.rib(feat, pids, index.to(self.device))
            total = total + rib_weight * rib_value
        if not torch.isfinite(total):
            raise UserError(f"the training loss became {total.item()} at epoch {self.epoch + 1}, "
                            f"step {self.step + 1}; lower optimizer.lr (the last checkpoint in "
                            f"{self.out} is from before)")
        self.opt.zero_grad(set_to_none=True)
        if self.center_opt is not None:
            self.center_opt.zero_grad(set_to_none=True)
        total.backward()
        if self.recipe.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.params, self.recipe.grad_clip)
        self.opt.step()
        if self.center is not None:
            if self.world.size > 1:  # the centres are not in DDP: average their gradients here
                dist.all_reduce(self.center.centers.grad)
                self.center.centers.grad /= self.world.size
            # BoT: the centres' SGD sees the center loss's gradient without its weight
            self.center.centers.grad /= cfg.center
            self.center_opt.step()
        return {"total": total.item(), "id": id_loss.item(), "triplet": tri.item(),
                "center": center.item(), "rib": rib_value.item()}

    @property
    def rib_weight(self) -> float:
        return self.rib.weight_at(self.epoch, self.epochs) if self.rib is not None else 0.0

    # -- epochs

    def _start_epoch(self) -> None:
        if self.rib is not None:
            broadcast_buffers(self.net, self.world)
            self.net.eval()
            h, w = self.genotype.input_size
            feats = extract(self.net, self.dataset.train, (h, w), "feat", self.device,
                            batch_size=self.eval_batch, num_workers=self.num_workers,
                            world=self.world.size, rank=self.world.rank,
                            autocast=self.precision.autocast_dtype,
                            channels_last=self.precision.channels_last)
            self.net.train()
            labels = torch.tensor([pid for _, pid, _ in self.dataset.train], device=self.device)
            self.rib.start_epoch(feats.float(), labels)

    def _evaluate(self, *, final: bool) -> EvaluationResult | None:
        """Rank 0 evaluates the bare network on query / gallery; the others wait."""
        broadcast_buffers(self.net, self.world)
        result = None
        if self.is_main:
            result = evaluate_model(
                self.net, self.dataset, device=self.device, flip=self.recipe.eval.flip,
                rerank=final and self.rerank, batch_size=self.eval_batch,
                num_workers=self.num_workers,
                autocast=self.precision.autocast_dtype, channels_last=self.precision.channels_last,
                keep_features=False)
        if self.world.size > 1:
            dist.barrier()
        self.net.train()
        return result

    def _due_eval(self, number: int) -> bool:
        every = self.recipe.eval.every
        return number == self.epochs or (every > 0 and number % every == 0)

    def _end_epoch(self, session_start: float) -> None:
        if self.world.size > 1:
            self.sums = all_reduce_sums(self.sums, self.world, self.device)
            self.sums["seconds"] /= self.world.size
        number = self.epoch + 1
        evaluation = None
        improved = False
        if self._due_eval(number):
            result = self._evaluate(final=False)
            if number == self.epochs:  # on every rank (None but on rank 0), so _finish agrees
                self.last_result, self.last_evaluated = result, True
            evaluation = dict(result.to_dict()["plain"]) if result is not None else None
            if self.world.size > 1:  # rank 0's figures to every rank (best, records agree)
                box = [evaluation]
                dist.broadcast_object_list(box, src=0)
                evaluation = box[0]
            if evaluation is not None:
                self.last_eval = {**evaluation, "epoch": number}
                if self.best["mAP"] is None or evaluation["mAP"] > self.best["mAP"]:
                    self.best = {"mAP": evaluation["mAP"], "R1": evaluation["R1"], "epoch": number}
                    improved = True
        s = self.sums
        n = max(s["steps"], 1.0)
        rib = {"weight": self.rib_weight, **self.rib.estimates()} if self.rib is not None else None
        peak = (torch.cuda.max_memory_allocated(self.device) / 2**20
                if self.device.type == "cuda" else None)
        record = {
            "kind": "epoch", "epoch": number, "epochs": self.epochs, "step": self.step,
            "time": round(self.elapsed + time.monotonic() - session_start, 3),
            "lr": self.opt.param_groups[0]["lr"],
            "loss": {k: s[k] / n for k in ("total", "id", "triplet", "center", "rib")},
            "rib": rib, "eval": evaluation, "best": self.best,
            "images_per_second": s["images"] / s["seconds"] if s["seconds"] > 0 else None,
            "peak_memory_mib": peak,
        }
        logged = self.log.add(record, tb_keys=("loss", "lr", "rib", "eval", "images_per_second",
                                               "peak_memory_mib"), step=self.step)
        self.log.flush()
        if self.progress:
            e = (f"  mAP {100 * evaluation['mAP']:.1f}  R1 {100 * evaluation['R1']:.1f}"
                 if evaluation else "")
            tqdm.write(f"epoch {number}/{self.epochs}  loss {s['total'] / n:.3f}  "
                       f"lr {self.opt.param_groups[0]['lr']:.2e}{e}", file=sys.stderr)
        with warnings.catch_warnings():  # a session resumed at an epoch's end has not stepped
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.sched.step()
        self.epoch, self.batch, self.sums = number, 0, self._zero_sums()
        if improved and self.is_main:
            save_model_checkpoint(self.out / BEST, self._model_state())
        self._checkpoint(session_start)
        if self.on_epoch is not None and self.is_main:
            self.on_epoch(logged)

    # -- a new total of epochs (ResumableRun._change_epochs)

    def _schedules(self) -> dict[str, Any]:
        schedule, base = self.recipe.lr_schedule, self.recipe.optimizer.lr
        schedules: dict[str, Any] = {"lr": lambda e, n: base * schedule.factor(e, n)}
        if self.rib is not None:
            schedules["RIB weight"] = self.rib.weight_at
        return schedules

    def _follow_new_total(self) -> None:
        factor, sched = self.recipe.lr_schedule.factor, self.sched
        lrs = [base * factor(sched.last_epoch, self.epochs) for base in sched.base_lrs]
        for group, lr in zip(self.opt.param_groups, lrs):
            group["lr"] = lr
        sched._last_lr = lrs

    def _set_epochs_in_config(self, change: dict[str, Any] | None) -> None:
        self.config["recipe"]["epochs"] = self.epochs
        if change is not None:
            self.config["train"].setdefault("epochs_changed", []).append(change)

    # -- the whole run

    # -- the hooks of ResumableRun (run() is the shared skeleton)

    kind = "retrain"
    own_files = (GENOTYPE_FILE, RESULTS_FILE)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / LAST

    def _write_run_files(self) -> None:
        self.genotype.save(self.out / GENOTYPE_FILE)

    def _open_log(self) -> MetricsLog:
        return MetricsLog(self.out, enabled=self.is_main, metrics=self.metrics_lines,
                          purge_step=self.step + 1 if self.ckpt is not None else None)

    def _prepare(self) -> None:
        if self.rib is not None:
            say(self.progress, f"set-up: fitting the RIB's input clusters on the "
                               f"{len(self.dataset.train):,} training images ...")
            self.rib.fit_on_images(self.dataset.train, self.genotype.input_size,
                                   batch_size=self.eval_batch, num_workers=self.num_workers,
                                   device=self.device)

    timed = True  # images_per_second

    @property
    def _stream(self) -> BatchStream:
        return self.stream

    def _train_step(self, batch) -> tuple[Any, dict[str, str]]:
        losses = self._step(batch)
        s = self.sums
        s["steps"] += 1
        s["images"] += len(batch[0])
        for k in ("total", "id", "triplet", "center", "rib"):
            s[k] += losses[k]
        return losses, {"loss": f"{losses['total']:.3f}"}

    def _log_step(self, losses, seconds: float) -> None:
        self.log.add({"kind": "step", "epoch": self.epoch + 1, "step": self.step,
                      "time": round(seconds, 3), "lr": self.opt.param_groups[0]["lr"],
                      "loss": losses}, tb_keys=("loss",), step=self.step, prefix="step/")

    def _finish(self, session_start: float) -> None:
        """The final evaluation (results.json), the best checkpoint if none, the last state."""
        result = self.last_result
        if not self.last_evaluated or self.rerank:  # the last epoch's evaluation serves unless re-ranking
            result = self._evaluate(final=True)
        self.finished = True
        if self.is_main:
            if not (self.out / BEST).is_file():
                save_model_checkpoint(self.out / BEST, self._model_state())
            extra = {"checkpoint": str(self.out / LAST), "genotype": self.genotype.summary(),
                     "reference": self.reference, "epochs": self.epochs,
                     "parameters": self.net.num_parameters(), "best": self.best,
                     "note": "the last model's evaluation; best.pt is selected on this split"}
            write_results(result, self.out / RESULTS_FILE, extra=extra)
            self.results = result.to_dict() | extra
        self._checkpoint(session_start)

    def _result(self) -> TrainResult:
        results = self.results
        if results is None and self.finished and (self.out / RESULTS_FILE).is_file():
            results = json.loads((self.out / RESULTS_FILE).read_text())
        return TrainResult(
            out_dir=self.out, finished=self.finished, genotype=self.genotype,
            epochs=self.epochs, epochs_done=self.epoch, steps=self.step,
            num_parameters=self.net.num_parameters(), results=results, best=dict(self.best),
            metrics=[r for r in map(json.loads, self.log.metrics)
                     if r["kind"] == "epoch"])
