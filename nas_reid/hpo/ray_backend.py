"""Tuning with Ray Tune: trials scheduled on this machine or on a Ray cluster, sampled by Optuna.

:func:`run_tune` runs a ``tune.Tuner`` over the function trainable :func:`_trainable` (one
trial of :class:`~nas_reid.hpo.objective.Objective`) with ``cpus_per_trial`` /
``gpus_per_trial`` per trial, Optuna's seeded ``TPESampler`` writing into the Optuna study of the
run's RDB storage (default ``sqlite:///<out>/study.db``) and :class:`RuleScheduler` stopping
trials by the rule of :mod:`nas_reid.hpo.pruning` (recorded in Optuna as ``PRUNED``). A trial
that raises is recorded as failed and the others go on. Each epoch a trial reports its figures
with its trial folder as the checkpoint, so a restarted trial resumes its retrain exactly; what
persists is under ``storage_path`` (default ``<out>/ray``). ``address`` (or ``RAY_ADDRESS``)
joins a cluster; without one a local Ray is started and shut down at the end. ``resume=True``
restores the experiment with ``Tuner.restore``, which unpickles from the storage path: it must
be storage only trusted users write to (a resumed run refuses any but its study's).
Files: :mod:`nas_reid.hpo.report` and :mod:`nas_reid.hpo.study`. Configuration, storage,
cluster, trust and resume in detail: docs/tuning.md, section `nas_reid.hpo.ray_backend`.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from nas_reid.errors import UserError
from nas_reid.hpo.objective import RETRAIN_DIR, Objective
from nas_reid.hpo.pruning import StoppingRule
from nas_reid.hpo.report import StudyResult, TrialInfo, summarize, write_outputs
from nas_reid.hpo.space import TuneSpace
from nas_reid.hpo.study import (
    SetupGuard,
    check_same,
    open_study,
    prepare_run,
    read_settings,
    run_settings,
    sampler_seed,
    write_settings,
)

TRIAL_KEY = "trial_number"
"""The config entry that carries a trial's Optuna number (names its folder)."""
RAY_DIR = "ray"
STORAGE_PATH_ATTR = "nas_reid_ray_storage_path"
"""The Optuna study's user attribute recording the Ray storage path it was created with."""
WORK_DIR = "nas-reid-work"
CONNECT_TIMEOUT_S = 5.0


# ------------------------------------------------------------------------------ the trial


def _trainable(config: dict[str, Any], objective: Objective, threads: int) -> None:
    """One trial in a Ray worker: restore the trial folder from the last checkpoint (if any),
    run the objective, report every epoch with the trial folder as the checkpoint."""
    import torch

    torch.set_num_threads(threads)
    values = {key: config[key] for key in objective.space.params}
    work = _work_dir(config)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            checkpoint.to_directory(str(work))

        def report(metrics: dict[str, Any]) -> None:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(work)))

        objective.run(values, work, report, resume=checkpoint is not None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _work_dir(config: dict[str, Any]) -> Path:
    """An empty folder for a trial's run folders on the node it runs on. Ray starts each trial
    in its own working directory in Ray's session folder (``RAY_CHDIR_TO_TRIAL_DIR``, on by
    default; not synced to the storage path): the folder goes there, so that a trial Ray stops
    without running its ``finally`` (the scheduler's stop, a kill) leaves its files with Ray's
    own; with that switched off, a temporary folder."""
    if os.environ.get("RAY_CHDIR_TO_TRIAL_DIR", "1") != "0":
        work = Path.cwd() / WORK_DIR
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        return work
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"nas-reid-trial{config.get(TRIAL_KEY, '')}-"))


def _suggest(space: TuneSpace, trial: Any) -> dict[str, Any]:
    """OptunaSearch's define-by-run space: the tune space's values, and the trial's number."""
    space.suggest(trial)
    return {TRIAL_KEY: trial.number}


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.config[TRIAL_KEY]}"


class _Searcher(OptunaSearch):
    """``OptunaSearch`` that records a trial the scheduler stopped before its last epoch as
    Optuna's ``PRUNED`` (``OptunaSearch`` would record its last early value as ``COMPLETE``)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if result and not error and result.get("epoch", 0) < result.get("epochs", 0):
            result = None  # without a result and an error, OptunaSearch tells PRUNED
        super().on_trial_complete(trial_id, result=result, error=error)


class RuleScheduler(FIFOScheduler):
    """Stops a trial by a :class:`~nas_reid.hpo.pruning.StoppingRule` on each result's
    ``epoch`` and ``metric``, against the results of the other trials it has seen at that
    epoch (the Optuna backend's pruner applies the same rule)."""

    def __init__(self, rule: StoppingRule, metric: str) -> None:
        super().__init__()
        self.rule, self.result_key = rule, metric
        self.seen: dict[int, dict[str, float]] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch, value = result.get("epoch"), result.get(self.result_key)
        if epoch is None or value is None:
            return TrialScheduler.CONTINUE
        at = self.seen.setdefault(int(epoch), {})
        others = [v for trial_id, v in at.items() if trial_id != trial.trial_id]
        at[trial.trial_id] = float(value)
        if self.rule.stops(int(epoch), float(value), others):
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return f"nas-reid early stopping: {self.rule.rule}"


def _scheduler(early_stopping: str, objective: Objective) -> Any:
    return RuleScheduler(objective.stopping_rule(early_stopping), objective.metric)


# ------------------------------------------------------------------------------ Ray itself


def _check_reachable(address: str) -> None:
    """A ``ray://HOST:PORT`` or ``HOST:PORT`` address must accept a TCP connection (Ray would
    otherwise retry for minutes)."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise UserError(f"--address {address!r}: expected auto, ray://HOST:PORT or HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"--address {address!r}: no Ray cluster reachable at {host}:{port} "
                        f"({exc.strerror or exc})") from None


def _auth_hint() -> str:
    """What to try when a connection to a cluster fails and this process sends no token: Ray
    clusters started by ``ray start`` use token authentication by default (Ray 2.5x), and a
    client without ``RAY_AUTH_MODE=token`` is turned away (Ray Client then only times out)."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return ("; check the cluster's token (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
                "~/.ray/auth_token)")
    return ("; if the cluster uses token authentication (the default of `ray start`), set "
            "RAY_AUTH_MODE=token and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token)")


def is_remote_client(address: str | None) -> bool:
    """Whether ``address`` is Ray Client (``ray://``) to another machine: the Tuner then runs on
    the cluster's head node, so file paths (an SQLite study) are that node's, not this one's."""
    if not address or not address.startswith("ray://"):
        return False
    host = urlsplit(address).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1", "") or host.startswith("127."):
        return False
    try:
        mine = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
        theirs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return True
    return not theirs & (mine | {"127.0.0.1", "::1"})


def cluster_address(address: str | None) -> str | None:
    """The cluster to join: ``address``, else ``RAY_ADDRESS``; None (or ``local``): none, a new
    local Ray."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address == "local" else address


@contextmanager
def ray_session(address: str | None = None, *, progress: bool = False) -> Iterator[bool]:
    """Connect to Ray for the block; yields whether this call started a local instance (then
    shut down at the end). ``address`` (else ``RAY_ADDRESS``): ``auto``, ``ray://HOST:PORT`` or
    ``HOST:PORT`` (checked to accept a connection first); none or ``local``: a new local
    instance. An existing connection in this process is used as it is."""
    import ray

    address = cluster_address(address)
    if address is not None:
        _check_reachable(address)
    if ray.is_initialized():
        yield False
        return
    quiet = dict(include_dashboard=False, log_to_driver=bool(progress),
                 logging_level=logging.INFO if progress else logging.WARNING)
    if address is None:
        ray.init(address="local", num_cpus=os.cpu_count() or 1, **quiet)
        started = True
    else:
        try:
            ray.init(address=address, **({} if address.startswith("ray://") else quiet))
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"--address {address!r}: could not connect to Ray: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            f"{_auth_hint()}") from None
        started = False
    try:
        yield started
    finally:
        if started:
            ray.shutdown()


def _check_resources(cpus: float, gpus: float, started: bool) -> None:
    import ray

    have = ray.cluster_resources()
    short = [f"{need:g} {kind}" for kind, need in (("CPU", cpus), ("GPU", gpus))
             if need > have.get(kind, 0)]
    if not short:
        return
    message = (f"a trial asks for {' and '.join(short)} per trial but the Ray cluster has "
               f"{have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU")
    if started:
        raise UserError(message + "; lower --cpus-per-trial / --gpus-per-trial")
    warnings.warn(message + "; trials wait until the cluster grows (autoscaling)", stacklevel=3)


# ------------------------------------------------------------------------------ the run


def _storage_path(storage_path: str | os.PathLike | None, out: Path) -> str:
    if storage_path is None:
        return str((out / RAY_DIR).resolve())
    text = str(storage_path)
    return text if "://" in text else str(Path(text).expanduser().resolve())


def _check_storage_path(spath: str, saved: Mapping[str, Any], url: str, name: str) -> None:
    """Raise :class:`UserError` unless ``spath`` is the storage path the study was created
    with: the one its Optuna study records (:data:`STORAGE_PATH_ATTR`), else, for a study
    older than that record, the one ``tune.yaml`` holds. ``Tuner.restore`` unpickles
    ``tuner.pkl`` from there, which runs whatever code the file holds: a resumed run trusts
    no other path (an edited ``tune.yaml`` or ``--storage-path`` included)."""
    import optuna

    recorded = None
    try:
        study = optuna.load_study(study_name=name, storage=url)
        recorded = study.user_attrs.get(STORAGE_PATH_ATTR)
    except Exception:  # noqa: BLE001 - a storage that does not open is reported by open_study
        pass
    recorded = recorded or (saved.get("ray") or {}).get("storage_path")
    if recorded is not None and recorded != spath:
        raise UserError(f"--storage-path {spath} is not the storage path study {name!r} was "
                        f"created with ({recorded}); a resume unpickles Ray's tuner.pkl from "
                        "it, so only the study's own is used")


def _experiment_name(study_name: str, index: int) -> str:
    return study_name if index == 0 else f"{study_name}-{index + 1}"


def run_tune(space: TuneSpace | str | os.PathLike | Mapping[str, Any], genotype: Any = None,
             data: Any = None, *, out_dir: str | os.PathLike, trials: int,
             search_space: Any = None, recipe: Any = None, root: str | os.PathLike | None = None,
             seed: int = 0, storage: str | None = None, study_name: str | None = None,
             resume: bool = False, early_stopping: str = "asha", address: str | None = None,
             storage_path: str | os.PathLike | None = None, cpus_per_trial: float = 1.0,
             gpus_per_trial: float = 0.0, max_concurrent: int | None = None,
             threads: int | None = None, num_workers: int | None = None, progress: bool = False,
             callbacks: Sequence[Any] | None = None) -> StudyResult:
    """Run (or, with ``resume``, continue) a Ray Tune experiment of ``trials`` trials.

    Args:
        space, genotype, data, root, search_space, recipe, seed, storage, study_name,
            early_stopping: as for :func:`~nas_reid.hpo.run_study`.
        out_dir: the study folder (absent or empty unless ``resume``).
        trials: the trials the study holds in the end (with ``resume`` the ones already in it
            count; a restored experiment runs the trials it was started with).
        resume: continue the run recorded in ``out_dir`` (it must be the same run).
        address: a Ray cluster (``auto``, ``ray://HOST:PORT``, ``HOST:PORT``); default
            ``RAY_ADDRESS``, else a local Ray.
        storage_path: where trials persist (a path every node reaches, or a URI such as
            ``s3://bucket/tune``); default ``<out_dir>/ray``.
        cpus_per_trial, gpus_per_trial: each trial's resources (a fraction of a GPU allowed;
            with a GPU share trials train on ``cuda``).
        max_concurrent: at most this many trials at once (default: as the resources allow).
        threads: torch threads per trial (default ``cpus_per_trial`` rounded down, at least 1).
        num_workers: image-loading processes per trial (default: on a GPU share,
            ``cpus_per_trial`` rounded down, at most 8; else 0).
        progress: Ray Tune's progress tables and the workers' logs.
        callbacks: ``tune.Callback`` objects for the ``RunConfig``.
    """
    import optuna

    if not cpus_per_trial > 0:
        raise UserError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
    if not gpus_per_trial >= 0:
        raise UserError(f"--gpus-per-trial must be zero or positive, got {gpus_per_trial}")
    if max_concurrent is not None and max_concurrent < 1:
        raise UserError(f"--max-concurrent must be at least 1, got {max_concurrent}")
    threads = threads or max(1, int(cpus_per_trial))
    device = "cuda" if gpus_per_trial > 0 else "cpu"
    if num_workers is None:
        num_workers = min(8, int(cpus_per_trial)) if device == "cuda" else 0
    address = cluster_address(address)
    if is_remote_client(address) and (storage is None or storage_path is None):
        raise UserError(
            f"--address {address}: through Ray Client the experiment runs on the cluster's head "
            "node, which writes the Optuna study and the trials' records; give --storage an RDB "
            "URL this machine reaches too (e.g. postgresql://...) and --storage-path a folder or "
            "URI the cluster's nodes write to (e.g. s3://... or NFS), or run nas-reid tune on a "
            "node of the cluster with --address auto")
    setup = prepare_run(space, data, genotype=genotype, search_space=search_space, recipe=recipe,
                        root=root, device=device, trials=trials, early_stopping=early_stopping,
                        out_dir=out_dir, resume=resume, study_name=study_name, storage=storage,
                        num_workers=num_workers)
    trials, objective, out, name, url = setup.trials, setup.objective, setup.out, setup.name, setup.url
    space = objective.space
    spath = _storage_path(storage_path, out)
    ray_settings = {"storage_path": spath, "cpus_per_trial": float(cpus_per_trial),
                    "gpus_per_trial": float(gpus_per_trial), "max_concurrent": max_concurrent}
    settings = run_settings(objective, backend="ray", study_name=name, storage=url, seed=seed,
                            early_stopping=early_stopping, trials=trials, ray=ray_settings)
    experiments: list[dict[str, Any]] = []
    if resume:
        saved = read_settings(out)
        _check_storage_path(spath, saved, url, name)
        check_same({k: v for k, v in saved.items() if k != "experiments"}, settings, out)
        experiments = list(saved.get("experiments") or [])
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    with ray_session(address, progress=progress) as started:
        _check_resources(float(cpus_per_trial), float(gpus_per_trial), started)
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, objective=objective, threads=threads),
            {"cpu": float(cpus_per_trial), "gpu": float(gpus_per_trial)})
        with SetupGuard() as guard:
            guard.make_folder(out)
            study = open_study(url, name, space.direction, resume=resume, guard=guard)
            if not resume:
                study.set_user_attr(STORAGE_PATH_ATTR, spath)
            if not resume and tune.Tuner.can_restore(f"{spath}/{_experiment_name(name, 0)}"):
                raise UserError(f"--storage-path {spath} already holds a Ray experiment named "
                                f"{name!r}; choose another --study-name or --storage-path")
            write_settings(out, {**settings, "experiments": experiments})

        def save_experiments() -> None:
            write_settings(out, {**settings, "experiments": experiments})

        interrupted = False
        if experiments:  # resume: the last experiment first
            last = experiments[-1]
            path = f"{spath}/{last['name']}"
            if tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                           resume_errored=False, restart_errored=False)
                tuner.fit()
                interrupted = _unfinished(path, last["trials"])
            else:  # stopped before Ray saved any state: its trials were never recorded
                experiments.pop()
                save_experiments()
        if not interrupted:
            _fail_orphans(study)
            remaining = trials - len(study.get_trials(deepcopy=False))
            if remaining > 0:
                exp = {"name": _experiment_name(name, len(experiments)), "trials": remaining}
                experiments.append(exp)
                save_experiments()
                searcher = _Searcher(
                    functools.partial(_suggest, space), metric=objective.metric,
                    mode=space.metric.mode, study_name=name,
                    sampler=optuna.samplers.TPESampler(
                        seed=sampler_seed(seed, len(study.get_trials(deepcopy=False)))),
                    storage=optuna.storages.RDBStorage(url))
                tuner = tune.Tuner(
                    trainable,
                    tune_config=tune.TuneConfig(
                        metric=objective.metric, mode=space.metric.mode, search_alg=searcher,
                        scheduler=_scheduler(early_stopping, objective), num_samples=remaining,
                        max_concurrent_trials=max_concurrent, trial_name_creator=_trial_dirname,
                        trial_dirname_creator=_trial_dirname),
                    run_config=_run_config(exp["name"], spath, progress, callbacks))
                tuner.fit()
                path = f"{spath}/{exp['name']}"
                interrupted = _unfinished(path, remaining)
                if not interrupted:
                    _fail_orphans(study)
        paths = [f"{spath}/{e['name']}" for e in experiments]
        if not interrupted:
            _drop_pruned_checkpoints(paths, study)
        info = _trial_info(paths, objective.metric)
    files, skipped = write_outputs(study, objective, out, info)
    return summarize(study, objective, backend="ray", storage=url, out=out, files=files,
                     skipped=skipped, interrupted=interrupted)


def _run_config(name: str, storage_path: str, progress: bool, callbacks: Sequence[Any] | None) -> Any:
    """A raising trial is recorded as failed (no retry); the last checkpoint of each trial is kept."""
    return tune.RunConfig(name=name, storage_path=storage_path, verbose=1 if progress else 0,
                          failure_config=tune.FailureConfig(max_failures=0),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                          callbacks=list(callbacks or []))


def _unfinished(path: str, planned: int) -> bool:
    """Whether the experiment at ``path`` stopped before all its ``planned`` trials ended."""
    analysis = tune.ExperimentAnalysis(path)
    done = [t for t in analysis.trials if t.status in ("TERMINATED", "ERROR")]
    return len(done) < planned


def _fail_orphans(study: Any) -> None:
    """Optuna trials still ``RUNNING`` once every Ray experiment has ended were created by a
    run killed before Ray saved them: record them as failed."""
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _trial_results(paths: Sequence[str]) -> Iterator[tuple[int, Any]]:
    """``(Optuna number, Ray result)`` of every trial of the experiments at ``paths``."""
    for path in paths:
        if not tune.Tuner.can_restore(path):
            continue
        for result in tune.ResultGrid(tune.ExperimentAnalysis(path)):
            dirname = Path(str(result.path)).name
            if dirname.startswith("trial_") and dirname[6:].isdigit():
                yield int(dirname[6:]), result


def _drop_pruned_checkpoints(paths: Sequence[str], study: Any) -> None:
    """Remove the last checkpoint of every trial the scheduler stopped early (Optuna
    ``PRUNED``) once the experiments have ended: such a trial never resumes, and its checkpoint
    is a whole retrain state (model, optimizer) of a configuration that lost. Finished and
    failed trials keep theirs."""
    import optuna

    pruned = {t.number for t in study.get_trials(deepcopy=False,
                                                  states=(optuna.trial.TrialState.PRUNED,))}
    for number, result in _trial_results(paths):
        if number in pruned:
            kept = [c for c, _ in result.best_checkpoints or []] + [result.checkpoint]
            for checkpoint in {c.path: c for c in kept if c is not None}.values():
                try:
                    checkpoint.filesystem.delete_dir(checkpoint.path)
                except OSError as exc:  # left in place: trials.csv still lists its run folder
                    warnings.warn(f"trial {number} (pruned): could not remove its checkpoint "
                                  f"{checkpoint.path}: {exc}", stacklevel=2)


def _trial_info(paths: Sequence[str], metric: str) -> dict[int, TrialInfo]:
    """What Ray recorded of each trial of the experiments at ``paths``, by Optuna number."""
    info: dict[int, TrialInfo] = {}
    for number, result in _trial_results(paths):
        metrics = result.metrics or {}
        error = None
        if result.error is not None:
            lines = [line for line in str(result.error).splitlines() if line.strip()]
            error = lines[-1].strip() if lines else type(result.error).__name__
        checkpoint = result.checkpoint
        kept = checkpoint is not None and _exists(checkpoint)
        info[number] = TrialInfo(
            epochs=metrics.get("epoch"), last_value=metrics.get(metric),
            run_dir=f"{checkpoint.path}/{RETRAIN_DIR}" if kept else None, error=error)
    return info


def _exists(checkpoint: Any) -> bool:
    import pyarrow.fs

    try:
        return checkpoint.filesystem.get_file_info(checkpoint.path).type != pyarrow.fs.FileType.NotFound
    except OSError:
        return False
