"""The tune space: which recipe or search-space fields a tuning run varies, and how.

A tune space is one YAML file (``search_spaces/tune/*.yaml``): ``name``, ``target``
(``retrain`` | ``search``: which config the parameters override), ``metric`` (``mAP``, ``R1``,
``R5``, ``R10`` or ``mINP`` on the validation split, never on the dataset's query / gallery),
``params`` (dotted paths -> one Optuna distribution each: ``float``, ``int`` or
``categorical``), ``fixed`` (applied to every trial), ``retrain`` (``target: search`` only),
``validation`` and ``early_stopping``. Keys are checked against the resolved ``bot`` recipe or
``search_spaces/cpu_small.yaml`` and must name a leaf field; ``eval.every`` cannot be set.
:meth:`TuneSpace.overrides` turns one trial's values into the nested overrides of that trial
(for retrain targets validated as a ``bot`` recipe). Every problem is one
:class:`TuneSpaceError` (a :class:`~nas_reid.errors.UserError`) naming the file and the bad
field by its path (``params.optimizer.lr.low``).
The file format, distributions and keys in detail: docs/tuning.md, section `nas_reid.hpo.space`.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator, model_validator

from nas_reid.errors import UserError, unknown_field
from nas_reid.evaluation.evaluate import METRIC_KEYS
from nas_reid.engine.schema import StrictModel, format_validation_error, read_yaml_mapping

TARGETS = ("retrain", "search")
DIST_TYPES = ("float", "int", "categorical")
SEARCH_SECTIONS = ("sampling", "cells")
"""Search-space sections a ``target: search`` key may start with (other keys are relative to
``schedule``)."""
TRIAL_EVAL_KEY = "eval.every"
"""The recipe field the tuner sets itself (every epoch is evaluated)."""
METRICS = METRIC_KEYS
"""What a trial reports: the retrain's evaluation metrics."""


class TuneSpaceError(UserError):
    """A tune-space file or dict that does not follow the schema, or trial values that give an
    invalid configuration."""



def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


# ------------------------------------------------------------------------------ distributions


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @field_validator("low", "high")
    @classmethod
    def _finite(cls, value: float) -> float:
        return _finite(value)

    @model_validator(mode="after")
    def _bounds(self) -> "FloatParam":
        if not self.low < self.high:
            raise ValueError(f".low: {self.low} must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f".low: {self.low} must be > 0 with log: true")
        if self.log and self.step is not None:
            raise ValueError(".step: cannot be combined with log: true")
        return self

    def distribution(self) -> Any:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: Any, key: str) -> float:
        return trial.suggest_float(key, self.low, self.high, step=self.step, log=self.log)


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "IntParam":
        if not self.low <= self.high:
            raise ValueError(f".low: {self.low} must be at most high ({self.high})")
        if self.log and self.low < 1:
            raise ValueError(f".low: {self.low} must be >= 1 with log: true")
        if self.log and self.step != 1:
            raise ValueError(f".step: must be 1 with log: true, got {self.step}")
        return self

    def distribution(self) -> Any:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def suggest(self, trial: Any, key: str) -> int:
        return trial.suggest_int(key, self.low, self.high, step=self.step, log=self.log)


Scalar = Union[bool, int, float, str, None]


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[Scalar]) -> list[Scalar]:
        for i, value in enumerate(choices):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"[{i}]: must be a finite number, got {value!r}")
            if any(value == other and type(value) is type(other) for other in choices[:i]):
                raise ValueError(f"[{i}]: {value!r} is listed twice")
        return choices

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.choices))

    def suggest(self, trial: Any, key: str) -> Any:
        return trial.suggest_categorical(key, list(self.choices))


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]
_PARAM_MODELS: dict[str, type[BaseModel]] = {
    "float": FloatParam, "int": IntParam, "categorical": CategoricalParam}


# ------------------------------------------------------------------------------ the space


class MetricConfig(StrictModel):
    name: Literal[METRICS] = "mAP"
    """A metric the trials report: ``mAP``, ``R1``, ``R5``, ``R10`` or ``mINP``."""
    mode: Literal["max", "min"] = "max"


class ValidationConfig(StrictModel):
    """The held-out identities that score the trials (see :mod:`nas_reid.hpo.objective`)."""

    fraction: float = Field(default=0.25, gt=0, lt=1)
    seed: int = 0


class EarlyStoppingConfig(StrictModel):
    """ASHA / median stopping on the epochs (see the backends)."""

    grace_period: int | None = Field(default=None, ge=1)
    """Epochs every trial runs before it can be stopped; default (null): the recipe's
    learning-rate warm-up plus a quarter of the epochs (:mod:`nas_reid.hpo.pruning`)."""
    reduction_factor: int = Field(default=2, ge=2)
    """ASHA: the share ``1 / reduction_factor`` of the trials at a rung goes on."""


class TuneSpace(StrictModel):
    """A validated tune space (see the module doc for the YAML)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    target: Literal["retrain", "search"] = "retrain"
    metric: MetricConfig
    params: dict[str, Param] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    retrain: dict[str, Any] = Field(default_factory=dict)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    _source: str | None = PrivateAttr(default=None)

    @property
    def source(self) -> str | None:
        """The YAML file it was read from (None for a dict)."""
        return self._source

    @property
    def direction(self) -> str:
        """Optuna's study direction: ``"maximize"`` or ``"minimize"``."""
        return "maximize" if self.metric.mode == "max" else "minimize"

    def fixed_flat(self) -> dict[str, Any]:
        """``fixed`` as dotted keys (nested mappings flattened)."""
        return _flatten_fixed(self.fixed)

    def fixed_overrides(self) -> dict[str, Any]:
        """``fixed``, nested (not validated)."""
        return _nest(self.fixed_flat())

    def corner_values(self) -> list[dict[str, Any]]:
        """Two trials' values: every parameter at its low end (first choice), and at its high
        end (last choice): what a check of the fixed fields tries when they alone do not make a
        valid config."""
        def end(spec: Any, last: bool) -> Any:
            if isinstance(spec, CategoricalParam):
                return spec.choices[-1 if last else 0]
            return spec.high if last else spec.low

        return [{key: end(spec, last) for key, spec in self.params.items()} for last in (False, True)]

    def retrain_overrides(self) -> dict[str, Any]:
        """``retrain`` (the recipe fields fixed for a search target's retrains), nested."""
        return _nest(_flatten_fixed(self.retrain, section="retrain"))

    def distributions(self) -> dict[str, Any]:
        """``{dotted key: optuna distribution}`` in file order (Float/Int/CategoricalDistribution)."""
        return {key: spec.distribution() for key, spec in self.params.items()}

    def suggest(self, trial: Any) -> dict[str, Any]:
        """One value per parameter from an Optuna ``trial`` (``suggest_float/int/categorical``),
        as flat dotted keys."""
        return {key: spec.suggest(trial, key) for key, spec in self.params.items()}

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """The nested overrides of one trial: ``fixed`` merged with ``values`` (flat dotted
        keys, the values win). For ``retrain`` targets, checked by loading the ``bot`` recipe
        with them; relative to ``schedule`` for ``search`` targets (see the module doc)."""
        from nas_reid.train.recipe import RecipeError, load_recipe, merge

        unknown = [key for key in values if key not in self.params]
        if unknown:
            raise TuneSpaceError(f"tune space {self.name!r}: trial values for unknown parameters "
                                 f"{', '.join(unknown)} (parameters: {', '.join(self.params)})")
        out = merge(_nest(self.fixed_flat()), _nest(values))
        if self.target == "retrain":
            try:
                load_recipe("bot", out)
            except RecipeError as exc:
                shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
                what = f"trial values {shown} give" if values else "its fixed fields give"
                raise TuneSpaceError(f"tune space {self.name!r}: {what} an invalid retrain "
                                     f"recipe: {exc}") from None
        return out

    def resolved(self) -> dict[str, Any]:
        """The space as plain JSON/YAML types, every default filled in."""
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------ loading


def load_tune_space(path_or_dict: str | os.PathLike | dict[str, Any] | TuneSpace) -> TuneSpace:
    """Read and validate a tune space from a YAML file (safe loader), the name of a shipped one
    (``retrain_small``, ``search_small``) or a parsed dict; a :class:`TuneSpace` is returned as
    is. Raises :class:`TuneSpaceError` naming the bad fields."""
    if isinstance(path_or_dict, TuneSpace):
        return path_or_dict
    if isinstance(path_or_dict, dict):
        return _validate(dict(path_or_dict), "<dict>")
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise TuneSpaceError(f"tune space: expected a YAML path or a dict, got {type(path_or_dict).__name__}")
    path = tune_space_path(path_or_dict)
    space = _validate(read_yaml_mapping(path, "tune space", TuneSpaceError), str(path))
    space._source = str(path)
    return space


def shipped_tune_spaces() -> list[str]:
    """The names of the tune spaces shipped in ``search_spaces/tune/``."""
    from nas_reid.space.reference import shipped_file

    folder = shipped_file("tune", "retrain_small.yaml").parent
    return sorted(p.stem for p in folder.glob("*.yaml"))


def tune_space_path(spec: str | os.PathLike) -> Path:
    """A tune-space YAML path, or the name of a shipped one (``retrain_small``)."""
    path = Path(spec).expanduser()
    if path.exists() or isinstance(spec, os.PathLike) or path.suffix or os.sep in str(spec):
        return path
    names = shipped_tune_spaces()
    if str(spec) not in names:
        raise TuneSpaceError(f"tune space {spec}: no such file, and not a shipped tune space "
                             f"({', '.join(names)})")
    from nas_reid.space.reference import shipped_file

    return shipped_file("tune", f"{spec}.yaml")


def _validate(data: dict[str, Any], where: str) -> TuneSpace:
    what = f"tune space {where}"
    try:
        space = TuneSpace.model_validate(data)
    except ValidationError as exc:
        raise TuneSpaceError(format_validation_error(_clean(exc), what, TuneSpace)) from None
    problems = _check_keys(space)
    if problems:
        head = f"{what}: " if len(problems) == 1 else f"{what}: {len(problems)} problems: "
        raise TuneSpaceError(head + "; ".join(problems))
    return space


def _clean(exc: ValidationError) -> ValidationError:
    """``exc`` with the distribution tag dropped from ``params`` paths (``params.x.low``, not
    ``params.x.float.low``), and unknown fields or types inside a parameter explained."""
    errors = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = tuple(err["loc"]), err["type"], dict(err.get("ctx") or {})
        if len(loc) >= 2 and loc[0] == "params":
            if len(loc) >= 3 and loc[2] in _PARAM_MODELS:
                model, loc = _PARAM_MODELS[loc[2]], loc[:2] + loc[3:]
                if kind == "extra_forbidden":
                    kind, ctx = "value_error", {"error": ValueError(
                        unknown_field(str(loc[-1]), list(model.model_fields)))}
            elif kind in ("union_tag_invalid", "union_tag_not_found"):
                value = err["input"].get("type") if isinstance(err["input"], dict) else None
                problem = ("required field is missing" if kind == "union_tag_not_found"
                           else f"unknown distribution type {value!r}")
                kind, loc = "value_error", loc + ("type",)
                ctx = {"error": ValueError(f"{problem} (allowed: {', '.join(DIST_TYPES)})")}
        errors.append({"type": kind, "loc": loc, "input": err["input"], "ctx": ctx})
    return ValidationError.from_exception_data(exc.title, errors)


def _flatten_fixed(fixed: dict[str, Any], prefix: str = "", section: str = "fixed") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fixed.items():
        full = f"{prefix}{key}"
        items = (_flatten_fixed(value, full + ".", section) if isinstance(value, dict) and value
                 else {full: value})
        for k, v in items.items():
            if k in out:
                raise TuneSpaceError(f"tune space: {section}.{k} is given twice")
            out[k] = v
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{dotted key: default}`` of every leaf (non-mapping value) of ``tree``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def target_fields(target: str) -> dict[str, Any]:
    """``{dotted key: default}`` of the fields a ``target`` can override: the resolved ``bot``
    recipe (retrain) or the resolved ``cpu_small.yaml`` (search: its ``schedule`` with keys
    relative to ``schedule``, and its ``sampling`` and ``cells`` with their section prefix)."""
    if target == "retrain":
        from nas_reid.train.recipe import load_recipe

        return _leaves(load_recipe("bot").resolved())
    from nas_reid.space import load_space
    from nas_reid.space.reference import shipped_file

    resolved = load_space(shipped_file("cpu_small.yaml")).resolved()
    fields = _leaves(resolved["schedule"])
    for section in SEARCH_SECTIONS:
        fields.update(_leaves(resolved[section], f"{section}."))
    return fields


def _check_keys(space: TuneSpace) -> list[str]:
    fields = target_fields(space.target)
    where = ("the retrain recipe" if space.target == "retrain"
             else "a search space's schedule, sampling or cells")
    problems = []
    try:
        fixed = space.fixed_flat()
        retrain = _flatten_fixed(space.retrain, section="retrain")
    except TuneSpaceError as exc:
        return [str(exc).removeprefix("tune space: ")]
    keys = [(f"params.{k}", k, spec) for k, spec in space.params.items()]
    keys += [(f"fixed.{k}", k, None) for k in fixed]
    if retrain and space.target == "retrain":
        problems.append("retrain: is for target: search (the recipe of the retrain after each "
                        "trial's search); with target: retrain put fixed recipe fields in fixed")
    elif retrain:
        recipe_fields = target_fields("retrain")
        for key in retrain:
            if key == TRIAL_EVAL_KEY:
                problems.append(f"retrain.{key}: {_EVAL_SET}")
            elif key not in recipe_fields:
                problems.append(f"retrain.{key}: {_unknown(key, recipe_fields, 'the retrain recipe')}")
    for path, key, spec in keys:
        if space.target == "retrain" and key == TRIAL_EVAL_KEY:
            problems.append(f"{path}: {_EVAL_SET}")
            continue
        if key not in fields:
            problems.append(f"{path}: {_unknown(key, fields, where)}")
            continue
        if spec is not None:
            problem = _type_problem(spec, fields[key])
            if problem:
                problems.append(f"{path}: {problem}")
        elif key in space.params:
            problems.append(f"{path}: is also a tuned parameter (params.{key})")
    return problems


_EVAL_SET = ("is set by the tuner (every trial is evaluated on its validation split after every "
             "epoch, so the scheduler or pruner sees each epoch); leave it out")


def _unknown(key: str, fields: dict[str, Any], where: str) -> str:
    sections = sorted(k for k in fields if k.startswith(key + "."))
    if sections:
        shown = ", ".join(sections[:6]) + (", ..." if len(sections) > 6 else "")
        return f"is a section of {where}, not a field; name one of its fields ({shown})"
    close = difflib.get_close_matches(key, list(fields), n=3, cutoff=0.6)
    last = key.rsplit(".", 1)[-1]
    close += [k for k in fields if k.rsplit(".", 1)[-1] == last and k not in close]
    hint = f"; did you mean {' or '.join(close[:4])}?" if close else ""
    return f"unknown key of {where}{hint}"


def _type_problem(spec: Any, default: Any) -> str | None:
    if isinstance(spec, CategoricalParam) or default is None:
        return None
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return f"a {spec.type} distribution cannot set this field (its default is {default!r})"
    if isinstance(spec, FloatParam) and isinstance(default, int):
        return "the field is an integer; use type: int"
    return None
