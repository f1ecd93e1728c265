"""The skeleton a search and a retrain share: one resumable run in a run folder.

:meth:`ResumableRun.run` creates a fresh run's folder on rank 0 (``config.yaml``,
:meth:`~ResumableRun._write_run_files`), opens the metrics log (:meth:`~ResumableRun._open_log`),
runs a fresh run's :meth:`~ResumableRun._prepare` and saves the epoch-0 checkpoint, trains
(:meth:`~ResumableRun._train`: :meth:`~ResumableRun._start_epoch`, one
:meth:`~ResumableRun._train_step` per batch, :meth:`~ResumableRun._log_step` every
``log_every`` steps, a checkpoint every ``checkpoint_every`` steps and at ``max_steps``,
:meth:`~ResumableRun._end_epoch`, which saves), then :meth:`~ResumableRun._finish` unless
stopped, and returns :meth:`~ResumableRun._result`. Ctrl-C checkpoints the step in progress and
raises :class:`~nas_reid.errors.Interrupted` (the CLI exits 130); a checkpoint that cannot be
written or a full disk ends the run with a :class:`UserError` naming the command that resumes
(:meth:`~ResumableRun.resume_command`). A new total of epochs on resume is checked by
:func:`check_new_total` and re-times :meth:`~ResumableRun._schedules`; the run folder is judged
by :func:`inspect_run_folder` before anything is written.
The steps, interrupts, failures, changed totals and run-folder rules in detail: docs/search.md,
section `nas_reid.engine.resumable`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
import yaml
from tqdm.auto import tqdm

from nas_reid.errors import Interrupted, UserError
from nas_reid.fileio import atomic_write_text, check_writable
from nas_reid.killpoints import reached
from nas_reid.engine.runlog import METRICS_FILE, TENSORBOARD_DIR

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
RUN_KEY = "run"
"""The checkpoint entry naming the kind of run that wrote it: ``search`` or ``retrain``."""
TEMP_FILE = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
"""The temporary sibling an atomic write renames over ``name`` (:mod:`nas_reid.fileio`)."""
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
"""Write errors that end a run wherever they happen, with the resume command."""


def checkpoint_kind(state: Any) -> str | None:
    """``search`` / ``retrain``: the kind of run that wrote a checkpoint dict (guessed from its
    entries for one written before :data:`RUN_KEY` existed), else None."""
    if not isinstance(state, dict):
        return None
    if isinstance(state.get(RUN_KEY), str):
        return state[RUN_KEY]
    if "space_hash" in state:
        return "search"
    return "retrain" if "training" in state else None


def config_kind(config: Any) -> str | None:
    """``search`` / ``retrain``: the kind of run a ``config.yaml`` dict belongs to, else None."""
    if isinstance(config, dict):
        if isinstance(config.get("search"), dict):
            return "search"
        if isinstance(config.get("train"), dict):
            return "retrain"
    return None


def other_kind_error(out: Path, kind: str, other: str) -> UserError:
    """The refusal of a ``kind`` command given a run folder ``out`` of the ``other`` kind."""
    hint = f" (to retrain its genotype: --genotype {out})" if other == "search" else ""
    return UserError(f"--out {out} holds a {other} run, not a {kind}; choose another --out{hint}")


@dataclass
class RunFolder:
    """What ``--out`` holds for a run of one kind (:func:`inspect_run_folder`)."""

    state: str
    """``new`` (absent or empty), ``unstarted`` (``config.yaml`` but no checkpoint),
    ``unfinished`` or ``finished`` (a checkpoint; only with ``resume``)."""
    config: dict[str, Any] | None = None
    """An unstarted run's ``config.yaml`` (with ``resume``: what it starts again from)."""
    restart: str | None = None
    """For an unstarted run: the line that says it starts again."""


def folder_is_new(out: Path) -> bool:
    """Whether ``--out`` is absent or an empty folder, after checking that it can be written
    (or created); :class:`UserError` when it exists and is not a folder. The first check of
    every run folder: a search's, a retrain's (:func:`inspect_run_folder`) and a tuning run's
    (:func:`nas_reid.hpo.study.check_folder`)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    check_writable(out, f"--out {out}")
    return not out.exists() or not any(out.iterdir())


def inspect_run_folder(out: Path, kind: str, *, resume: bool, checkpoint: Path,
                       finished: tuple[str, str], config_keys: Mapping[str, type | tuple]
                       ) -> RunFolder:
    """What ``out`` holds for a ``kind`` run (``search`` / ``retrain``) whose checkpoint is
    ``checkpoint`` and whose ``finished = (label, file)`` marks a finished run; reads nothing
    but ``config.yaml`` (checked for ``config_keys``, dotted paths to types, with ``resume``),
    and checks that the folder can be written (or created).
    :class:`UserError` for a folder the run cannot use (see the module doc)."""
    nothing = UserError(f"--resume: no checkpoint at {out / checkpoint}; nothing to resume (run "
                        f"without --resume to start a {kind})")
    if folder_is_new(out):
        if resume:
            raise nothing
        return RunFolder("new")
    other = config_kind(_safe_yaml(out / CONFIG_FILE))
    if other is not None and other != kind:
        raise other_kind_error(out, kind, other)
    if (out / checkpoint).is_file():
        label, file = finished
        done = (out / file).is_file()
        if resume:
            return RunFolder("finished" if done else "unfinished")
        if done:
            raise UserError(f"--out {out} already holds a finished {kind} ({label}: "
                            f"{out / file}); choose another --out")
        raise UserError(f"--out {out} holds an unfinished {kind}; add --resume to continue it, "
                        "or choose another --out")
    if (out / CONFIG_FILE).is_file():
        how = "from its config.yaml" if resume else "(its files are replaced)"
        return RunFolder("unstarted", _read_config(out, config_keys) if resume else None,
                         f"{out} holds a {kind} that stopped before its first checkpoint: "
                         f"starting it again {how}")
    if resume:
        raise nothing
    raise UserError(f"--out {out} is not empty and holds no {kind} run; choose another --out")


def check_new_total(epochs: int, ckpt_position: tuple[int, int], kind: str, out: Path) -> None:
    """:class:`UserError` unless ``epochs`` covers every epoch a run at ``(epoch, batch)`` has
    begun."""
    epoch, batch = ckpt_position
    if epochs < epoch + (batch > 0):
        done = f"{epoch} epochs" + (f" and part of epoch {epoch + 1}" if batch else "")
        raise UserError(f"--epochs {epochs}: the {kind} in {out} already ran {done}; give "
                        f"--epochs {epoch + (batch > 0)} or more")


def _values(values: list[float]) -> str:
    shown = [f"{v:.3g}" for v in values]
    return ", ".join(shown if len(shown) <= 6 else [*shown[:3], "...", *shown[-2:]])


def _epochs(start: int, end: int) -> str:
    """1-based words for the 0-based epochs ``start`` to ``end - 1``."""
    return f"epoch {start + 1}" if end - start == 1 else f"epochs {start + 1}-{end}"


def _safe_yaml(path: Path) -> Any:
    """``path`` read as safe YAML; None when it is missing or unreadable."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None


def _read_config(out: Path, keys: Mapping[str, type | tuple]) -> dict[str, Any]:
    """``out/config.yaml`` (safe YAML), checked to have ``keys`` of their types."""
    path = out / CONFIG_FILE
    bad = f"--resume: {path} is not the config.yaml of this kind of run"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{bad} ({type(exc).__name__}); run without --resume to start again"
                        ) from None
    for key, kind in keys.items():
        value: Any = config
        for part in key.split("."):
            value = value.get(part, KeyError) if isinstance(value, dict) else KeyError
        if value is KeyError or not isinstance(value, kind):
            raise UserError(f"{bad} (no valid {key}); run without --resume to start again")
    return config


class ResumableRun(ABC):
    """Base of the search and retrain loops (see the module doc).

    A subclass sets ``out``, ``ckpt`` (the checkpoint resumed from, or None), ``config``,
    ``is_main``, ``world``, ``net``, ``epoch``, ``epochs``, ``batch``, ``step``, ``sums``,
    ``elapsed``, ``finished``, ``num_workers``, ``device``,
    ``progress``, ``log_every``, ``checkpoint_every`` and ``max_steps``, and implements the
    hooks below.
    """

    out: Path
    ckpt: dict[str, Any] | None
    config: dict[str, Any]
    log: Any
    kind: str
    """``search`` or ``retrain``: the command that runs it."""
    restart: str | None = None
    """Set for a folder that stopped before its first checkpoint (:attr:`RunFolder.restart`)."""
    epochs_change: list[str] | None = None
    """The lines that say what a new total of epochs changes (:meth:`_change_epochs`)."""
    own_files: tuple[str, ...] = ()
    """Files of the run folder besides config.yaml, metrics.jsonl, tensorboard/ and
    checkpoints/ (what a restart replaces)."""

    timed = False
    """Add the training seconds of each epoch to ``sums["seconds"]`` (see the module doc)."""

    # -- hooks (abstract ones must be implemented; the two others are optional)

    @property
    @abstractmethod
    def checkpoint_path(self) -> Path:
        """The checkpoint whose presence means the run can be resumed."""

    def _write_run_files(self) -> None:
        """Files a fresh run writes beside config.yaml (rank 0)."""

    @abstractmethod
    def _open_log(self) -> Any:
        """The run's metrics log, holding the lines restored from the checkpoint."""

    def _prepare(self) -> None:
        """What a fresh run does once, before its epoch-0 checkpoint (the search and the
        retrain fit their RIB's input clusters here); nothing by default."""

    @abstractmethod
    def _save(self, session_start: float) -> None:
        """Write the checkpoint of the complete state, atomically."""

    @property
    @abstractmethod
    def _stream(self) -> Any:
        """The training batch stream (``batches_in(epoch)``, ``epoch_batches(epoch, start)``,
        ``batch``)."""

    @abstractmethod
    def _start_epoch(self) -> None:
        """What a fresh epoch needs before its first step."""

    @abstractmethod
    def _train_step(self, batch: Any) -> tuple[Any, dict[str, str]]:
        """One step on ``batch``, its losses added to the epoch's sums; returns what
        :meth:`_log_step` logs and the progress bar's postfix."""

    @abstractmethod
    def _log_step(self, info: Any, seconds: float) -> None:
        """Add a step record (``seconds``: of the run so far, over resumed sessions)."""

    def _before_save(self) -> None:
        """What a mid-epoch checkpoint needs first."""

    @abstractmethod
    def _end_epoch(self, session_start: float) -> None:
        """Close the epoch: its record, schedules, and the checkpoint."""

    @abstractmethod
    def _finish(self, session_start: float) -> None:
        """What a run that trained every epoch writes last (and its finished checkpoint)."""

    @abstractmethod
    def _result(self) -> Any:
        """What :meth:`run` returns."""

    @abstractmethod
    def _schedules(self) -> dict[str, Any]:
        """The schedules that may depend on the total of epochs: name -> ``f(epoch, epochs)``
        (0-based epoch), the value that epoch uses."""

    @abstractmethod
    def _follow_new_total(self) -> None:
        """Make the restored state (schedulers, a part-done epoch's temperature) follow
        ``self.epochs`` from the current position."""

    @abstractmethod
    def _set_epochs_in_config(self, change: dict[str, Any] | None) -> None:
        """Write ``self.epochs`` into ``self.config`` and, unless None, append ``change`` to its
        ``epochs_changed``."""

    # -- a new total of epochs on resume

    def _change_epochs(self, old: int) -> None:
        """The run had ``old`` epochs in all and resumes with ``self.epochs`` (see the module
        doc): the state follows the new total, the change is recorded in the config, and the
        lines that say it are kept for :meth:`run` (which checkpoints it)."""
        new, start = self.epochs, self.epoch
        self._follow_new_total()
        self.finished = False
        self._set_epochs_in_config({"from": old, "to": new, "at": {
            "epoch": self.epoch, "batch": self.batch, "step": self.step}})
        lines = [f"--epochs {new}: the {self.kind} in {self.out} now runs {new} epochs instead of "
                 f"{old}, resumed at {self.position(self.epoch, self.batch, self.step)}; from "
                 f"epoch {start + 1} on the schedules follow {new} epochs, the epochs done keep "
                 "theirs:"]
        for name, at in self._schedules().items():
            now = [at(e, new) for e in range(start, new)]
            before = [at(e, old) for e in range(start, old)]
            was = (f"with {old} epochs, {_epochs(start, old)}: {_values(before)}"
                   if before else "the run had ended")
            same = " (unchanged)" if before and now[:len(before)] == before[:len(now)] else ""
            lines.append(f"  {name}, {_epochs(start, new)}: {_values(now)} ({was}){same}")
        self.epochs_change = lines

    # -- the run

    def run(self) -> Any:
        created = self.is_main and self.ckpt is None and not self.out.exists()
        self.log = None
        self.write_failed = False
        self.saved = (self.epoch, self.batch, self.step) if self.ckpt is not None else None
        session_start = time.monotonic()
        previous_handler = self._catch_ctrl_c()
        try:
            if self.is_main and self.out.is_dir():
                self._remove_temp_files()
            if self.is_main and self.ckpt is None:
                if self.restart is not None:
                    self._remove_run_files()
                    self._notice(self.restart)
                self.out.mkdir(parents=True, exist_ok=True)
                atomic_write_text(self.out / CONFIG_FILE, yaml.safe_dump(self.config, sort_keys=False))
                self._write_run_files()
                reached("setup")  # the test-only kill points: nas_reid.killpoints
            if self.world.size > 1:
                dist.barrier()
            self.log = self._open_log()
            if self.ckpt is not None:
                if self.epochs_change:
                    for line in self.epochs_change:
                        self._notice(line)
                    self._checkpoint(session_start)  # the new total is part of the state now
                if self.is_main:  # config.yaml says what the checkpoint does
                    text = yaml.safe_dump(self.config, sort_keys=False)
                    if _safe_yaml(self.out / CONFIG_FILE) != yaml.safe_load(text):
                        atomic_write_text(self.out / CONFIG_FILE, text)
            if self.ckpt is None:
                self._prepare()
                self._checkpoint(session_start)  # epoch 0, batch 0: resumable from here
                self._stop_if_interrupted()
            stopped = self._train(session_start)
            if not stopped and not self.finished:
                self._finish(session_start)
        except BaseException as exc:
            if self.log is not None:
                with contextlib.suppress(OSError):
                    self.log.close()
            disk = self.write_failed or (isinstance(exc, OSError) and exc.errno in DISK_ERRNOS)
            if created and (not self.checkpoint_path.is_file() or (
                    self.step == 0 and not disk and not isinstance(exc, KeyboardInterrupt))):
                # a folder this call created holds nothing worth resuming before the first
                # step (an unreadable image, a bad batch): leave nothing half-written. Ctrl-C
                # and a failed write keep it, with the resume command printed.
                shutil.rmtree(self.out, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
                raise self._write_failed(exc) from None
            if isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Interrupted):
                raise self._interrupted(at_once=True) from None
            raise
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        self.log.close()
        return self._result()

    def _catch_ctrl_c(self) -> Any:
        """Make the first Ctrl-C a request to stop at the next checkpoint (the second raises
        ``KeyboardInterrupt`` at once); returns the handler it replaced (None off the main
        thread, where signals cannot be caught)."""
        self.ctrl_c = False
        if threading.current_thread() is not threading.main_thread():
            return None
        owner = os.getpid()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != owner:  # a forked data-loading worker: the run stops it
                return
            if self.ctrl_c:
                raise KeyboardInterrupt
            self.ctrl_c = True
            if self.is_main:  # a raw write: a handler must not re-enter a buffered stream
                with contextlib.suppress(OSError, ValueError):
                    os.write(2, b"\nCtrl-C: stopping after this step with a checkpoint (Ctrl-C "
                                b"again stops at once; the last checkpoint is kept)\n")

        return signal.signal(signal.SIGINT, handler)

    def _ctrl_c_pressed(self) -> bool:
        """Whether Ctrl-C was pressed (on any DDP rank: the ranks must stop at the same step)."""
        pressed = self.ctrl_c
        if self.world.size > 1:
            flag = torch.tensor([float(pressed)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            pressed = bool(flag.item())
        return pressed

    def _stop_if_interrupted(self) -> None:
        """After a checkpoint: raise :class:`Interrupted` if Ctrl-C was pressed."""
        if self._ctrl_c_pressed():
            raise self._interrupted(at_once=False)

    def _interrupted(self, *, at_once: bool) -> Interrupted:
        """What Ctrl-C ends the run with: where it stopped, and the command that continues."""
        run = f"the {self.kind} in {self.out}"
        if self.saved is None:
            return Interrupted(f"interrupted before the first checkpoint of {run}; run the same "
                               "command again to start it")
        where = self.position(*self.saved)
        if at_once:
            return Interrupted(f"interrupted: {run} stopped at once; it resumes from its last "
                               f"checkpoint, {where}: {self.resume_command()}")
        return Interrupted(f"interrupted: {run} stopped at {where}, checkpointed; continue with: "
                           f"{self.resume_command()}")

    def _checkpoint(self, session_start: float) -> None:
        """:meth:`_save`, remembering the position saved; an ``OSError`` ends the run with
        :meth:`_write_failed`."""
        reached("checkpoint")
        try:
            self._save(session_start)
        except OSError as exc:
            raise self._write_failed(exc) from None
        self.saved = (self.epoch, self.batch, self.step)

    def _write_failed(self, exc: OSError) -> UserError:
        """The one line that ends a run a write failed in: the file, the reason, and where the
        run resumes from (or that it starts again)."""
        self.write_failed = True
        where = exc.filename or self.checkpoint_path
        what = f"could not write {where} ({exc.strerror or exc})"
        if self.saved is None:
            return UserError(f"{what} before the first checkpoint of the {self.kind} in "
                             f"{self.out}; once fixed, run the same command again")
        return UserError(f"{what}: the {self.kind} in {self.out} is still resumable from its last "
                         f"checkpoint, {self.position(*self.saved)}: {self.resume_command()}")

    def position(self, epoch: int, batch: int, step: int) -> str:
        """Where a run at (``epoch``, ``batch``, ``step``) stands, in words."""
        if batch == 0:
            return ("its start" if epoch == 0 else
                    f"the end of epoch {epoch}/{self.epochs} (step {step})")
        return f"step {step} (batch {batch} of epoch {epoch + 1}/{self.epochs})"

    def resume_command(self) -> str:
        """The command line that continues this run as it was running (device, threads,
        workers, checkpoint interval; under DDP through torchrun)."""
        size = self.world.size
        parts = ["nas-reid" if size == 1 else f"torchrun --nproc_per_node {size} -m nas_reid.cli",
                 self.kind, "--resume", "--out", shlex.quote(str(self.out))]
        if self.device.type == "cpu":
            if torch.cuda.is_available():  # --device auto would take the GPU
                parts += ["--device", "cpu"]
            parts += ["--threads", str(torch.get_num_threads())]
        else:
            parts += ["--device", self.device.type]
        if self.num_workers:
            parts += ["--workers", str(self.num_workers)]
        if self.checkpoint_every:
            parts += ["--checkpoint-every", str(self.checkpoint_every)]
        return " ".join(parts)

    def _notice(self, text: str) -> None:
        """One line on stderr (with ``progress``)."""
        if self.progress:
            tqdm.write(text, file=sys.stderr)

    def _remove_run_files(self) -> None:
        """Remove the files this kind of run writes (and nothing else) from ``out``."""
        for name in (CONFIG_FILE, METRICS_FILE, TENSORBOARD_DIR, CHECKPOINT_DIR, *self.own_files):
            path = self.out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    def _remove_temp_files(self) -> None:
        """Remove what killed atomic writes of the run's files left (any in checkpoints/)."""
        ours = {CONFIG_FILE, METRICS_FILE, *self.own_files}
        found = [path for folder in (self.out, self.out / CHECKPOINT_DIR) if folder.is_dir()
                 for path in folder.iterdir()
                 if (match := TEMP_FILE.fullmatch(path.name)) and path.is_file()
                 and (folder != self.out or match["name"] in ours)]
        for path in found:
            path.unlink()
        if found:
            self._notice(f"removed {len(found)} temporary file{'s' if len(found) > 1 else ''} "
                         f"of an interrupted write from {self.out}")

    def _train(self, session_start: float) -> bool:
        """Run the remaining epochs; True if stopped early by ``max_steps``."""
        self.net.train()
        stream = self._stream
        remaining = sum(stream.batches_in(e) for e in range(self.epoch, self.epochs))
        # disable=None: the bar shows on a terminal only; logs get the per-epoch summary lines
        bar = tqdm(total=remaining - self.batch, disable=None if self.progress else True,
                   unit="step", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)
        try:
            if self.max_steps is not None and self.step >= self.max_steps:
                return True
            while self.epoch < self.epochs:
                if self.batch == 0:
                    self._start_epoch()
                bar.set_description(f"epoch {self.epoch + 1}/{self.epochs}")
                started = time.perf_counter()
                for batch in stream.epoch_batches(self.epoch, self.batch):
                    info, postfix = self._train_step(batch)
                    self.batch, self.step = stream.batch, self.step + 1
                    reached("step")
                    bar.update(1)
                    bar.set_postfix(**postfix, refresh=False)
                    if self.log_every and self.step % self.log_every == 0:
                        self._log_step(info, self.elapsed + time.monotonic() - session_start)
                        self.log.flush()
                    stop = self.max_steps is not None and self.step >= self.max_steps
                    ctrl_c = self._ctrl_c_pressed()
                    if stop or ctrl_c or (self.checkpoint_every
                                          and self.step % self.checkpoint_every == 0):
                        self._count_seconds(started)
                        self._before_save()
                        self._checkpoint(session_start)
                        started = time.perf_counter()
                    if ctrl_c:
                        raise self._interrupted(at_once=False)
                    if stop:
                        return True
                self._count_seconds(started)
                self._end_epoch(session_start)
                self._stop_if_interrupted()
        finally:
            bar.close()
        return False

    def _count_seconds(self, started: float) -> None:
        if self.timed:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.sums["seconds"] += time.perf_counter() - started
