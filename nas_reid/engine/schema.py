"""What the search's and a retrain's configs share: the strict pydantic base, the safe YAML
reader, one-line validation errors, and the training settings both loops use.

Contract:
- :class:`StrictModel`: unknown fields are errors, no type coercion (``strict``), frozen.
- :func:`read_yaml_mapping`: the safe loader (no Python objects), ``3e-4`` read as a float.
- :func:`format_validation_error`: one line naming every bad field by its path.
- :class:`BatchConfig`, :class:`OptimizerConfig` and :class:`LossConfig` are the one definition
  of PK batches, optimizer settings and loss terms: the search's ``schedule``
  (:mod:`nas_reid.space.strategy`) and a retrain's recipe (:mod:`nas_reid.train.recipe`)
  embed or subclass them, and a subclass changes a default only where its docstring says so.
"""

from __future__ import annotations

import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nas_reid.errors import unknown_field

_MAX_ERRORS = 10

RIB_BETA = 300.0
"""Default sharpness of RIB's soft cluster assignments. The authors' code uses 1, where the
assignments of unit vectors (squared distances in [0, 4]) to 150 clusters are nearly uniform and
the bound carries nothing: measured with bench/rib_sharpness.py on the built-in benchmark's
pretrained baseline (ResNet-18, 128x64, 20 epochs), I(F;Y) = 0.0000 nats at beta 1, 0.003 at
10, 0.03 at 30, 0.66 at 100, 4.50 at 300 and 4.73 at 1000 (ceiling log 150 = 5.01)."""


class StrictModel(BaseModel):
    """Unknown fields are errors, values are not coerced, instances are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ------------------------------------------------------------------------------ shared settings


class BatchConfig(StrictModel):
    """PK batches: ``p`` identities times ``k`` images each."""

    p: int = Field(default=16, ge=2)
    k: int = Field(default=4, ge=2)


class OptimizerConfig(StrictModel):
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
        return check_betas(betas)


def check_betas(betas: list[float]) -> list[float]:
    if not all(0 <= b < 1 for b in betas):
        raise ValueError(f"each beta must be in [0, 1), got {betas}")
    return betas


class LossConfig(StrictModel):
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



# ------------------------------------------------------------------------------ reading files


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
