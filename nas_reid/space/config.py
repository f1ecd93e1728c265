"""The search-space YAML: the architecture space's schema, validation, defaults and hash.

A search space is one YAML file (``search_spaces/*.yaml``) with ``name``, ``input``,
``backbone``, ``cells``, ``ops`` (the candidates of every edge, in order): the architecture
space, this module's schema; and ``sampling`` and ``schedule``: how it is searched, the schema of
:mod:`nas_reid.space.strategy` (everything has a default). Loading (:func:`load_space`) validates every field
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
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from nas_reid.errors import UserError
from nas_reid.engine.schema import StrictModel, format_validation_error, read_yaml_mapping
from nas_reid.ops import OpError, available_ops, build_op, op_params
from nas_reid.space.mobile import MOBILE_BACKBONES, MobileConfig, mobile_stage_shapes
from nas_reid.space.strategy import MAX_SCORED_SUBNETS, SamplingConfig, ScheduleConfig

HASH_VERSION = 1
"""Bumped whenever the canonical form changes (it is part of what is hashed)."""

POSITIONS = ("layer1", "layer2", "layer3", "layer4")

SYNTHETIC_WEIGHTS, NO_WEIGHTS = "synthetic", "none"
WEIGHT_NAMES = (SYNTHETIC_WEIGHTS, NO_WEIGHTS)
"""``backbone.weights`` values that name no file: the backbone pretrained on the synthetic
pretraining set (:func:`nas_reid.train.pretrain.resolve_backbone_weights`), and random
initialisation."""


class SpaceError(UserError):
    """A search-space file or dict that does not follow the schema."""


# ------------------------------------------------------------------------------ architecture


class InputConfig(StrictModel):
    """Input image size; the space (RGA in particular) is built for exactly this size."""

    height: int = Field(ge=16, le=4096)
    width: int = Field(ge=16, le=4096)


BackboneName = Literal["resnet50", "resnet18", "resnet_tiny", "mobilenetv2"]
"""The backbones a space or a genotype can name: the fixed ResNets of
:data:`nas_reid.space.backbone.BACKBONES` (``resnet_tiny``: for tests and smoke runs) and the
searchable :data:`~nas_reid.space.mobile.MOBILE_BACKBONES`."""


class BackboneConfig(StrictModel):
    """``name``: a fixed torchvision ResNet (``resnet50``, ``resnet18``, or ``resnet_tiny`` for
    tests and smoke runs) or the searchable ``mobilenetv2`` family, whose stages and choices are
    ``mobile`` (:class:`~nas_reid.space.mobile.MobileConfig`; MobileNetV2's table when left
    out)."""

    name: BackboneName
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


class CellsConfig(StrictModel):
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


class OpSpec(StrictModel):
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


# ------------------------------------------------------------------------------ the space


class SearchSpace(StrictModel):
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
        strategy = self.sampling.strategy
        if strategy not in ("uniform", "zero_cost"):
            return self
        head = f"sampling.strategy: {strategy!r} scores every sub-network"
        if self.backbone.searchable:
            raise ValueError(f"{head}, which needs a fixed backbone; use 'gumbel' for a "
                             "searchable one")
        if self.cells.nodes != 1:
            raise ValueError(f"{head}, so far for one-node cells (one op per position); this "
                             f"space has cells.nodes {self.cells.nodes}: use 'gumbel'")
        count = self.num_subnets()
        if count > MAX_SCORED_SUBNETS:
            raise ValueError(f"{head}; this space has {count:,} (at most "
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


