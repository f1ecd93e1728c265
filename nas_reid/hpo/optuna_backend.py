"""Tuning retrains with a plain Optuna study, one trial after another, without Ray.

:func:`run_study` samples a :class:`~nas_reid.hpo.space.TuneSpace` with a seeded
``TPESampler``, trains each trial with :func:`~nas_reid.train.loop.retrain` in
``<out_dir>/trials/<trial number>``, reports every epoch's evaluation to the pruner and
returns a :class:`StudyResult`. The study lives in an Optuna RDB storage (default
``sqlite:///<out_dir>/study.db``), so ``resume=True`` continues it: trials already complete,
pruned or failed count toward ``trials``.

Files in ``out_dir`` (rewritten atomically after every trial):

- ``trials.csv``: one row per trial: ``number``, ``state``, ``value``, ``params_<key>`` per
  parameter, ``datetime_start``, ``datetime_complete``, ``duration_s``;
- ``best.yaml``: the best complete trial: ``study``, ``metric``, ``direction``, ``trial``,
  ``value``, ``params`` (flat dotted keys) and ``overrides`` (the nested recipe overrides,
  usable as ``load_recipe("bot", overrides)``); absent while no trial has completed.

A trial that raises (other than a pruning) is recorded as failed and the study goes on; bad
inputs raise :class:`~nas_reid.errors.UserError` before the study starts.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas_reid.errors import UserError
from nas_reid.evaluation.evaluate import METRIC_KEYS
from nas_reid.fileio import atomic_write_text
from nas_reid.hpo.space import TuneSpace, TuneSpaceError, load_tune_space
from nas_reid.train.loop import retrain

PRUNERS = ("median", "none")
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
STUDY_DB = "study.db"


@dataclass
class StudyResult:
    """What :func:`run_study` returns (``best_*`` are None while no trial has completed)."""

    study_name: str
    storage: str
    best_value: float | None
    best_params: dict[str, Any] | None
    """The best trial's values, flat dotted keys."""
    best_overrides: dict[str, Any] | None
    """The best trial's nested recipe overrides (``fixed`` merged with its values)."""
    n_complete: int
    n_pruned: int
    n_failed: int
    out_dir: Path


def _make_pruner(pruner: str) -> Any:
    import optuna

    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"pruner: unknown {pruner!r} (choose from {', '.join(PRUNERS)})")


def run_study(space: TuneSpace | str | os.PathLike | Mapping[str, Any], genotype: Any, data: Any, *,
              out_dir: str | os.PathLike, trials: int, seed: int = 0, storage: str | None = None,
              study_name: str | None = None, recipe: Any = None, resume: bool = False,
              pruner: str = "median", progress: bool = False) -> StudyResult:
    """Run (or, with ``resume``, continue) an Optuna study of ``trials`` retrains.

    Args:
        space: a :class:`TuneSpace`, a tune-space YAML path or dict (``target: retrain``).
        genotype, data: what every trial retrains (see :func:`~nas_reid.train.loop.retrain`).
        out_dir: the study folder: ``trials/<n>/`` run folders, ``trials.csv``, ``best.yaml``
            and, by default, the storage ``study.db``.
        trials: how many trials the study should hold in the end (complete, pruned or failed);
            with ``resume`` the ones already in the storage count.
        seed: the ``TPESampler`` seed.
        storage: an Optuna RDB URL; default ``sqlite:///<out_dir>/study.db``.
        study_name: default the space's name.
        recipe: the retrain recipe every trial starts from (the space's overrides on top).
        resume: continue an existing study of that name (without it, an existing study is an
            error).
        pruner: ``median`` (``MedianPruner(n_startup_trials=2, n_warmup_steps=1)`` on each
            epoch's evaluation metric) or ``none``.
        progress: Optuna's progress bar (each trial's training is always quiet).
    """
    import optuna

    space = load_tune_space(dict(space) if isinstance(space, Mapping) else space)
    if space.target != "retrain":
        raise TuneSpaceError(f"tune space {space.name!r}: target {space.target!r} is not yet "
                             "supported by the Optuna backend (only target: retrain)")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UserError(f"trials: must be a positive integer, got {trials!r}")
    metric = space.metric.name
    if metric not in METRIC_KEYS:
        raise TuneSpaceError(f"tune space {space.name!r}: metric.name {metric!r} is not a "
                             f"retrain evaluation metric (choose from {', '.join(METRIC_KEYS)})")
    pruner_obj = _make_pruner(pruner)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"out_dir {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = f"sqlite:///{(out / STUDY_DB).resolve()}"
    name = study_name or space.name
    sampler = optuna.samplers.TPESampler(seed=seed)
    try:
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner_obj,
                                    study_name=name, direction=space.direction,
                                    load_if_exists=bool(resume))
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"a study named {name!r} already exists in {storage}; pass resume to "
                        "continue it, or choose another study name or storage") from None
    except (ValueError, ImportError) as exc:  # a malformed URL, a missing DB driver
        raise UserError(f"storage {storage!r}: {exc}") from None
    if study.direction.name.lower() != space.direction:
        raise UserError(f"study {name!r} in {storage} has direction "
                        f"{study.direction.name.lower()}, the tune space asks to {space.direction}")

    done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                   optuna.trial.TrialState.FAIL)
    done = study.get_trials(deepcopy=False, states=done_states)
    remaining = max(trials - len(done), 0)

    def objective(trial: optuna.Trial) -> float:
        values = space.suggest(trial)
        overrides = space.overrides(values)
        trial.set_user_attr("overrides", overrides)

        def on_epoch(record: dict[str, Any]) -> None:
            evaluation = record.get("eval")
            value = evaluation.get(metric) if evaluation else None
            if value is None:
                return
            trial.report(float(value), step=int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {record['epoch']} ({metric} {value:.4f})")

        result = retrain(genotype, data, recipe=recipe, overrides=overrides,
                         out_dir=out / "trials" / str(trial.number), progress=False,
                         on_epoch=on_epoch)
        if not result.results:
            raise RuntimeError(f"trial {trial.number}: the retrain did not finish")
        return float(result.results["plain"][metric])

    def write_outputs(study: optuna.Study, _trial: Any = None) -> None:
        _write_outputs(study, space, out)

    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(Exception,),
                       callbacks=[write_outputs], show_progress_bar=bool(progress))
    write_outputs(study)

    all_trials = study.get_trials(deepcopy=False)
    count = {state: sum(t.state == state for t in all_trials) for state in done_states}
    best = _best_trial(study)
    return StudyResult(
        study_name=name, storage=storage,
        best_value=None if best is None else float(best.value),
        best_params=None if best is None else dict(best.params),
        best_overrides=None if best is None else space.overrides(dict(best.params)),
        n_complete=count[optuna.trial.TrialState.COMPLETE],
        n_pruned=count[optuna.trial.TrialState.PRUNED],
        n_failed=count[optuna.trial.TrialState.FAIL],
        out_dir=out,
    )


def _best_trial(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _write_outputs(study: Any, space: TuneSpace, out: Path) -> None:
    trials = study.get_trials(deepcopy=False)
    keys = list(space.params)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", *(f"params_{k}" for k in keys),
                     "datetime_start", "datetime_complete", "duration_s"])
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_start and t.datetime_complete else None
        writer.writerow([t.number, t.state.name, "" if t.value is None else repr(float(t.value)),
                         *("" if k not in t.params else t.params[k] for k in keys),
                         t.datetime_start.isoformat() if t.datetime_start else "",
                         t.datetime_complete.isoformat() if t.datetime_complete else "",
                         "" if duration is None else round(duration, 3)])
    atomic_write_text(out / TRIALS_CSV, buf.getvalue())
    best = _best_trial(study)
    if best is None:
        return
    doc = {"study": study.study_name, "metric": space.metric.name, "direction": space.direction,
           "trial": best.number, "value": float(best.value), "params": dict(best.params),
           "overrides": space.overrides(dict(best.params))}
    atomic_write_text(out / BEST_YAML, yaml.safe_dump(doc, sort_keys=False))
