"""What a tuning run leaves in its study folder, for both backends, and what it returns.

Files (written atomically at the end of a run; with the Optuna backend ``trials.csv`` and the
best-trial files are also rewritten after every trial): ``trials.csv`` (one row per trial of
the Optuna study: state, value, epochs, last value, parameters, times, run folder, error),
``best.yaml`` (the best complete trial's whole config, ready to use: a recipe for ``target:
retrain``, a search space for ``target: search``), ``best_trial.yaml`` (the same trial as data)
and ``optimization_history.png`` / ``param_importances.png`` (:mod:`nas_reid.viz.tune_plots`).
``best.yaml`` and ``best_trial.yaml`` are absent while no trial has completed.
The columns and keys of each file: docs/tuning.md, section `nas_reid.hpo.report`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas_reid.fileio import atomic_write_text
from nas_reid.hpo.objective import Objective

TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
BEST_TRIAL_YAML = "best_trial.yaml"


@dataclass
class TrialInfo:
    """What a backend knows of a trial beyond the Optuna study."""

    epochs: int | None = None
    last_value: float | None = None
    run_dir: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    """What :func:`~nas_reid.hpo.run_study` and :func:`~nas_reid.hpo.run_tune` return
    (``best_*`` are None while no trial has completed)."""

    backend: str
    study_name: str
    storage: str
    best_value: float | None
    best_params: dict[str, Any] | None
    """The best trial's values, flat dotted keys."""
    best_overrides: dict[str, Any] | None
    """The best trial's nested overrides (see ``best_trial.yaml``)."""
    n_complete: int
    n_pruned: int
    n_failed: int
    n_unfinished: int
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    """``trials.csv``, ``best.yaml``, ``best_trial.yaml``, the plots: name -> path."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Plots left out: name -> why."""
    interrupted: bool = False
    """The run stopped before all its trials finished (``resume=True`` continues it)."""
    metric: str = "mAP"
    """The validation metric ``best_value`` is (a fraction)."""


def best_trial(study: Any) -> Any:
    """The best complete trial, or None."""
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def optuna_trial_info(trial: Any) -> TrialInfo:
    """:class:`TrialInfo` from what the Optuna backend records: the intermediate values (one per
    epoch) and the user attributes ``run_dir`` and ``error``."""
    steps = trial.intermediate_values
    last = max(steps) if steps else None
    error = trial.user_attrs.get("error")
    if error is None and trial.state.name == "FAIL" and trial.user_attrs.get("status") == "running":
        error = "interrupted (the session ended)"
    return TrialInfo(epochs=last, last_value=None if last is None else float(steps[last]),
                     run_dir=trial.user_attrs.get("run_dir"), error=error)


def write_trials_csv(study: Any, objective: Objective, out: Path,
                     info: dict[int, TrialInfo]) -> Path:
    keys = list(objective.space.params)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["number", "state", "value", "epochs", "last_value",
                     *(f"params_{k}" for k in keys), "datetime_start", "datetime_complete",
                     "duration_s", "run_dir", "error"])
    for t in study.get_trials(deepcopy=False):
        extra = info.get(t.number, TrialInfo())
        duration = ((t.datetime_complete - t.datetime_start).total_seconds()
                    if t.datetime_start and t.datetime_complete else None)
        writer.writerow([
            t.number, t.state.name,
            repr(float(t.value)) if t.state.name == "COMPLETE" and t.value is not None else "",
            "" if extra.epochs is None else extra.epochs,
            "" if extra.last_value is None else repr(float(extra.last_value)),
            *("" if k not in t.params else t.params[k] for k in keys),
            t.datetime_start.isoformat() if t.datetime_start else "",
            t.datetime_complete.isoformat() if t.datetime_complete else "",
            "" if duration is None else round(duration, 3),
            extra.run_dir or "", (extra.error or "").replace("\n", " ")])
    return atomic_write_text(out / TRIALS_CSV, buf.getvalue())


def best_overrides(objective: Objective, params: dict[str, Any]) -> dict[str, Any]:
    """The nested overrides of a trial: recipe overrides (target retrain) or search-space
    overrides relative to ``schedule`` (target search)."""
    if objective.target == "retrain":
        return objective.recipe_overrides(params)
    return objective.space.overrides(params)


def write_best(study: Any, objective: Objective, out: Path) -> list[Path]:
    """``best.yaml`` and ``best_trial.yaml`` of the best complete trial (nothing without one)."""
    best = best_trial(study)
    if best is None:
        return []
    params = dict(best.params)
    overrides = best_overrides(objective, params)
    name = f"{study.study_name}-best"
    config = objective.best_config(params, name)
    metric, value = objective.metric, float(best.value)
    if objective.target == "retrain":
        what = "a retrain recipe"
        use = "nas-reid retrain --genotype <genotype> --recipe best.yaml"
        base = f"the recipe {objective.recipe.name!r}"
        source = "the tune space's fixed fields and the trial's values"
        if objective.reference:
            source = f"the reference {objective.reference}'s own, {source}"
    else:
        source = "the tune space's fixed fields and the trial's values"
        what = "a search space"
        use = "nas-reid search --space best.yaml"
        base = f"the search space {objective.search_space.name!r}"
    dumped = yaml.safe_dump(overrides, sort_keys=False).rstrip("\n").splitlines()
    header = [
        f"# nas-reid tune: {what}, the best trial of study {study.study_name!r}",
        f"# (trial {best.number}: validation {metric} {value:.4f}, {objective.space.metric.mode}).",
        f"# Use it with: {use}",
        f"# It is {base} with these overrides ({source}):",
        *(f"#   {line}" for line in dumped),
    ]
    config_path = atomic_write_text(out / BEST_YAML, "\n".join(header) + "\n"
                                    + yaml.safe_dump(config, sort_keys=False))
    record = {"study": study.study_name, "metric": metric,
              "direction": objective.space.direction, "trial": best.number, "value": value,
              "params": params, "overrides": overrides, "config": BEST_YAML}
    record_path = atomic_write_text(out / BEST_TRIAL_YAML, yaml.safe_dump(record, sort_keys=False))
    return [config_path, record_path]


def write_outputs(study: Any, objective: Objective, out: Path, info: dict[int, TrialInfo], *,
                  plots: bool = True) -> tuple[dict[str, Path], dict[str, str]]:
    """Every file of the study folder; returns ``(files, skipped plots)``."""
    files = {TRIALS_CSV: write_trials_csv(study, objective, out, info)}
    for path in write_best(study, objective, out):
        files[path.name] = path
    skipped: dict[str, str] = {}
    if plots:
        from nas_reid.viz.tune_plots import write_tune_plots

        written, skipped = write_tune_plots(study, out, metric=objective.metric)
        files.update({p.name: p for p in written})
    return files, skipped


def summarize(study: Any, objective: Objective, *, backend: str, storage: str, out: Path,
              files: dict[str, Path], skipped: dict[str, str], interrupted: bool) -> StudyResult:
    import optuna

    states = [t.state for t in study.get_trials(deepcopy=False)]
    ts = optuna.trial.TrialState
    best = best_trial(study)
    params = None if best is None else dict(best.params)
    return StudyResult(
        backend=backend, study_name=study.study_name, storage=storage,
        best_value=None if best is None else float(best.value), best_params=params,
        best_overrides=None if params is None else best_overrides(objective, params),
        n_complete=states.count(ts.COMPLETE), n_pruned=states.count(ts.PRUNED),
        n_failed=states.count(ts.FAIL),
        n_unfinished=states.count(ts.RUNNING) + states.count(ts.WAITING),
        out_dir=out, files=files, skipped=skipped, interrupted=interrupted,
        metric=objective.metric)
