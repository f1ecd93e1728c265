"""The study folder of a tuning run: its record, its Optuna storage, a set-up that leaves nothing
behind when it fails.

``<out>/tune.yaml`` (:data:`SETTINGS_FILE`) records what the run is: the backend, the study
name and storage URL, the seed, the early stopping, the number of trials, the device, the
resolved tune space, genotype (or search space) and recipe, the dataset and its validation
split, and, for Ray, the storage path, the experiments and the per-trial resources. A resumed
run (``resume=True``) must be the same run: :func:`check_same` names every field that differs
(only ``trials`` may change). The CLI reads it to fill in what ``--resume`` leaves out.

The Optuna study lives in an RDB storage (:func:`open_study`; default ``sqlite:///<out>/study.db``),
readable by ``optuna-dashboard <URL>`` while the run goes on and after it.

:class:`SetupGuard` undoes what a run's set-up created (the study folder, a new SQLite file, a
new study in an existing storage) when something fails before the first trial starts.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from nas_reid.engine.resumable import folder_is_new
from nas_reid.errors import UserError
from nas_reid.fileio import atomic_write_text
from nas_reid.hpo.objective import Objective

SETTINGS_FILE = "tune.yaml"
STUDY_DB = "study.db"
EARLY_STOPPING = ("asha", "median", "none")
RECORD_KEYS = ("backend", "study", "storage", "seed", "early_stopping", "trials", "device", "data",
               "validation", "target", "tune_space", "genotype", "reference", "search_space",
               "recipe", "ray")
"""What ``tune.yaml`` holds (a Ray run adds ``experiments``)."""
CHANGEABLE = ("trials",)
"""Settings a resumed run may change."""


@dataclass(frozen=True)
class RunSetup:
    """What both backends decide before anything is written: the checked trial count, the
    objective (its tune space validated), the out folder, the study name and storage URL."""

    trials: int
    objective: Objective
    out: Path
    name: str
    url: str


def check_trials(trials: Any) -> int:
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UserError(f"trials: must be a positive integer, got {trials!r}")
    return trials


def prepare_run(space: Any, data: Any, *, genotype: Any, search_space: Any, recipe: Any,
                root: Any, device: str, trials: Any, early_stopping: str, out_dir: Any,
                resume: bool, study_name: str | None, storage: str | None,
                num_workers: int = 0) -> RunSetup:
    """Check the inputs every backend shares and build the objective; writes nothing."""
    trials = check_trials(trials)
    if early_stopping not in EARLY_STOPPING:
        raise UserError(f"early stopping: unknown {early_stopping!r} (choose from {', '.join(EARLY_STOPPING)})")
    objective = Objective.build(space, data, root=root, genotype=genotype,
                                search_space=search_space, recipe=recipe, device=device,
                                num_workers=num_workers)
    out = Path(out_dir).expanduser()
    check_folder(out, resume)
    return RunSetup(trials=trials, objective=objective, out=out,
                    name=study_name or objective.space.name, url=storage or default_storage(out))


def default_storage(out: Path) -> str:
    """``sqlite:///<out>/study.db`` (absolute)."""
    return f"sqlite:///{(out / STUDY_DB).resolve()}"


def run_settings(objective: Objective, *, backend: str, study_name: str, storage: str, seed: int,
                 early_stopping: str, trials: int, ray: dict[str, Any] | None = None) -> dict[str, Any]:
    """The record of a run (what ``tune.yaml`` holds), as plain YAML types."""
    ds = objective.data
    settings = {
        "backend": backend, "study": study_name, "storage": storage, "seed": int(seed),
        "early_stopping": early_stopping, "trials": int(trials), "device": objective.device,
        "data": {"name": ds.name, "root": str(ds.root)},
        "validation": ds.extra["validation"],
        "target": objective.target,
        "tune_space": objective.space.resolved(),
        "genotype": objective.genotype.to_dict() if objective.genotype is not None else None,
        "reference": objective.reference,
        "search_space": (objective.search_space.resolved()
                         if objective.search_space is not None else None),
        "recipe": objective.recipe.resolved(),
        "ray": ray,
    }
    return yaml.safe_load(yaml.safe_dump(settings))  # tuples -> lists: compares with a saved one


def sampler_seed(seed: int, trials_before: int) -> int:
    """The TPE sampler's seed for a session that starts with ``trials_before`` trials in the
    study: ``seed`` for the first, a seed derived from both for a later one (a fresh sampler with
    the same seed would draw the same start-up trials again)."""
    if trials_before == 0:
        return int(seed)
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, trials_before]).generate_state(1)[0])


def read_settings(out: Path) -> dict[str, Any]:
    """The ``tune.yaml`` of the study folder ``out`` (:class:`UserError` if there is none)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        raise UserError(f"--resume: {out} holds no tuning run ({SETTINGS_FILE} is missing)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"--resume: {path} is not valid YAML ({reason})") from None
    if not isinstance(data, dict) or "backend" not in data:
        raise UserError(f"--resume: {path} is not the record of a tuning run")
    missing = [key for key in RECORD_KEYS if key not in data]
    if missing or not isinstance(data["data"], dict) or not {"name", "root"} <= set(data["data"]):
        shown = ", ".join(missing) or "data.name / data.root"
        raise UserError(f"--resume: {path} lacks {shown}; it is not a whole record of a tuning "
                        "run (do not edit it)")
    return data


def write_settings(out: Path, settings: dict[str, Any]) -> Path:
    header = ("# nas-reid tune: the record of this tuning run; `nas-reid tune --resume --out "
              f"{out}` reads it.\n# Do not edit: a resumed run must be the same run.\n")
    return atomic_write_text(out / SETTINGS_FILE, header + yaml.safe_dump(settings, sort_keys=False))


def check_same(saved: dict[str, Any], now: dict[str, Any], out: Path) -> None:
    """Raise :class:`UserError` naming what differs between the saved run and this one
    (``trials`` may change)."""
    differ = [key for key in now if key not in CHANGEABLE
              and json.dumps(saved.get(key), sort_keys=True) != json.dumps(now[key], sort_keys=True)]
    if differ:
        shown = ", ".join(f"{k} ({_brief(saved.get(k))} -> {_brief(now[k])})" for k in differ)
        raise UserError(f"--resume: this run differs from the one in {out / SETTINGS_FILE}: {shown}; "
                        "resume it as it was, or start a new run with another --out")


def _brief(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else "a different value"


def check_folder(out: Path, resume: bool) -> None:
    """A new run needs an absent or empty ``out``, a resumed one its ``tune.yaml``; either must
    be writable (:func:`nas_reid.engine.resumable.folder_is_new`)."""
    new = folder_is_new(out)
    if resume:
        read_settings(out)
        return
    if new:
        return
    if (out / SETTINGS_FILE).is_file():
        raise UserError(f"--out {out} already holds a tuning run; add --resume to continue it, "
                        "or choose another --out")
    raise UserError(f"--out {out} is not empty and holds no tuning run; choose another --out")


class SetupGuard:
    """A context manager that runs the registered undo steps (last first) when its block raises."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def on_failure(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def make_folder(self, out: Path) -> None:
        """Create ``out`` (removed again on failure if it did not exist)."""
        if not out.exists():
            out.mkdir(parents=True)
            self.on_failure(lambda: shutil.rmtree(out, ignore_errors=True))

    def __enter__(self) -> "SetupGuard":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None:
            for undo in reversed(self._undo):
                try:
                    undo()
                except Exception:  # noqa: BLE001 - the original error is what matters
                    pass
        return False


def _sqlite_file(url: str) -> Path | None:
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///"):])
    return None


def open_study(url: str, name: str, direction: str, *, resume: bool, guard: SetupGuard,
               sampler: Any = None, pruner: Any = None) -> Any:
    """Open (``resume``) or create the study ``name`` in the RDB storage ``url``; returns the
    ``optuna.Study``. A new study (and a new SQLite file) is undone by ``guard`` on failure.

    Raises :class:`UserError` for a URL that does not open (malformed, missing driver,
    unreachable server, a folder that does not exist), an existing study without ``resume``,
    a missing one with it, or a study of the other direction.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    db_file = _sqlite_file(url)
    new_file = db_file is not None and not db_file.exists()
    try:
        storage = optuna.storages.RDBStorage(url)
        names = optuna.study.get_all_study_names(storage)
    except (ValueError, ImportError, RuntimeError, SQLAlchemyError) as exc:
        if new_file and db_file.exists():
            db_file.unlink()
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"--storage {url!r} does not open as an Optuna RDB storage: {reason}") from None
    if new_file:
        guard.on_failure(lambda: db_file.unlink(missing_ok=True))
    exists = name in names
    if exists and not resume:
        raise UserError(f"a study named {name!r} already exists in {url}; add --resume to continue "
                        "it, or choose another --study-name or --storage")
    if resume and not exists:
        raise UserError(f"--resume: no study named {name!r} in {url}")
    study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=name,
                                direction=direction, load_if_exists=True)
    if not exists:
        guard.on_failure(lambda: optuna.delete_study(study_name=name, storage=storage))
    if study.direction.name.lower() != direction:
        raise UserError(f"study {name!r} in {url} has direction {study.direction.name.lower()}; "
                        f"the tune space asks to {direction}")
    return study
