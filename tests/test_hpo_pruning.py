"""The early-stopping rule of the tuner (nas_reid.hpo.pruning) and the two backends that apply
it: the same reported values must stop the same trials at the same epochs under Optuna's pruner
and Ray's scheduler. No training: trials are lists of synthetic per-epoch values, reported one
trial after another (as the Optuna backend runs them, and Ray with one trial at a time)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import optuna
import pytest

from nas_reid.hpo import Objective
from nas_reid.hpo.pruning import StoppingRule, default_grace_period, optuna_pruner
from tests.tiny import tiny_genotype, tiny_tune_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def optuna_decisions(rule: StoppingRule, trials: list[list[float]]) -> list[tuple[str, int]]:
    """``(state, last epoch)`` of each trial, run as the Optuna backend runs one: report every
    epoch, ask the pruner before the last."""
    study = optuna.create_study(direction="maximize", pruner=optuna_pruner(rule))
    out = []
    for values in trials:
        trial = study.ask()
        for epoch, value in enumerate(values, 1):
            trial.report(value, epoch)
            if epoch < len(values) and trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                out.append(("PRUNED", epoch))
                break
        else:
            study.tell(trial, values[-1])
            out.append(("COMPLETE", len(values)))
    return out


def ray_decisions(rule: StoppingRule, trials: list[list[float]]) -> list[tuple[str, int]]:
    """The same through the Ray backend's scheduler, one result after another."""
    from ray.tune.schedulers import TrialScheduler

    from nas_reid.hpo.ray_backend import RuleScheduler

    scheduler = RuleScheduler(rule, "mAP")
    out = []
    for number, values in enumerate(trials):
        trial = SimpleNamespace(trial_id=f"trial_{number}")
        for epoch, value in enumerate(values, 1):
            action = scheduler.on_trial_result(None, trial, {"epoch": epoch, "mAP": value})
            if action == TrialScheduler.STOP:
                out.append(("PRUNED", epoch))
                break
        else:
            out.append(("COMPLETE", len(values)))
    return out


BACKENDS = {"optuna": optuna_decisions, "ray": ray_decisions}

# six epochs; ASHA's rungs at 2 and 4 (grace 2, reduction factor 2)
TRIALS = [
    [0.10, 0.20, 0.30, 0.40, 0.45, 0.50],  # first at every rung: goes on
    [0.05, 0.15, 0.20, 0.30, 0.35, 0.40],  # below trial 0 at epoch 2: stops there
    [0.02, 0.25, 0.28, 0.35, 0.40, 0.60],  # best at 2 (top 1 of 3), below trial 0 at 4: stops
    [0.30, 0.30, 0.35, 0.45, 0.50, 0.55],  # top 2 of 4 at 2, best at 4 (top 1 of 3): goes on
    [0.01, 0.01, 0.01, 0.01, 0.01, 0.01],  # bottom at 2: stops
]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_asha_stops_below_the_best_share_of_each_rung(backend):
    rule = StoppingRule("asha", grace_period=2, reduction_factor=2, max_epochs=6)
    assert rule.rungs() == [2, 4]
    assert BACKENDS[backend](rule, TRIALS) == [
        ("COMPLETE", 6), ("PRUNED", 2), ("PRUNED", 4), ("COMPLETE", 6), ("PRUNED", 2)]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_the_median_rule_waits_for_the_grace_period_and_two_others(backend):
    rule = StoppingRule("median", grace_period=2, reduction_factor=2, max_epochs=6)
    # trial 1 is below trial 0 at every epoch but has no two others to take a median of;
    # trial 2 is never below the median of trials 0 and 1 (at epoch 4 it equals it: 0.35);
    # trial 3 never either; trial 4 is below at epoch 2, the first after the grace period
    assert BACKENDS[backend](rule, TRIALS) == [
        ("COMPLETE", 6), ("COMPLETE", 6), ("COMPLETE", 6), ("COMPLETE", 6), ("PRUNED", 2)]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_a_trial_is_never_stopped_at_its_last_epoch_nor_without_a_rule(backend):
    last = [[0.5, 0.5], [0.1, 0.1]]
    assert BACKENDS[backend](StoppingRule("asha", 2, 2, 2), last) == [("COMPLETE", 2)] * 2
    assert BACKENDS[backend](StoppingRule("none", 1, 2, 6), TRIALS) == [("COMPLETE", 6)] * 5


@pytest.mark.parametrize("name", ["asha", "median"])
@pytest.mark.parametrize("seed", range(4))
def test_both_backends_decide_alike_on_the_same_values(name, seed):
    rng = random.Random(seed)
    trials = [[round(rng.random(), 3) for _ in range(8)] for _ in range(10)]
    for grace in (1, 2, 3):
        rule = StoppingRule(name, grace_period=grace, reduction_factor=rng.choice([2, 3]),
                            max_epochs=8)
        assert optuna_decisions(rule, trials) == ray_decisions(rule, trials), (grace, trials)


def test_min_mode_stops_the_larger_values():
    rule = StoppingRule("asha", 1, 2, 3, mode="min")
    assert optuna_decisions(rule, [[0.2, 0.2, 0.2], [0.5, 0.5, 0.5]])[1] == ("PRUNED", 1)


def test_the_default_grace_period_covers_the_warmup_and_a_quarter_of_the_epochs():
    assert default_grace_period(1, 5) == 3  # retrain_small: 1 epoch of warm-up in 5
    assert default_grace_period(0, 2) == 1
    assert default_grace_period(2, 20) == 7
    assert default_grace_period(1, 2) == 2  # as long as the trial: no early stopping
    # the case: after a one-epoch warm-up the eventual winner lags by noise at epoch 1
    noisy = [[0.10, 0.20, 0.30, 0.31, 0.31], [0.04, 0.25, 0.37, 0.38, 0.40]]
    hasty = StoppingRule("asha", grace_period=1, reduction_factor=2, max_epochs=5)
    patient = StoppingRule("asha", grace_period=default_grace_period(1, 5), reduction_factor=2,
                           max_epochs=5)
    for decide in BACKENDS.values():
        assert decide(hasty, noisy)[1] == ("PRUNED", 1)
        assert decide(patient, noisy) == [("COMPLETE", 5), ("COMPLETE", 5)]


def test_the_objective_takes_the_warmup_from_the_recipe_unless_the_space_says(dataset):
    space = {**tiny_tune_space(), "fixed": {"epochs": 8, "batch": {"p": 2, "k": 4},
                                            "lr_schedule": {"warmup_epochs": 2, "milestones": []}}}
    objective = Objective.build(space, dataset, genotype=tiny_genotype(), recipe="bot")
    assert objective.grace_period == 4  # 2 of warm-up, 8 / 4
    rule = objective.stopping_rule("asha")
    assert (rule.grace_period, rule.max_epochs, rule.rungs()) == (4, 8, [4])
    tuned = {**space, "params": {"lr_schedule.warmup_epochs": {"type": "int", "low": 0, "high": 3}},
             "fixed": {"epochs": 8, "batch": {"p": 2, "k": 4}, "lr_schedule": {"milestones": []}}}
    assert Objective.build(tuned, dataset, genotype=tiny_genotype(),
                           recipe="bot").grace_period == 5  # the longest warm-up it may get
    given = {**space, "early_stopping": {"grace_period": 1}}
    assert Objective.build(given, dataset, genotype=tiny_genotype(), recipe="bot").grace_period == 1
