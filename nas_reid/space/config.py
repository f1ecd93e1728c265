"""The search-space YAML: schema, validation, defaults and the canonical hash.

A search space is one YAML file (``search_spaces/*.yaml``) with ``name``, ``input``,
``backbone``, ``cells``, ``ops`` (the candidates of every edge, in order), ``sampling`` and
``schedule`` (everything has a default). Loading (:func:`load_space`) validates every field
(unknown fields are errors; op parameters are checked by building every candidate at every cell
position's ``(C, H, W)`` on the ``meta`` device) and raises one :class:`SpaceError` that names
the file and each bad field by its path (``ops[2].params.c_ratio``). The input height and width
must be multiples of the backbone's total stride (:func:`input_stride`).
:meth:`SearchSpace.canonical_hash` is the sha256 (first 16 hex digits) of what defines the
architecture space (not ``name``, op ``label``s, ``backbone.weights``, ``sampling`` or
``schedule``); a genotype records it. ``backbone.weights`` and ``schedule.cost.latency.table``
are resolved against the YAML file's folder when relative.
An example, the hash in detail and the YAML reader: docs/internals.md, section
`nas_reid.space.config`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from nas_reid.errors import UserError, unknown_field
from nas_reid.engine.precision import PrecisionConfig
from nas_reid.ops import OpError, available_ops, build_op, op_params
from nas_reid.space.mobile import MOBILE_BACKBONES, MobileConfig, mobile_stage_shapes

HASH_VERSION = 1
"""Bumped whenever the canonical form changes (it is part of what is hashed)."""

POSITIONS = ("layer1", "layer2", "layer3", "layer4")
_MAX_ERRORS = 10

RIB_BETA = 300.0
"""Default sharpness of RIB's soft cluster assignments. The authors' code uses 1, where the
assignments of unit vectors (squared distances in [0, 4]) to 150 clusters are nearly uniform and
the bound carries nothing: measured with bench/rib_sharpness.py on the built-in benchmark's
pretrained baseline (ResNet-18, 128x64, 20 epochs), I(F;Y) = 0.0000 nats at beta 1, 0.003 at
10, 0.03 at 30, 0.66 at 100, 4.50 at 300 and 4.73 at 1000 (ceiling log 150 = 5.01)."""

SYNTHETIC_WEIGHTS, NO_WEIGHTS = "synthetic", "none"
WEIGHT_NAMES = (SYNTHETIC_WEIGHTS, NO_WEIGHTS)
"""``backbone.weights`` values that name no file: the backbone pretrained on the synthetic
pretraining set (:func:`nas_reid.train.pretrain.resolve_backbone_weights`), and random
initialisation."""


class SpaceError(UserError):
    """A search-space file or dict that does not follow the schema."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ------------------------------------------------------------------------------ architecture


class InputConfig(_Model):
    """Input image size; the space (RGA in particular) is built for exactly this size."""

    height: int = Field(ge=16, le=4096)
    width: int = Field(ge=16, le=4096)


class BackboneConfig(_Model):
    """``name``: a fixed torchvision ResNet (``resnet50``, ``resnet18``) or the searchable
    ``mobilenetv2`` family, whose stages and choices are ``mobile``
    (:class:`~nas_reid.space.mobile.MobileConfig`; MobileNetV2's table when left out)."""

    name: Literal["resnet50", "resnet18", "mobilenetv2"]
    last_stride: Literal[1, 2] = 1
    weights: str | None = None
    """``synthetic`` (pretrained on the synthetic pretraining set, :mod:`nas_reid.train.pretrain`),
    ``none``, or a local torchvision state_dict (relative to the YAML file's folder)."""
    mobile: MobileConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_mobile(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") in MOBILE_BACKBONES and data.get("mobile") is None:
            return {**data, "mobile": MobileConfig()}
        return data

    @model_validator(mode="after")
    def _mobile_only(self) -> "BackboneConfig":
        if self.name not in MOBILE_BACKBONES and self.mobile is not None:
            raise ValueError(f"backbone.mobile: only a searchable backbone ({', '.join(MOBILE_BACKBONES)}) "
                             f"has stages and choices; {self.name} is fixed")
        if self.name in MOBILE_BACKBONES and self.weights is not None:
            raise ValueError(f"backbone.weights: {self.name} is searched and trained from scratch "
                             "(as the RIB paper's DNAS backbones); no weights file can be loaded")
        return self

    @property
    def searchable(self) -> bool:
        return self.mobile is not None


class CellsConfig(_Model):
    positions: list[Literal["layer1", "layer2", "layer3", "layer4"]] = Field(min_length=1)
    nodes: int = Field(default=1, ge=1, le=16)
    edges_per_node: int = Field(default=1, ge=1)

    @field_validator("positions")
    @classmethod
    def _ordered(cls, positions: list[str]) -> list[str]:
        for i, p in enumerate(positions):
            if p in positions[:i]:
                raise ValueError(f"[{i}]: {p!r} is listed twice")
        if list(positions) != sorted(positions, key=POSITIONS.index):
            raise ValueError(f"must be in network order (layer1 .. layer4), got {list(positions)}")
        return positions

    @model_validator(mode="after")
    def _edges(self) -> "CellsConfig":
        if self.edges_per_node > self.nodes:
            raise ValueError(
                f"cells.edges_per_node: {self.edges_per_node} is more than cells.nodes "
                f"({self.nodes}); node i has only i incoming edges")
        return self


def scalar_params(params: dict[str, Any]) -> dict[str, Any]:
    """Op parameters must be finite numbers, booleans or strings (a pydantic validator body)."""
    for key, value in params.items():
        if not isinstance(value, (bool, int, float, str)) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise ValueError(f".{key}: must be a number, bool or string, got {value!r}")
    return params


class OpSpec(_Model):
    """One candidate op: a registered op name, its parameters and an optional display label."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in available_ops():
            raise ValueError(f"unknown op {name!r}; known ops: {', '.join(available_ops())}")
        return name

    @field_validator("params")
    @classmethod
    def _scalars(cls, params: dict[str, Any]) -> dict[str, Any]:
        return scalar_params(params)

    @field_validator("label")
    @classmethod
    def _label(cls, label: str | None) -> str | None:
        if label is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", label):
            raise ValueError(f"must be letters, digits or _.+- only, got {label!r}")
        return label

    @property
    def display(self) -> str:
        """The label, or the op name when no label is given."""
        return self.label or self.name

    def full_params(self) -> dict[str, Any]:
        """All parameters of the op, defaults filled in, keys sorted (see :func:`canonical_params`)."""
        return canonical_params(self.name, self.params)


def input_stride(last_stride: int, stages: list[Any] | None = None) -> int:
    """Input pixels per pixel of the backbone's last feature map, per side: 16 x ``last_stride``
    for a ResNet (stem conv, max-pool, layer2 .. layer4); for a mobile backbone (its
    ``stages``) the stem conv's 2 times every stage's first stride."""
    if stages is None:
        return 16 * int(last_stride)
    from nas_reid.space.mobile import effective_stride

    stride = 2
    for stage in stages:
        stride *= effective_stride(stage, last_stride)
    return stride


def check_input_divides(height: int, width: int, stride: int, backbone: str,
                        last_stride: int) -> None:
    """Raise ``ValueError`` (a validator's message, field ``input``) unless the backbone's
    total ``stride`` divides the input size (every stage then halves it exactly)."""
    if height % stride or width % stride:
        def near(n: int) -> int:
            return max(stride, round(n / stride) * stride)

        raise ValueError(f"input: {height}x{width} is not divisible by {stride}, the total stride "
                         f"of {backbone} with last_stride {last_stride}; use multiples of "
                         f"{stride} (e.g. {near(height)}x{near(width)})")


def canonical_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of op ``name``: ``params`` over the defaults, keys sorted, an integer
    given for a float parameter written as a float (so ``tau: 1`` and ``tau: 1.0`` are one op)."""
    defaults = op_params(name)
    merged = {**defaults, **params}
    out = {}
    for key in sorted(merged):
        value, default = merged[key], defaults.get(key)
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out


class TauConfig(_Model):
    """Gumbel temperature over the search: ``start`` at progress 0, ``end`` at progress 1."""

    start: float = Field(default=10.0, gt=0)
    end: float = Field(default=0.1, gt=0)
    schedule: Literal["exponential", "linear", "constant"] = "linear"

    def at(self, progress: float) -> float:
        """Temperature at ``progress`` in [0, 1] (clipped); ``constant`` always gives ``start``."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.schedule == "constant":
            return self.start
        if self.schedule == "linear":
            return self.start + (self.end - self.start) * p
        return self.start * (self.end / self.start) ** p

    def at_epoch(self, epoch: int, epochs: int, warmup: int = 0) -> float:
        """Temperature of 0-based ``epoch`` of ``epochs``: ``start`` up to the first
        architecture epoch (``warmup``), ``end`` in the last (``epochs - 1``; a single
        architecture epoch is the last), :meth:`at` the epoch's share of the way between."""
        span = epochs - 1 - warmup
        if epoch < warmup:
            return self.at(0.0)
        return self.at(1.0 if span <= 0 else (epoch - warmup) / span)


MAX_SCORED_SUBNETS = 1000
"""The ``uniform`` strategy scores every sub-network after training; at most this many."""


class SamplingConfig(_Model):
    """``softmax``: DARTS (all candidates, weighted; tau unused). ``gumbel``: GDAS (one sampled).
    ``uniform``: SPOS (one drawn uniformly, alpha untrained; every sub-network scored at the end
    on the held-out identities, :mod:`nas_reid.search.subnets`; tau and ``schedule.arch``
    unused). ``bootstrap``: the resamples of the held-out queries behind ``uniform``'s choice."""

    strategy: Literal["softmax", "gumbel", "uniform"] = "gumbel"
    tau: TauConfig = Field(default_factory=TauConfig)
    bootstrap: int = Field(default=1000, ge=10, le=100000)


# ------------------------------------------------------------------------------ schedule


class BatchConfig(_Model):
    """PK batches: ``p`` identities times ``k`` images each."""

    p: int = Field(default=16, ge=2)
    k: int = Field(default=4, ge=2)


class OptimizerConfig(_Model):
    """The optimizer settings the search's weights and a retrain's recipe share (``momentum`` is
    SGD's, ``betas`` Adam's); each subclass names its optimizer (``kind``: ``sgd`` or ``adam``,
    from its own YAML field) and :func:`nas_reid.engine.optim.build_optimizer` builds it."""

    lr: float = Field(default=3.5e-4, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.999], min_length=2, max_length=2)

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        return _check_betas(betas)


class WeightOptimizerConfig(OptimizerConfig):
    """The supernet weights' optimizer (SGD 0.035 by default) and its learning-rate schedule."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.035, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    lr_min: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=5.0, gt=0)

    @property
    def kind(self) -> str:
        return self.optimizer


class ArchOptimizerConfig(_Model):
    """Adam on the architecture parameters; defaults from DARTS (3e-4, (0.5, 0.999), 1e-3)."""

    lr: float = Field(default=3e-4, gt=0)
    betas: list[float] = Field(default_factory=lambda: [0.5, 0.999], min_length=2, max_length=2)
    weight_decay: float = Field(default=1e-3, ge=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        return _check_betas(betas)


def _check_betas(betas: list[float]) -> list[float]:
    if not all(0 <= b < 1 for b in betas):
        raise ValueError(f"each beta must be in [0, 1), got {betas}")
    return betas


class LossConfig(_Model):
    """The loss terms the search and the retrain share: ID (label-smoothed CE) + triplet
    (batch-hard, ``triplet_margin``) + RIB (IBB, off for the first ``rib_warmup`` fraction of
    the epochs). ``rib_beta`` is the sharpness of the soft cluster assignments,
    softmax(-beta * ||v - c||^2) on unit vectors (:data:`RIB_BETA`). RIB is off (0) unless a
    recipe asks for it; the search's own default is :class:`SearchLossConfig`'s."""

    id: float = Field(default=1.0, ge=0)
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    triplet: float = Field(default=1.0, ge=0)
    triplet_margin: float = Field(default=0.3, ge=0)
    rib: float = Field(default=0.0, ge=0)
    rib_warmup: float = Field(default=0.3, ge=0, lt=1)
    rib_beta: float = Field(default=RIB_BETA, gt=0)

    @model_validator(mode="after")
    def _some_loss(self) -> "LossConfig":
        if self.id == 0 and self.triplet == 0:
            raise ValueError("loss: id and triplet are both 0; at least one must be > 0")
        return self


class SearchLossConfig(LossConfig):
    """The search's weight loss (``schedule.loss``): :class:`LossConfig` with RIB on at 0.1 by
    default, since the search is where the RIB paper applies it (it shapes the supernet's
    weights; the architecture step never sees it)."""

    rib: float = Field(default=0.1, ge=0)


class LatencyConfig(_Model):
    """How ``metric: latency`` gets its latency lookup table (:mod:`nas_reid.search.latency`):
    the ``table`` file given, else measured when the search starts, on ``device`` (default the
    search's), each block ``warmup`` times untimed then ``repeats`` times, batch ``batch``.
    Measured latencies vary between runs; a fixed ``table`` makes the search reproducible."""

    batch: int = Field(default=1, ge=1, le=4096)
    warmup: int = Field(default=10, ge=0, le=10000)
    repeats: int = Field(default=30, ge=1, le=10000)
    table: str | None = None
    """A table measured earlier (``nas-reid latency-table``), e.g. on the deployment GPU;
    relative paths are taken from the YAML file's folder."""
    device: str | None = Field(default=None, pattern=r"^(cpu|cuda(:[0-9]+)?)$")
    """Measure on this device (``cpu``, ``cuda``, ``cuda:N``) instead of the search's."""


COST_UNITS = {"flops": "MFLOPs", "latency": "ms"}
"""The unit of the cost, ``unit`` and ``target`` for each metric."""


class CostConfig(_Model):
    """The cost-aware search loss (see :mod:`nas_reid.search.cost`): the cost of the derived
    network is its FLOPs (``metric: flops``, in MFLOPs) or its latency from a lookup table of
    measured per-block latencies (``metric: latency``, in ms; ``latency`` says how the table is
    made). ``multiplicative`` is FBNet's ``task * alpha * log(cost / unit) ** beta``;
    ``additive`` is ``task + weight * max(0, cost / target - 1)``. ``target`` (in the metric's
    unit) is needed by ``additive`` and logged by both."""

    form: Literal["none", "multiplicative", "additive"] = "none"
    metric: Literal["flops", "latency"] = "flops"
    alpha: float = Field(default=0.2, gt=0)
    beta: float = Field(default=0.6, gt=0)
    unit: float = Field(default=1.0, gt=0)
    """MFLOPs (or ms) per unit of the cost inside the multiplicative form's log (FBNet's log is
    of milliseconds; a small CPU space needs a smaller unit for log(cost) to stay above 1)."""
    weight: float = Field(default=1.0, gt=0)
    target: float | None = Field(default=None, gt=0)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)

    @model_validator(mode="after")
    def _target(self) -> "CostConfig":
        if self.form == "additive" and self.target is None:
            raise ValueError("schedule.cost.target: the additive form penalises the cost above a "
                             f"target; give the target in {self.unit_name}")
        return self

    @property
    def unit_name(self) -> str:
        """``MFLOPs`` or ``ms``: the unit of the cost, ``unit`` and ``target``."""
        return COST_UNITS[self.metric]


class ScheduleConfig(_Model):
    """How the search runs. Not part of the canonical hash."""

    epochs: int = Field(default=50, ge=1)
    warmup_epochs: int = Field(default=10, ge=0)
    """Epochs that train only the weights before architecture updates start."""
    batch: BatchConfig = Field(default_factory=BatchConfig)
    weights: WeightOptimizerConfig = Field(default_factory=WeightOptimizerConfig)
    arch: ArchOptimizerConfig = Field(default_factory=ArchOptimizerConfig)
    heldout_fraction: float = Field(default=0.5, gt=0, lt=1)
    """Share of the training identities held out for the architecture step."""
    loss: SearchLossConfig = Field(default_factory=SearchLossConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    """The cost-aware term of the architecture step (off by default)."""
    skip_cap: int | None = Field(default=None, ge=0)
    """At most this many identity edges per derived cell (None: no cap)."""
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    """bf16 autocast and channels_last (``auto``: on CUDA only; :mod:`nas_reid.engine.precision`)."""
    seed: int = 0

    @model_validator(mode="after")
    def _warmup(self) -> "ScheduleConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs: {self.warmup_epochs} leaves no architecture epoch "
                f"(schedule.epochs is {self.epochs})")
        return self


# ------------------------------------------------------------------------------ the space


class SearchSpace(_Model):
    """A validated search space (see the module doc for the YAML)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    input: InputConfig
    backbone: BackboneConfig
    cells: CellsConfig
    ops: list[OpSpec] = Field(min_length=2)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    _source: str | None = PrivateAttr(default=None)

    @field_validator("ops", mode="before")
    @classmethod
    def _shorthand(cls, ops: Any) -> Any:
        if isinstance(ops, list):
            return [{"name": op} if isinstance(op, str) else op for op in ops]
        return ops

    @model_validator(mode="after")
    def _input_divides(self) -> "SearchSpace":
        bb = self.backbone
        check_input_divides(self.input.height, self.input.width,
                            input_stride(bb.last_stride, bb.mobile.stages if bb.mobile else None),
                            bb.name, bb.last_stride)
        return self

    @model_validator(mode="after")
    def _check_ops(self) -> "SearchSpace":
        if all(op.name == "zero" for op in self.ops):
            raise ValueError("ops: at least one candidate must be other than 'zero'")
        seen_labels: dict[str, int] = {}
        seen_ops: dict[str, int] = {}
        for i, op in enumerate(self.ops):
            if op.display in seen_labels:
                where = "label" if op.label else "name"
                raise ValueError(
                    f"ops[{i}].{where}: {op.display!r} is already the label of "
                    f"ops[{seen_labels[op.display]}]; give each candidate a unique label")
            seen_labels[op.display] = i
            key = json.dumps([op.name, op.full_params()], sort_keys=True)
            if key in seen_ops:
                raise ValueError(f"ops[{i}]: same op and parameters as ops[{seen_ops[key]}]")
            seen_ops[key] = i
        shapes = {f"{position}" + (f" width {c}" if len(options) > 1 else ""): (c, h, w)
                  for position, options in self.position_shape_options().items()
                  for c, h, w in options}
        for i, op in enumerate(self.ops):
            check_op(op.name, op.params, shapes, f"ops[{i}].params")
        return self

    @model_validator(mode="after")
    def _check_uniform(self) -> "SearchSpace":
        if self.sampling.strategy != "uniform":
            return self
        if self.backbone.searchable:
            raise ValueError("sampling.strategy: 'uniform' scores every sub-network after "
                             "training, which needs a fixed backbone; use 'gumbel' for a "
                             "searchable one")
        if self.cells.nodes != 1:
            raise ValueError("sampling.strategy: 'uniform' scores every sub-network after "
                             "training, so far for one-node cells (one op per position); "
                             f"this space has cells.nodes {self.cells.nodes}: use 'gumbel'")
        count = self.num_subnets()
        if count > MAX_SCORED_SUBNETS:
            raise ValueError(f"sampling.strategy: 'uniform' scores every sub-network after "
                             f"training; this space has {count:,} (at most "
                             f"{MAX_SCORED_SUBNETS:,}): use 'gumbel', or fewer ops or positions")
        return self

    def num_subnets(self) -> int:
        """The number of architectures of one-node cells: ops ** positions."""
        return len(self.ops) ** len(self.cells.positions)

    # -- derived views

    @property
    def source(self) -> str | None:
        """The file this space was loaded from, if any."""
        return self._source

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.input.height, self.input.width)

    @property
    def labels(self) -> list[str]:
        """Display labels of the candidates, in column order of the architecture parameters."""
        return [op.display for op in self.ops]

    def position_shapes(self) -> dict[str, tuple[int, int, int]]:
        """``(C, H, W)`` of the stage output at every cell position, in network order (for a
        searchable backbone: its widest network, the size the supernet's cells are built for)."""
        from nas_reid.space.backbone import stage_shapes  # backbone imports torchvision

        bb = self.backbone
        if bb.mobile is not None:
            shapes = mobile_stage_shapes(bb.mobile.widest(bb.last_stride), self.input_size, bb.last_stride)
        else:
            shapes = stage_shapes(bb.name, self.input_size, bb.last_stride)
        return {p: shapes[p] for p in self.cells.positions}

    def position_shape_options(self) -> dict[str, list[tuple[int, int, int]]]:
        """Every ``(C, H, W)`` a cell position can have in a derived network: one per width
        option of the stage before it (one shape for a fixed backbone)."""
        shapes = self.position_shapes()
        mobile = self.backbone.mobile
        if mobile is None:
            return {p: [shape] for p, shape in shapes.items()}
        last = {s.layer: s for s in mobile.stages}
        return {p: [(w, h, wd) for w in mobile.widths(last[p])] for p, (_, h, wd) in shapes.items()}

    def canonical(self) -> dict[str, Any]:
        """What the hash covers: the architecture space, defaults filled in."""
        return {
            "hash_version": HASH_VERSION,
            "input": {"height": self.input.height, "width": self.input.width},
            "backbone": {"name": self.backbone.name, "last_stride": self.backbone.last_stride,
                         **({"mobile": self.backbone.mobile.model_dump(mode="json")}
                            if self.backbone.mobile is not None else {})},
            "cells": {"positions": list(self.cells.positions), "nodes": self.cells.nodes,
                      "edges_per_node": self.cells.edges_per_node},
            "ops": [{"name": op.name, "params": op.full_params()} for op in self.ops],
        }

    def canonical_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, compact), first 16 hex digits."""
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def resolved(self) -> dict[str, Any]:
        """Every field with its defaults, as plain JSON types (for a run folder's config)."""
        return self.model_dump(mode="json")


def check_op(name: str, params: dict[str, Any], shapes: dict[str, tuple[int, int, int]],
             where: str) -> None:
    """Check that op ``name`` builds with ``params`` at every ``(C, H, W)`` of ``shapes``.

    Raises ``ValueError("<where>.<param>: <message>")``. The op is built on the ``meta``
    device, which allocates nothing.
    """
    try:
        accepted = op_params(name)
    except OpError as exc:
        raise ValueError(f"{where.rsplit('.', 1)[0]}.name: {exc}") from None
    for key in params:
        if key not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise ValueError(f"{where}.{key}: op {name!r} has no parameter {key!r} (accepted: {known})")
    for position, (c, h, w) in shapes.items():
        try:
            try:
                with torch.device("meta"):
                    build_op(name, c, h, w, **params)
            except OpError:
                raise
            except Exception:  # an op whose constructor needs real data: build it for real
                build_op(name, c, h, w, **params)
        except OpError as exc:
            match = re.search(r"parameter '(\w+)'", str(exc))
            path = f"{where}.{match.group(1)}" if match and match.group(1) in params else where
            raise ValueError(f"{path}: {exc} (at {position}, C={c}, H={h}, W={w})") from None


# ------------------------------------------------------------------------------ loading


class _YAMLLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``3e-4`` as a float (YAML 1.2; 1.1 needs ``3.0e-4``)."""


_YAMLLoader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def read_yaml_mapping(path: str | os.PathLike, what: str, error: type[Exception]) -> dict[str, Any]:
    """The mapping at the top of a YAML file, read with the safe loader (no Python objects).

    Raises ``error`` with a message starting ``"<what> <path>: "`` for a missing file, bad YAML
    (with line and column), a file that is not UTF-8 or whose top is not a mapping.
    """
    path = Path(path).expanduser()
    where = str(path)
    if not path.is_file():
        raise error(f"{what} {where}: no such file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAMLLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{what} {where}: not valid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise error(f"{what} {where}: not a UTF-8 text file") from None
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        raise error(f"{what} {where}: expected a mapping of fields at the top, got {got}")
    return data


def load_space(path_or_dict: str | os.PathLike | dict[str, Any] | SearchSpace) -> SearchSpace:
    """Read and validate a search space from a YAML file or an already parsed dict.

    YAML is read with a safe loader (no Python objects). Raises :class:`SpaceError` naming the
    file (or ``<dict>``) and every bad field. A :class:`SearchSpace` is returned as is.
    """
    if isinstance(path_or_dict, SearchSpace):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        return _validate(dict(path_or_dict), "<dict>", None)
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise SpaceError(f"search space: expected a YAML path or a dict, got {type(path_or_dict).__name__}")
    path = Path(path_or_dict).expanduser()
    where = str(path)
    data = read_yaml_mapping(path, "search space", SpaceError)
    space = _validate(data, where, path.parent)
    space._source = where
    return space


def _relative_to(path: str, base: Path | None) -> str:
    """``path`` with ``~`` expanded, taken from ``base`` (the YAML file's folder) if relative."""
    out = Path(path).expanduser()
    if base is not None and not out.is_absolute():
        out = base / out
    return str(out)


def _validate(data: dict[str, Any], where: str, base: Path | None) -> SearchSpace:
    backbone = data.get("backbone")
    if (isinstance(backbone, dict) and isinstance(backbone.get("weights"), str)
            and backbone["weights"] not in WEIGHT_NAMES):
        data["backbone"] = {**backbone, "weights": _relative_to(backbone["weights"], base)}
    schedule = data.get("schedule")
    cost = schedule.get("cost") if isinstance(schedule, dict) else None
    latency = cost.get("latency") if isinstance(cost, dict) else None
    if isinstance(latency, dict) and isinstance(latency.get("table"), str):
        data["schedule"] = {**schedule, "cost": {**cost, "latency": {
            **latency, "table": _relative_to(latency["table"], base)}}}
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        raise SpaceError(format_validation_error(exc, f"search space {where}", SearchSpace)) from None


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _allowed(loc: tuple, root: type[BaseModel]) -> list[str] | None:
    """Field names allowed where the unknown field at ``loc`` was found."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = model.model_fields[part].annotation
        if typing.get_origin(model) in (typing.Union, types.UnionType):  # X | None
            model = next((a for a in typing.get_args(model) if a is not type(None)), model)
        if typing.get_origin(model) is list:
            model = typing.get_args(model)[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


def format_validation_error(exc: ValidationError, what: str, root: type[BaseModel]) -> str:
    """One line for every error of ``exc``: ``"<what>: <path>: <problem>"``, several joined
    by ``"; "``.

    Paths are written ``ops[2].params.c_ratio``; an unknown field names the closest allowed one
    (``did you mean 'sampling'?``) and lists them all; a check whose message starts with ``.``
    or ``[`` names a sub-field of its own field, one whose message starts with its full path is
    printed as is.
    """
    lines = []
    for err in exc.errors(include_url=False):
        loc, msg, kind = tuple(err["loc"]), err["msg"], err["type"]
        if kind == "value_error":
            msg = msg.removeprefix("Value error, ")
            path = _path(loc)
            if msg.startswith((".", "[")):  # a field check naming a sub-field: ".c_ratio: ..."
                lines.append(path + msg)
            elif not path or msg.startswith((f"{path}.", f"{path}:", f"{path}[")):
                lines.append(msg)  # a model check naming the full field path itself
            else:
                lines.append(f"{path}: {msg}")
            continue
        if kind == "extra_forbidden":
            msg = unknown_field(str(loc[-1]), _allowed(loc, root) or [])
        elif kind == "missing":
            msg = "required field is missing"
        else:
            value = err.get("input")
            if isinstance(value, (str, int, float, bool)) or value is None:
                msg = f"{msg}, got {value!r}"
        lines.append(f"{_path(loc) or '<top>'}: {msg}")
    shown = [" ".join(line.split()) for line in lines[:_MAX_ERRORS]]
    if len(lines) > _MAX_ERRORS:
        shown.append(f"... and {len(lines) - _MAX_ERRORS} more")
    head = f"{what}: " if len(shown) == 1 else f"{what}: {len(lines)} problems: "
    return head + "; ".join(shown)
