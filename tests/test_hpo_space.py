"""The tune space: schema, Optuna distributions, suggestions and per-trial overrides."""

from __future__ import annotations

import copy

import optuna
import pytest

from nas_reid.errors import UserError
from nas_reid.hpo import TuneSpace, TuneSpaceError, load_tune_space
from nas_reid.space.reference import shipped_file
from nas_reid.train.recipe import load_recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)

BASE = {
    "name": "t",
    "target": "retrain",
    "metric": {"name": "mAP", "mode": "max"},
    "params": {
        "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "loss.triplet_margin": {"type": "float", "low": 0.1, "high": 0.5},
        "loss.rib": {"type": "categorical", "choices": [0.0, 0.05, 0.1]},
        "batch.k": {"type": "int", "low": 2, "high": 8, "step": 2},
    },
    "fixed": {"epochs": 5, "lr_schedule": {"warmup_epochs": 1}},
}


def with_(path: str, value, base=BASE) -> dict:
    """A copy of ``base`` with ``value`` at ``path`` (``/``-separated; parameter keys hold dots)."""
    data = copy.deepcopy(base)
    *parents, last = path.split("/")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value
    return data


def error(data) -> str:
    with pytest.raises(TuneSpaceError) as info:
        load_tune_space(data)
    assert isinstance(info.value, UserError)
    return str(info.value)


@pytest.fixture(scope="module")
def example() -> TuneSpace:
    return load_tune_space(shipped_file("tune", "retrain_small.yaml"))


def test_example_file_loads(example):
    assert example.name == "retrain_small" and example.target == "retrain"
    assert example.direction == "maximize" and example.metric.name == "mAP"
    assert list(example.params) == ["optimizer.lr", "optimizer.weight_decay", "loss.triplet_margin",
                                    "loss.rib", "batch.k"]
    assert example.source.endswith("retrain_small.yaml")
    assert load_tune_space(example) is example


def test_distributions(example):
    dists = example.distributions()
    lr = dists["optimizer.lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution)
    assert (lr.low, lr.high, lr.log, lr.step) == (1e-4, 1e-3, True, None)
    margin = dists["loss.triplet_margin"]
    assert isinstance(margin, optuna.distributions.FloatDistribution) and not margin.log
    k = dists["batch.k"]
    assert isinstance(k, optuna.distributions.IntDistribution) and (k.low, k.high, k.step) == (2, 8, 2)
    rib = dists["loss.rib"]
    assert isinstance(rib, optuna.distributions.CategoricalDistribution)
    assert rib.choices == (0.0, 0.05, 0.1)


def _ask(space: TuneSpace, seed: int, n: int) -> list[dict]:
    study = optuna.create_study(direction=space.direction, sampler=optuna.samplers.TPESampler(seed=seed))
    out = []
    for i in range(n):
        trial = study.ask()
        values = space.suggest(trial)
        out.append(values)
        study.tell(trial, float(i))
    return out


def test_suggest_in_bounds_and_deterministic(example):
    runs = _ask(example, seed=0, n=12)
    for values in runs:
        assert set(values) == set(example.params)
        assert 1e-4 <= values["optimizer.lr"] <= 1e-3
        assert 1e-5 <= values["optimizer.weight_decay"] <= 1e-3
        assert 0.1 <= values["loss.triplet_margin"] <= 0.5
        assert values["loss.rib"] in (0.0, 0.05, 0.1)
        assert values["batch.k"] in (2, 4, 6, 8) and isinstance(values["batch.k"], int)
    assert _ask(example, seed=0, n=12) == runs
    assert _ask(example, seed=1, n=12) != runs


def test_suggest_matches_distributions(example):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    trial = study.ask()
    example.suggest(trial)
    assert trial.distributions == example.distributions()


def test_overrides_nest_and_validate(example):
    values = {"optimizer.lr": 5e-4, "optimizer.weight_decay": 1e-4, "loss.triplet_margin": 0.2,
              "loss.rib": 0.05, "batch.k": 6}
    out = example.overrides(values)
    assert out == {"epochs": 5, "lr_schedule": {"warmup_epochs": 1},
                   "optimizer": {"lr": 5e-4, "weight_decay": 1e-4},
                   "loss": {"triplet_margin": 0.2, "rib": 0.05}, "batch": {"k": 6}}
    recipe = load_recipe("bot", out)
    assert recipe.optimizer.lr == 5e-4 and recipe.batch.k == 6 and recipe.epochs == 5
    assert recipe.optimizer.name == "adam"  # untouched fields keep the recipe's values


def test_overrides_values_win_over_fixed():
    data = with_("params/epochs", {"type": "int", "low": 20, "high": 30})
    data["fixed"] = {"lr_schedule.warmup_epochs": 2}
    space = load_tune_space(data)
    out = space.overrides({"epochs": 25, "optimizer.lr": 2e-4, "loss.triplet_margin": 0.3,
                           "loss.rib": 0.0, "batch.k": 4})
    assert out["epochs"] == 25 and out["lr_schedule"] == {"warmup_epochs": 2}


def test_overrides_impossible_combination_names_the_values():
    data = with_("params/lr_schedule.warmup_epochs", {"type": "int", "low": 1, "high": 10})
    data["fixed"] = {"epochs": 5}
    space = load_tune_space(data)  # epochs is fixed to 5: warm-ups of 5 and more are impossible
    good = {"optimizer.lr": 2e-4, "loss.triplet_margin": 0.3, "loss.rib": 0.0, "batch.k": 4}
    space.overrides({**good, "lr_schedule.warmup_epochs": 4})
    with pytest.raises(TuneSpaceError, match=r"lr_schedule\.warmup_epochs=7.*lr_schedule\.warmup_epochs"):
        space.overrides({**good, "lr_schedule.warmup_epochs": 7})
    with pytest.raises(TuneSpaceError, match="unknown parameters nope"):
        space.overrides({"nope": 1})


def test_minimize_and_search_target():
    data = {"name": "s", "target": "search", "metric": {"name": "mINP", "mode": "min"},
            "params": {"weights.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
                       "arch.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
            "fixed": {"epochs": 4}}
    space = load_tune_space(data)
    assert space.direction == "minimize"
    assert space.overrides({"weights.lr": 0.05}) == {"epochs": 4, "weights": {"lr": 0.05}}
    # keys are relative to the schedule: the full path is unknown
    msg = error(with_("params/schedule.weights.lr", {"type": "float", "low": 0.1, "high": 0.2}, data))
    assert "params.schedule.weights.lr: unknown key of a search space's schedule" in msg
    assert "weights.lr" in msg.split("did you mean", 1)[1]


def test_search_target_reaches_sampling_and_cells():
    data = {"name": "s", "target": "search", "metric": {"name": "mAP"},
            "params": {"sampling.tau.start": {"type": "float", "low": 2.0, "high": 10.0},
                       "cells.nodes": {"type": "int", "low": 1, "high": 3}},
            "fixed": {"sampling": {"strategy": "gumbel"}, "epochs": 4},
            "retrain": {"epochs": 3, "batch.p": 4}}
    space = load_tune_space(data)
    assert space.overrides({"sampling.tau.start": 4.0, "cells.nodes": 2}) == {
        "sampling": {"strategy": "gumbel", "tau": {"start": 4.0}}, "epochs": 4, "cells": {"nodes": 2}}
    assert space.retrain_overrides() == {"epochs": 3, "batch": {"p": 4}}
    assert "params.cells.node: unknown key" in error(with_("params/cells.node", {"type": "int", "low": 1, "high": 2}, data))
    assert "retrain.epoch: unknown key of the retrain recipe" in error(with_("retrain", {"epoch": 3}, data))
    assert "retrain: is for target: search" in error(with_("retrain", {"epochs": 3}))
    assert "metric.name: Input should be 'R1', 'R5', 'R10', 'mAP' or 'mINP'" in error(
        with_("metric", {"name": "loss"}))


def test_eval_every_is_the_tuners():
    for where in ("params/eval.every", "fixed/eval.every"):
        value = {"type": "int", "low": 0, "high": 2} if where.startswith("params") else 0
        assert "eval.every: is set by the tuner" in error(with_(where, value))
    search = {"name": "s", "target": "search", "metric": {"name": "mAP"},
              "params": {"weights.lr": {"type": "float", "low": 0.01, "high": 0.1}},
              "retrain": {"eval": {"every": 2}}}
    assert "retrain.eval.every: is set by the tuner" in error(search)


def test_validation_and_early_stopping_defaults_and_bounds(example):
    assert example.validation.fraction == 0.25 and example.validation.seed == 0
    assert example.early_stopping.grace_period is None  # the default: see the objective's
    assert example.early_stopping.reduction_factor == 2
    assert "validation.fraction: Input should be less than 1" in error(with_("validation", {"fraction": 1.0}))
    assert "early_stopping.reduction_factor: Input should be greater than or equal to 2" in error(
        with_("early_stopping", {"reduction_factor": 1}))


def test_shipped_names_load():
    assert load_tune_space("retrain_small").name == "retrain_small"
    search = load_tune_space("search_small")
    assert search.target == "search" and "cells.nodes" in search.params
    assert "not a shipped tune space (retrain_small, search_small)" in error("retrain_smal")


def test_unknown_key_suggests_close_matches():
    msg = error(with_("params/optimizer.lrr", {"type": "float", "low": 0.1, "high": 0.2}))
    assert "params.optimizer.lrr: unknown key of the retrain recipe; did you mean optimizer.lr" in msg
    msg = error(with_("fixed/epoch", 3))
    assert "fixed.epoch: unknown key" in msg and "epochs" in msg
    msg = error(with_("params/optimizer", {"type": "categorical", "choices": ["a"]}))
    assert "params.optimizer: is a section" in msg and "optimizer.lr" in msg


def test_field_type_mismatch():
    msg = error(with_("params/epochs", {"type": "float", "low": 1.0, "high": 3.0}))
    assert "params.epochs: the field is an integer; use type: int" in msg
    msg = error(with_("params/optimizer.name", {"type": "int", "low": 1, "high": 3}))
    assert "params.optimizer.name: a int distribution cannot set this field" in msg
    msg = error(with_("fixed/loss.rib", 0.1) | {"params": BASE["params"]})
    assert "fixed.loss.rib: is also a tuned parameter" in msg


@pytest.mark.parametrize("spec, expected", [
    ({"type": "float", "low": 0.5, "high": 0.1}, "params.loss.triplet_margin.low: 0.5 must be below high (0.1)"),
    ({"type": "float", "low": 0.2, "high": 0.2}, "params.loss.triplet_margin.low: 0.2 must be below high"),
    ({"type": "float", "low": 0.0, "high": 0.5, "log": True}, "params.loss.triplet_margin.low: 0.0 must be > 0 with log"),
    ({"type": "float", "low": -1.0, "high": 0.5, "log": True}, "must be > 0 with log"),
    ({"type": "float", "low": 0.1, "high": 0.5, "log": True, "step": 0.1}, "params.loss.triplet_margin.step: cannot be combined"),
    ({"type": "float", "low": 0.1, "high": 0.5, "step": 0.0}, "params.loss.triplet_margin.step: Input should be greater than 0"),
    ({"type": "float", "low": "a", "high": 0.5}, "params.loss.triplet_margin.low: Input should be a valid number"),
    ({"type": "float", "low": 0.1, "high": 0.5, "lg": True}, "params.loss.triplet_margin.lg: unknown field; did you mean 'log'? (allowed: type, low, high, log, step)"),
    ({"type": "float", "high": 0.5}, "params.loss.triplet_margin.low: required field is missing"),
    ({"type": "normal", "low": 0.1}, "params.loss.triplet_margin.type: unknown distribution type 'normal' (allowed: float, int, categorical)"),
    ({"low": 0.1, "high": 0.5}, "params.loss.triplet_margin.type: required field is missing"),
    ({"type": "categorical", "choices": []}, "params.loss.triplet_margin.choices: List should have at least 1 item"),
    ({"type": "categorical", "choices": [0.1, 0.2, 0.1]}, "params.loss.triplet_margin.choices[2]: 0.1 is listed twice"),
    ({"type": "categorical", "choices": [[0.1]]}, "params.loss.triplet_margin.choices[0]"),
])
def test_bad_float_and_categorical(spec, expected):
    assert expected in error(with_("params/loss.triplet_margin", spec))


@pytest.mark.parametrize("spec, expected", [
    ({"type": "int", "low": 8, "high": 2}, "params.batch.k.low: 8 must be at most high (2)"),
    ({"type": "int", "low": 2, "high": 8, "step": 0}, "params.batch.k.step: Input should be greater than or equal to 1"),
    ({"type": "int", "low": 0, "high": 8, "log": True}, "params.batch.k.low: 0 must be >= 1 with log"),
    ({"type": "int", "low": 2, "high": 8, "log": True, "step": 2}, "params.batch.k.step: must be 1 with log"),
    ({"type": "int", "low": 2.0, "high": 8}, "params.batch.k.low: Input should be a valid integer"),
])
def test_bad_int(spec, expected):
    assert expected in error(with_("params/batch.k", spec))


def test_int_and_categorical_edge_cases_load():
    space = load_tune_space(with_("params/batch.k", {"type": "int", "low": 4, "high": 4}))
    assert space.distributions()["batch.k"].single()
    space = load_tune_space(with_("params/grad_clip", {"type": "categorical", "choices": [None, 5.0]}))
    assert space.overrides({"grad_clip": None})["grad_clip"] is None


def test_top_level_errors():
    assert "target: Input should be 'retrain' or 'search'" in error(with_("target", "train"))
    assert "metric.mode: Input should be 'max' or 'min'" in error(with_("metric", {"name": "mAP", "mode": "up"}))
    assert "params: Dictionary should have at least 1 item" in error(with_("params", {}))
    assert "metric: required field is missing" in error({k: v for k, v in BASE.items() if k != "metric"})
    assert ("seed: unknown field (allowed: name, target, metric, params, fixed, retrain, "
            "validation, early_stopping)") in error(with_("seed", 1))
    assert "expected a YAML path or a dict" in error(3)


def test_yaml_errors(tmp_path):
    assert "no such file" in error(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparams: {a: [1, 2\n")
    msg = error(bad)
    assert msg.startswith(f"tune space {bad}: not valid YAML at line")
    evil = tmp_path / "evil.yaml"
    evil.write_text('name: !!python/object/apply:os.system ["echo pwned > ' + str(tmp_path / "pwned") + '"]\n')
    assert "not valid YAML" in error(evil)
    assert not (tmp_path / "pwned").exists()
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert "expected a mapping of fields at the top" in error(listed)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\nmetric: {name: mAP}\nparams:\n  optimizer.lr: {type: float, low: 1e-3, high: 1e-4}\n")
    assert f"tune space {typo}: params.optimizer.lr.low: 0.001 must be below high (0.0001)" in error(typo)
