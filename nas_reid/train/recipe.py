"""The training recipe of a retrain: a validated YAML document.

Five recipes ship in ``search_spaces/recipes/``: ``bot`` (the BoT strong baseline, Luo et al.,
CVPRW 2019; the default for real datasets), ``synthetic`` (the default on the built-in
benchmark), ``mobile`` (the DCS-Attention repo's SGD recipe) and ``mobile_synthetic``, the
defaults for a genotype with a mobile backbone (:func:`default_recipe`), and
``pretrain_synthetic`` (:mod:`nas_reid.train.pretrain`). A recipe names ``epochs``, ``batch``
(``{p, k}``), ``augment``, ``backbone`` (``weights``), ``optimizer``, ``lr_schedule``,
``loss``, ``grad_clip``, ``eval``, ``precision``, ``deterministic`` and ``seed``.
:func:`load_recipe` reads a recipe name, a YAML path or a dict, applies overrides (a nested dict
or ``"key.sub=value"`` strings, values parsed as YAML) and validates every field, naming the bad
one in its error (:class:`RecipeError`, a :class:`~nas_reid.errors.UserError`).
The shipped recipes and every field in detail: docs/training.md, section
`nas_reid.train.recipe`.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml
from pydantic import Field, ValidationError, model_validator

from nas_reid.errors import UserError
from nas_reid.engine.precision import PrecisionConfig
from nas_reid.engine.schema import (BatchConfig, LossConfig, OptimizerConfig, StrictModel,
                                    format_validation_error, read_yaml_mapping)

RECIPE_NAMES = ("bot", "synthetic", "mobile", "mobile_synthetic", "pretrain_synthetic")


class RecipeError(UserError):
    """A recipe that cannot be read or does not validate."""



class AugmentConfig(StrictModel):
    flip: float = Field(default=0.5, ge=0, le=1)
    pad: int = Field(default=10, ge=0, le=64)
    random_erasing: float = Field(default=0.5, ge=0, le=1)

    def pad_for(self, height: int) -> int:
        """The padding at an input ``height`` (``pad`` is for 256 pixels; at least 1 if > 0)."""
        return max(1, round(self.pad * height / 256)) if self.pad else 0


class RecipeOptimizerConfig(OptimizerConfig):
    """A retrain's optimizer (Adam 3.5e-4 by default, BoT's)."""

    name: Literal["adam", "sgd"] = "adam"
    new_lr_mult: float = Field(default=1.0, gt=0)
    """Learning-rate multiplier of everything outside the backbone (attention cells, BNNeck
    head): the fine-tuning practice of training new layers faster than pretrained ones
    (torchreid's ``staged_lr``). 1: one rate for all."""

    @property
    def kind(self) -> str:
        return self.name


class LRScheduleConfig(StrictModel):
    warmup_epochs: int = Field(default=10, ge=0)
    warmup_factor: float = Field(default=0.01, gt=0, le=1)
    decay: Literal["step", "cosine"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [40, 70])
    gamma: float = Field(default=0.1, gt=0, le=1)

    def factor(self, epoch: int, epochs: int) -> float:
        """The learning-rate multiplier of 0-based ``epoch`` out of ``epochs``."""
        if epoch < self.warmup_epochs:
            alpha = epoch / self.warmup_epochs
            warm = self.warmup_factor * (1 - alpha) + alpha
        else:
            warm = 1.0
        if self.decay == "step":
            return warm * self.gamma ** sum(1 for m in self.milestones if epoch >= m)
        span = max(epochs - self.warmup_epochs, 1)
        t = min(max(epoch - self.warmup_epochs, 0) / span, 1.0)
        return warm * (0.5 * (1 + math.cos(math.pi * t)))


class RecipeLossConfig(LossConfig):
    """A recipe's loss (``loss``): the terms the search shares (:class:`LossConfig`, RIB off by
    default) and the center loss (weight ``center``, its centres' SGD learning rate
    ``center_lr``), which only the retrain has."""

    center: float = Field(default=0.0, ge=0)
    center_lr: float = Field(default=0.5, gt=0)


class EvalConfig(StrictModel):
    every: int = Field(default=10, ge=0)
    flip: bool = False


class BackboneInit(StrictModel):
    weights: str | None = None
    """``synthetic`` (the backbone pretrained on synthreid_pretrain, :mod:`nas_reid.train.pretrain`),
    a local torchvision state_dict file, or null / ``none``: random initialisation."""


class Recipe(StrictModel):
    """A validated training recipe (see the module doc)."""

    name: str = Field(default="custom", min_length=1)
    epochs: int = Field(default=120, ge=1)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    backbone: BackboneInit = Field(default_factory=BackboneInit)
    optimizer: RecipeOptimizerConfig = Field(default_factory=RecipeOptimizerConfig)
    lr_schedule: LRScheduleConfig = Field(default_factory=LRScheduleConfig)
    loss: RecipeLossConfig = Field(default_factory=RecipeLossConfig)
    grad_clip: float | None = Field(default=None, gt=0)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    deterministic: bool = False
    seed: int = 0

    @model_validator(mode="after")
    def _schedule(self) -> "Recipe":
        s = self.lr_schedule
        if s.warmup_epochs >= self.epochs:
            raise ValueError(f"lr_schedule.warmup_epochs: {s.warmup_epochs} must be below "
                             f"epochs ({self.epochs})")
        if s.milestones != sorted(set(s.milestones)) or any(m < 1 for m in s.milestones):
            raise ValueError(f"lr_schedule.milestones: must be increasing epochs >= 1, got {s.milestones}")
        return self

    def resolved(self) -> dict[str, Any]:
        """The recipe as plain JSON/YAML types, every default filled in."""
        return self.model_dump(mode="json")


def default_recipe(dataset: str, backbone: str | None = None) -> str:
    """The shipped recipe a retrain uses when none is named: ``synthetic`` on synthreid and
    ``bot`` on a real dataset, or ``mobile_synthetic`` / ``mobile`` for a ``mobilenetv2``
    backbone (trained from scratch with SGD; Adam at BoT's rate did not train them)."""
    mobile = backbone == "mobilenetv2"
    if dataset == "synthreid":
        return "mobile_synthetic" if mobile else "synthetic"
    return "mobile" if mobile else "bot"


def recipe_path(name: str) -> Path:
    """The YAML file of a shipped recipe."""
    from nas_reid.space.reference import shipped_file

    return shipped_file("recipes", f"{name}.yaml")


def scaled_to(recipe: Recipe, epochs: int,
              keep: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], str | None]:
    """The overrides that run ``recipe`` for ``epochs`` epochs with its learning-rate schedule
    at the same shares of the run: the warm-up and the step milestones scaled by
    ``epochs / recipe.epochs`` and rounded (the warm-up kept below ``epochs``; a milestone the
    recipe never reached, or one that rounds to the end, dropped), unless ``keep`` (the
    overrides the user gave, nested) sets them. Also a sentence naming what changed, or None."""
    s, old = recipe.lr_schedule, recipe.epochs
    given = (keep or {}).get("lr_schedule") or {}
    given = given if isinstance(given, Mapping) else {}
    out: dict[str, Any] = {"epochs": int(epochs)}
    if epochs == old:
        return out, None
    schedule: dict[str, Any] = {}
    changes = []
    if "warmup_epochs" not in given:
        warm = min(round(s.warmup_epochs * epochs / old), epochs - 1)
        if warm != s.warmup_epochs:
            schedule["warmup_epochs"] = warm
            changes.append(f"warm-up {s.warmup_epochs} -> {warm} epoch(s)")
    if "milestones" not in given and s.decay == "step":
        miles = sorted({m for m in (round(m * epochs / old) for m in s.milestones if m < old)
                        if 1 <= m < epochs})
        if miles != list(s.milestones):
            schedule["milestones"] = miles
            changes.append(f"milestones {list(s.milestones)} -> {miles}")
    if schedule:
        out["lr_schedule"] = schedule
    note = None
    if changes:
        note = (f"--epochs {epochs}: recipe {recipe.name!r} is written for {old} epochs; its "
                f"learning-rate schedule is scaled to {epochs}: {', '.join(changes)}")
    return out, note


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["loss.rib=0.1", "batch.p=8"]`` -> ``{"loss": {"rib": 0.1}, "batch": {"p": 8}}``
    (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. loss.rib=0.1")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML") from None
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {part} is set to a value and a mapping")
        node[parts[-1]] = value
    return out


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge (``overrides`` wins; nested mappings merge key by key)."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(recipe: str | os.PathLike | Mapping[str, Any] | Recipe | None = None,
                overrides: Mapping[str, Any] | Sequence[str] | None = None) -> Recipe:
    """A recipe from a shipped name (``bot``, ``synthetic``), a YAML path, a dict or a
    :class:`Recipe` (default ``bot``), with ``overrides`` applied and validated."""
    where = "<dict>"
    if recipe is None:
        recipe = "bot"
    if isinstance(recipe, Recipe):
        data, where = recipe.resolved(), f"recipe {recipe.name!r}"
    elif isinstance(recipe, Mapping):
        data = dict(recipe)
    elif isinstance(recipe, (str, os.PathLike)):
        if isinstance(recipe, str) and recipe in RECIPE_NAMES:
            path = recipe_path(recipe)
        else:
            path = Path(recipe).expanduser()
            if not path.is_file():
                raise RecipeError(f"recipe {recipe}: no such file, and not a shipped recipe name "
                                  f"({', '.join(RECIPE_NAMES)})")
        data, where = read_yaml_mapping(path, "recipe", RecipeError), str(path)
    else:
        raise RecipeError(f"recipe: expected a name, a YAML path or a mapping, got {type(recipe).__name__}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(list(overrides))
        data = merge(data, overrides)
        where += " (with overrides)"
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, f"recipe {where}", Recipe)) from None
