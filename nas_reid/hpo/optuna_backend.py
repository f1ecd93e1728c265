"""Tuning with a plain Optuna study, one trial after another, without Ray.

:func:`run_study` samples a :class:`~nas_reid.hpo.space.TuneSpace` with a seeded
``TPESampler`` and runs each trial (:class:`~nas_reid.hpo.objective.Objective`) in
``<out_dir>/trials/<trial number>/``; every epoch's validation metric goes to the pruner
(``early_stopping``: ``asha``, ``median`` or ``none``, the rule of :mod:`nas_reid.hpo.pruning`
that the Ray backend's scheduler applies too). The study lives in an Optuna RDB storage (default
``sqlite:///<out_dir>/study.db``). A trial that raises is recorded as ``FAIL`` and the study goes
on; Ctrl-C stops it with the files written (the result says ``interrupted``); ``resume=True``
continues interrupted trials from their retrain's last checkpoint. Nothing outside
``<out_dir>/trials`` is written or removed. Files: :mod:`nas_reid.hpo.report` and
:mod:`nas_reid.hpo.study`. Bad inputs raise :class:`~nas_reid.errors.UserError` before anything
is written. Failures, resume and disk in detail: docs/tuning.md, section
`nas_reid.hpo.optuna_backend`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Mapping

from nas_reid.errors import UserError
from nas_reid.hpo.objective import RETRAIN_DIR, Objective
from nas_reid.hpo.pruning import optuna_pruner
from nas_reid.hpo.report import StudyResult, optuna_trial_info, summarize, write_outputs
from nas_reid.hpo.space import TuneSpace
from nas_reid.hpo.study import (
    EARLY_STOPPING,
    SetupGuard,
    check_same,
    open_study,
    prepare_run,
    read_settings,
    run_settings,
    sampler_seed,
    write_settings,
)
from nas_reid.train.checkpoint import LAST

TRIALS_DIR = "trials"


def make_pruner(early_stopping: str, objective: Objective) -> Any:
    """The Optuna pruner of ``asha``, ``median`` or ``none``: the rule of
    :mod:`nas_reid.hpo.pruning`, as the Ray backend's scheduler applies it."""
    if early_stopping not in EARLY_STOPPING:
        raise UserError(f"early stopping: unknown {early_stopping!r} (choose from "
                        f"{', '.join(EARLY_STOPPING)})")
    return optuna_pruner(objective.stopping_rule(early_stopping))


def run_study(space: TuneSpace | str | os.PathLike | Mapping[str, Any], genotype: Any = None,
              data: Any = None, *, out_dir: str | os.PathLike, trials: int,
              search_space: Any = None, recipe: Any = None, root: str | os.PathLike | None = None,
              seed: int = 0, storage: str | None = None, study_name: str | None = None,
              resume: bool = False, early_stopping: str = "asha", device: str = "cpu",
              num_workers: int = 0, progress: bool = False, echo: bool = False) -> StudyResult:
    """Run (or, with ``resume``, continue) an Optuna study of ``trials`` trials.

    Args:
        space: the tune space (:class:`TuneSpace`, YAML path or dict).
        genotype: ``target: retrain``: what every trial retrains (genotype, JSON, run folder or
            reference name).
        data, root: the dataset (its training split only is used, see
            :func:`~nas_reid.hpo.objective.validation_split`).
        out_dir: the study folder (absent or empty unless ``resume``).
        trials: how many trials the study should hold in the end (complete, pruned or failed;
            interrupted ones do not count); with ``resume`` the finished ones count.
        search_space: ``target: search``: the space every trial searches (default ``cpu_small``).
        recipe: the retrain recipe (default ``synthetic`` on synthreid, ``bot`` otherwise).
        seed: the ``TPESampler`` seed (a resumed session derives its own from it and the
            number of trials already in the study).
        storage: an Optuna RDB URL; default ``sqlite:///<out_dir>/study.db``.
        study_name: default the tune space's name.
        resume: continue the run recorded in ``out_dir`` (it must be the same run).
        early_stopping: ``asha``, ``median`` or ``none`` (see the module doc).
        device: where the trials train (``cpu`` or ``cuda``).
        num_workers: image-loading processes of each trial (0: in the trial's process).
        progress: Optuna's progress bar (each trial's training is always quiet).
        echo: one line on stderr when a trial starts (its values and folder), after each of
            its epochs (the metric in %, the loss) and when it ends (complete, pruned, failed).
    """
    import optuna

    setup = prepare_run(space, data, genotype=genotype, search_space=search_space, recipe=recipe,
                        root=root, device=device, trials=trials, early_stopping=early_stopping,
                        out_dir=out_dir, resume=resume, study_name=study_name, storage=storage,
                        num_workers=num_workers)
    trials, objective, out, name, url = setup.trials, setup.objective, setup.out, setup.name, setup.url
    space = objective.space
    settings = run_settings(objective, backend="optuna", study_name=name, storage=url, seed=seed,
                            early_stopping=early_stopping, trials=trials)
    if resume:
        check_same(read_settings(out), settings, out)
    with SetupGuard() as guard:
        guard.make_folder(out)
        study = open_study(url, name, space.direction, resume=resume, guard=guard,
                           pruner=make_pruner(early_stopping, objective))
        write_settings(out, settings)
    study.sampler = optuna.samplers.TPESampler(
        seed=sampler_seed(seed, len(study.get_trials(deepcopy=False))))
    if resume:
        _continue_interrupted(study)
    remaining = max(trials - _counted(study), 0)
    metric = objective.metric

    def run_trial(trial: optuna.Trial) -> float:
        continues = trial.user_attrs.get("continues")
        values = space.suggest(trial)
        work = out / TRIALS_DIR / str(trial.number)
        if continues is not None:  # the interrupted trial's folder and the epochs it reported
            work = _continued_folder(study, continues, out / TRIALS_DIR)
            for step, value in sorted(study.trials[continues].intermediate_values.items()):
                trial.report(value, step)
        trial.set_user_attr("run_dir", str(work / RETRAIN_DIR))
        trial.set_user_attr("status", "running")  # stays so if the session ends in the trial
        name = f"trial {trial.number}" + (f" (continues {continues})" if continues is not None
                                          else "")
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in values.items())
        _echo(echo, f"{name}: {shown}; in {work}")

        def report(metrics: dict[str, Any]) -> None:
            trial.report(metrics[metric], metrics["epoch"])
            _echo(echo, f"{name} epoch {metrics['epoch']}/{metrics['epochs']}: validation "
                        f"{metric} {100 * metrics[metric]:.1f} %, loss {metrics['loss']:.3f}")
            if metrics["epoch"] < metrics["epochs"] and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {metrics['epoch']} "
                                         f"({metric} {100 * metrics[metric]:.1f} %)")

        try:
            if not _inside(work, out / TRIALS_DIR):
                raise UserError(f"trial folder {work} leads outside {out / TRIALS_DIR} "
                                f"(to {work.resolve()}); it is left alone")
            value = objective.run(values, work, report, resume=continues is not None)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("status", "done")
            _echo(echo, f"{name} {exc}")
            raise
        except Exception as exc:
            trial.set_user_attr("status", "done")
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            _echo(echo, f"{name} failed: {type(exc).__name__}: {exc}")
            raise
        except BaseException:  # Ctrl-C: Optuna records FAIL; --resume continues the trial
            trial.set_user_attr("error", "interrupted")
            raise
        trial.set_user_attr("status", "done")
        _echo(echo, f"{name} complete: validation {metric} {100 * value:.1f} %")
        return value

    def write(study: optuna.Study, _trial: Any = None) -> None:
        _drop_pruned_checkpoints(study, out / TRIALS_DIR)
        info = {t.number: optuna_trial_info(t) for t in study.get_trials(deepcopy=False)}
        write_outputs(study, objective, out, info, plots=False)

    interrupted = False
    if remaining:
        try:
            study.optimize(run_trial, n_trials=remaining, catch=(Exception,), callbacks=[write],
                           show_progress_bar=bool(progress))
        except KeyboardInterrupt:
            interrupted = True
    info = {t.number: optuna_trial_info(t) for t in study.get_trials(deepcopy=False)}
    files, skipped = write_outputs(study, objective, out, info)
    return summarize(study, objective, backend="optuna", storage=url, out=out, files=files,
                     skipped=skipped, interrupted=interrupted)


def _echo(enabled: bool, text: str) -> None:
    if enabled:
        print(text, file=sys.stderr, flush=True)


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` lies strictly inside ``folder``, symbolic links resolved."""
    return path.resolve().is_relative_to(folder.resolve()) and path.resolve() != folder.resolve()


def _continued_folder(study: Any, number: int, trials_dir: Path) -> Path:
    """The folder in which the interrupted trial ``number`` continues: the one its ``run_dir``
    records if that lies inside ``trials_dir``; else (an edited study, a folder moved, a link
    out) ``trials_dir/<the first trial of its chain of continuations>``, with a warning: a
    resumed study writes and removes nothing outside its own folder."""
    trials = study.get_trials(deepcopy=False)
    first = number
    while trials[first].user_attrs.get("continues") is not None:
        first = int(trials[first].user_attrs["continues"])
    default = trials_dir / str(first)
    run_dir = trials[number].user_attrs.get("run_dir")  # absent if killed before it was set
    if run_dir is None:
        return default
    recorded = Path(run_dir).parent
    if _inside(recorded, trials_dir):
        return recorded
    warnings.warn(f"trial {number}: its recorded folder {recorded} is outside {trials_dir}; it is "
                  f"left alone and the trial continues in {default}", stacklevel=2)
    return default


def _drop_pruned_checkpoints(study: Any, trials_dir: Path) -> None:
    """Remove the checkpoints of every pruned trial's retrain (inside ``trials_dir`` only): a
    pruned trial never resumes, and each is a whole retrain state (~170 MB for ResNet-18 with
    Adam). Its run folder keeps its config, genotype and metrics."""
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get("run_dir")
        if t.state.name != "PRUNED" or run_dir is None:
            continue
        checkpoints = Path(run_dir) / LAST.parent
        if checkpoints.is_dir() and _inside(checkpoints, trials_dir):
            shutil.rmtree(checkpoints, ignore_errors=True)


def _interrupted(trial: Any) -> bool:
    """Ended by Ctrl-C, or left ``RUNNING`` by a session that was killed."""
    return trial.state.name == "RUNNING" or (
        trial.state.name == "FAIL" and trial.user_attrs.get("status") == "running")


def _counted(study: Any) -> int:
    """Finished trials that count toward ``trials`` (not the interrupted ones)."""
    return sum(t.state.name in ("COMPLETE", "PRUNED", "FAIL") and not _interrupted(t)
               for t in study.get_trials(deepcopy=False))


def _continue_interrupted(study: Any) -> None:
    """Record the trials a killed session left ``RUNNING`` as failed (interrupted), and queue
    one continuation of every interrupted trial not yet continued."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get("continues") for t in trials}
    for t in trials:
        if not _interrupted(t):
            continue
        if t.state.name == "RUNNING":
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        if t.number not in continued:
            study.enqueue_trial(dict(t.params), user_attrs={"continues": t.number})


class _InterruptedTrial(logging.Filter):
    """Optuna logs a trial that Ctrl-C stopped as failed, with a traceback: one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.exc_info[0] if record.exc_info else None
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            line = re.sub(r" because of the following error: .*", "", record.getMessage(),
                          flags=re.DOTALL)
            line = line.replace(" failed ", " interrupted (Ctrl-C) ", 1)
            record.msg = f"{line}; --resume continues it"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


logging.getLogger("optuna.study._optimize").addFilter(_InterruptedTrial())
