"""The run-folder lifecycle of a search and a retrain: a folder that failed before its first
checkpoint, a folder of the other kind, an ``--out`` that cannot be created, a full disk, a
mid-epoch resume's metrics, a killed write's temporary files, SIGKILL at each phase, Ctrl-C,
extending a run on resume.

Every run is tiny (ResNet-18 at 64x32, one-node cells, two epochs of PK 2x4 on the tiny
synthreid benchmark) and ends compared with an uninterrupted run of the same settings: model
weights, architecture parameters, genotype and metrics (times left out) identical.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from nas_reid.errors import UserError
from nas_reid.search import load_checkpoint, search
from nas_reid.train.checkpoint import read_checkpoint
from nas_reid.train.loop import retrain
from tests.tiny import tiny_genotype, tiny_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMES = ("time", "images_per_second", "seconds")


def tiny_recipe(**changes) -> dict:
    recipe = {"name": "tiny", "epochs": 2, "batch": {"p": 2, "k": 4},
              "optimizer": {"name": "adam", "lr": 1e-3},
              "lr_schedule": {"warmup_epochs": 1, "milestones": []}, "eval": {"every": 1}}
    recipe.update(changes)
    return recipe


def run_search(out, dataset, **kwargs):
    kwargs.setdefault("progress", False)
    return search(kwargs.pop("space", tiny_space()), dataset, out_dir=out, **kwargs)


def run_retrain(out, dataset, **kwargs):
    kwargs.setdefault("progress", False)
    kwargs.setdefault("recipe", tiny_recipe())
    return retrain(kwargs.pop("genotype", tiny_genotype()), dataset, out_dir=out, **kwargs)


def _lines(path: Path, drop: tuple[str, ...] = ()) -> list[dict]:
    """A JSON-lines file's records without the keys ``drop`` (nor a genotype's run folder)."""
    records = []
    for line in path.read_text().splitlines():
        records.append(_without_run({k: v for k, v in json.loads(line).items() if k not in drop}))
    return records


def _without_run(record: dict) -> dict:
    record.get("provenance", {}).pop("search_run", None)
    return record


def end_state(out: Path) -> dict:
    """What must not depend on how a run got to its end: weights (and architecture parameters,
    temperature, every buffer), genotype, metrics and results, times and paths left out."""
    out = Path(out)
    state: dict = {"metrics": _lines(out / "metrics.jsonl", TIMES)}
    if (out / "genotype_history.jsonl").is_file():  # a search
        ckpt = load_checkpoint(out / "checkpoints" / "last.pt")
        state |= {"model": ckpt["model"], "finished": ckpt["finished"],
                  "history": _lines(out / "genotype_history.jsonl"),
                  "genotype": _without_run(json.loads((out / "genotype.json").read_text()))}
    else:
        state |= {"model": read_checkpoint(out / "checkpoints" / "last.pt")["model"],
                  "best": read_checkpoint(out / "checkpoints" / "best.pt")["model"],
                  "results": {k: v for k, v in
                              json.loads((out / "results.json").read_text()).items()
                              if k not in ("checkpoint", *TIMES)}}
    return state


def assert_same_end(out: Path, reference: Path) -> None:
    a, b = end_state(out), end_state(reference)
    assert a.keys() == b.keys()
    for key in a:
        if key in ("model", "best"):
            assert a[key].keys() == b[key].keys(), key
            different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
            assert not different, f"{key}: {different[:5]}"
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def reference_search(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("reference") / "search"
    run_search(out, dataset)
    return out


@pytest.fixture(scope="module")
def reference_retrain(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("reference") / "retrain"
    run_retrain(out, dataset)
    return out


KINDS = {"search": (run_search, "_Search", "nas_reid.search.loop"),
         "retrain": (run_retrain, "_Retrain", "nas_reid.train.loop")}


def reference(request, kind: str) -> Path:
    return request.getfixturevalue(f"reference_{kind}")


def fail_first_save(monkeypatch, kind: str) -> None:
    """The run's first checkpoint raises (as a failed RIB fit or data error would, after
    config.yaml)."""
    import importlib

    _, cls, module = KINDS[kind]
    loop_class = getattr(importlib.import_module(module), cls)

    def boom(self, session_start):
        raise UserError("an image cannot be read (simulated)")

    monkeypatch.setattr(loop_class, "_save", boom)


# ------------------------------------------------------------------------------ item 18.1


@pytest.mark.parametrize("resume", [False, True], ids=["plain-rerun", "resume"])
@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_a_run_that_failed_before_its_first_checkpoint_starts_again(
        kind, resume, tmp_path, dataset, monkeypatch, capsys, request):
    runner = KINDS[kind][0]
    out = tmp_path / "run"
    out.mkdir()  # made by the user, so kept when the run fails
    with monkeypatch.context() as patch:
        fail_first_save(patch, kind)
        with pytest.raises(UserError, match="simulated"):
            runner(out, dataset)
    assert (out / "config.yaml").is_file() and not (out / "checkpoints" / "last.pt").exists()
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()

    if resume:  # from the folder's own config.yaml: no space, recipe or data given
        done = (search(None, None, out_dir=out, resume=True) if kind == "search" else
                retrain(None, None, out_dir=out, resume=True))
    else:
        done = runner(out, dataset, progress=True)
    assert done.finished
    said = [line for line in capsys.readouterr().err.splitlines() if "first checkpoint" in line]
    assert len(said) == 1 and str(out) in said[0] and "starting it again" in said[0], said
    assert (out / "notes.txt").read_text() == "mine"  # not a file of the run: left alone
    assert_same_end(out, reference(request, kind))


# ------------------------------------------------------------------------------ item 18.3


def cli(*args):
    from click.testing import CliRunner

    from nas_reid.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_fails_well(result, *words):
    """Exit 2, one line naming the problem, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for word in words:
        assert word in lines[0], result.output


def listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


def test_a_run_folder_of_the_other_kind_is_named_as_such(reference_search, reference_retrain,
                                                         tmp_path):
    before = listing(reference_search), listing(reference_retrain)
    for args, words in [
            (("search", "--resume", "--out", reference_retrain), ("a retrain run, not a search",)),
            (("search", "--out", reference_retrain), ("a retrain run, not a search",)),
            (("retrain", "--resume", "--out", reference_search), ("a search run, not a retrain",)),
            (("retrain", "--genotype", "rga_s", "--out", reference_search),
             ("a search run, not a retrain", f"--genotype {reference_search}"))]:
        assert_fails_well(cli(*args), str(args[-1]), *words)
    assert (listing(reference_search), listing(reference_retrain)) == before

    # each checkpoint says which run wrote it, and the loaders check it (config.yaml gone)
    assert load_checkpoint(reference_search / "checkpoints" / "last.pt")["run"] == "search"
    assert read_checkpoint(reference_retrain / "checkpoints" / "last.pt")["run"] == "retrain"
    for kind, other in (("search", reference_retrain), ("retrain", reference_search)):
        bare = tmp_path / f"bare-{kind}"
        (bare / "checkpoints").mkdir(parents=True)
        (bare / "checkpoints" / "last.pt").write_bytes(
            (other / "checkpoints" / "last.pt").read_bytes())
        assert_fails_well(cli(kind, "--resume", "--out", bare), "last.pt",
                          f"written by a {'retrain' if kind == 'search' else 'search'}")


# ------------------------------------------------------------------------------ item 18.4


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_an_out_that_cannot_be_created_is_refused_before_the_data(kind, tmp_path):
    import os

    file = tmp_path / "file"
    file.write_text("mine")
    outs = [file / "run", Path("/proc/nas-reid-test/run"), Path("/sys/nas-reid-test")]
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        (tmp_path / "ro").mkdir(mode=0o500)
        outs += [tmp_path / "ro" / "run", tmp_path / "ro"]
    before = listing(tmp_path)
    for out in outs:
        # a missing dataset would be the error if the folder were checked after the data
        args = ["--data", "market1501", "--root", tmp_path / "no-dataset", "--out", out]
        result = cli(kind, *args, *(["--genotype", "rga_s"] if kind == "retrain" else []))
        assert_fails_well(result, f"--out {out}")
        assert "no-dataset" not in result.output
    assert listing(tmp_path) == before


# ------------------------------------------------------------------------------ item 18.5


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, data_root):
    """The tiny space, genotype and recipe as files, for the command line."""
    import yaml

    folder = tmp_path_factory.mktemp("inputs")
    (folder / "space.yaml").write_text(yaml.safe_dump(tiny_space()))
    tiny_genotype().save(folder / "genotype.json")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe()))
    return folder


def command(kind: str, inputs: Path, data_root: Path, out: Path) -> list:
    """The command line of the reference run of ``kind`` into ``out`` (one torch thread)."""
    what = (["--space", inputs / "space.yaml"] if kind == "search" else
            ["--genotype", inputs / "genotype.json", "--recipe", inputs / "recipe.yaml"])
    return [kind, *what, "--data", "synthreid", "--root", data_root, "--out", out, "--threads", 1]


def last_line(result) -> str:
    """The one line a failed command ends with (progress lines before it), no traceback."""
    assert "Traceback" not in result.output, result.output
    return result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_a_full_disk_at_a_checkpoint_leaves_a_resumable_run_and_says_how(
        kind, tmp_path, inputs, data_root, monkeypatch, request):
    import errno
    import shlex

    import nas_reid.fileio as fileio

    out = tmp_path / "run"
    writes = []

    def full_at_the_third(path, obj):  # epoch 0, then the end of epoch 1 (and best.pt) are kept
        writes.append(Path(path).name)
        if writes.count("last.pt") == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return fileio.atomic_torch_save(path, obj)

    module = "nas_reid.search.checkpoint" if kind == "search" else "nas_reid.train.checkpoint"
    with monkeypatch.context() as patch:
        patch.setattr(f"{module}.atomic_torch_save", full_at_the_third)
        result = cli(*command(kind, inputs, data_root, out))
    assert result.exit_code == 2, result.output
    line = last_line(result)
    assert line.startswith("Error: ") and "No space left on device" in line, line
    assert "last.pt" in line and "still resumable" in line and "end of epoch 1/2" in line, line
    resume = line.split(": nas-reid ", 1)[1]
    assert resume == f"{kind} --resume --out {shlex.quote(str(out))} --threads 1", line
    assert not list(out.rglob("*.tmp"))

    done = cli(*shlex.split(resume))
    assert done.exit_code == 0, done.output
    assert_same_end(out, reference(request, kind))


# ------------------------------------------------------------------------------ item 18.7


@pytest.mark.filterwarnings("ignore::nas_reid.search.CollapseWarning")
def test_a_mid_epoch_resume_leaves_metrics_jsonl_as_an_uninterrupted_run(tmp_path, dataset):
    """DCS ops whose keep ratios must survive the checkpoint: after the resume the sampled
    candidates of an epoch's last steps need not include every DCS op."""
    space = tiny_space()
    space["ops"] = ["identity", {"name": "dcs", "params": {"variant": "mask"}}, "eca"]
    whole = tmp_path / "whole"
    run_search(whole, dataset, space=space, log_every=1)
    assert all(len(r["dcs_keep"]) == 2 for r in _lines(whole / "metrics.jsonl")
               if r["kind"] == "epoch")
    for stop in (3, 7):
        part = tmp_path / f"stopped-at-{stop}"
        run_search(part, dataset, space=space, log_every=1, max_steps=stop, checkpoint_every=2)
        search(None, None, out_dir=part, resume=True, progress=False, log_every=1)
        assert _lines(part / "metrics.jsonl", TIMES) == _lines(whole / "metrics.jsonl", TIMES), stop


# ------------------------------------------------------------------------------ item 18.8


@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_the_temporary_files_of_a_killed_write_are_removed_on_resume(kind, tmp_path, dataset,
                                                                     capsys):
    runner = KINDS[kind][0]
    out = tmp_path / "run"
    runner(out, dataset, max_steps=1)
    ours = [out / "checkpoints" / ".last.pt.k1l2m_n4.tmp", out / ".metrics.jsonl.abcdefgh.tmp",
            out / ".config.yaml.0a1b2c3d.tmp"]
    theirs = [out / ".notes.txt.abcdefgh.tmp", out / ".last.pt.k1l2m_n4.tmp",
              out / "checkpoints" / "last.pt.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"x" * 1000)
    capsys.readouterr()
    runner(out, None, resume=True, max_steps=2, progress=True,
           **({"space": None} if kind == "search" else {"genotype": None, "recipe": None}))
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("removed ")]
    assert said == [f"removed 3 temporary files of an interrupted write from {out}"], said


# ------------------------------------------------------------------------------ kill points (18)

STEPS = {"search": 4, "retrain": 8}  # per epoch, two epochs
EVERY = 3  # --checkpoint-every: checkpoints mid-epoch too


def started(kind, inputs, data_root, out, kill_at, *extra) -> "subprocess.Popen":
    """The reference run's command line with ``extra`` (``--resume ...``: instead of its space,
    genotype, recipe and data), started in a new process group that signals itself at
    ``kill_at`` (:mod:`nas_reid.killpoints`); several run at once, each on one thread."""
    import os
    import subprocess
    import sys

    args = command(kind, inputs, data_root, out)
    if extra and extra[0] == "--resume":
        args = [kind, *extra, "--out", out, "--threads", 1]
    elif extra:
        args += extra
    env = {**os.environ, "NAS_REID_KILL_AT": kill_at, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "nas_reid.cli", *map(str, args),
                             "--checkpoint-every", str(EVERY)], env=env, cwd=out.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def ended(process: "subprocess.Popen") -> "subprocess.CompletedProcess":
    import subprocess

    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def in_a_process(kind, inputs, data_root, out, kill_at, *extra) -> "subprocess.CompletedProcess":
    """:func:`started`, waited for."""
    return ended(started(kind, inputs, data_root, out, kill_at, *extra))


def kill_points(kind: str) -> dict[str, str]:
    """Each phase of a run: the kill point, and how the run is recovered."""
    steps = 2 * STEPS[kind]
    last_epoch_end = 1 + steps // EVERY + 2  # epoch 0, the mid-epoch ones, epochs 1 and 2
    final = "genotype.json" if kind == "search" else "results.json"
    return {"setup": "rerun", f"step@{STEPS[kind] + 1}": "resume", "write:last.pt@3": "resume",
            f"checkpoint@{last_epoch_end}": "resume", f"write:{final}": "resume"}


def recover(kind: str, out: Path, dataset, how: str):
    if how == "rerun":
        return KINDS[kind][0](out, dataset)
    return KINDS[kind][0](out, None, resume=True,
                          **({"space": None} if kind == "search" else {"genotype": None,
                                                                        "recipe": None}))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_a_run_killed_at_any_phase_recovers_to_the_uninterrupted_end(
        kind, tmp_path, inputs, data_root, dataset, request):
    outs = {point: tmp_path / point.replace(":", "-").replace("@", "-")
            for point in kill_points(kind)}
    processes = {point: started(kind, inputs, data_root, out, point)
                 for point, out in outs.items()}
    for point, how in kill_points(kind).items():
        out = outs[point]
        killed = ended(processes[point])
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        checkpoint = out / "checkpoints" / "last.pt"
        if point == "setup":
            assert (out / "config.yaml").is_file() and not checkpoint.exists()
        elif point.startswith("write:"):  # killed with the new file under its temporary name
            name = point.split(":")[1].split("@")[0]
            assert list(out.rglob(f".{name}.*.tmp")), point
        elif point.startswith("checkpoint@"):  # the last epoch's record is ahead of the checkpoint
            logged = _lines(out / "metrics.jsonl")
            assert [r["epoch"] for r in logged if r["kind"] == "epoch"] == [1, 2]
        done = recover(kind, out, dataset, how)
        assert done.finished, point
        assert not list(out.rglob("*.tmp")), point
        assert_same_end(out, reference(request, kind))


# ------------------------------------------------------------------------------ Ctrl-C (20.1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_ctrl_c_checkpoints_the_current_step_prints_the_resume_command_and_exits_130(
        kind, tmp_path, inputs, data_root, request):
    import shlex

    # once: the step ends, is checkpointed (a mid-epoch checkpoint), and the run says how to go on
    # (with a data-loading worker, which gets the Ctrl-C of the process group too)
    out, twice = tmp_path / "once", tmp_path / "twice"
    second = started(kind, inputs, data_root, twice, "step@2=INT,write:last.pt@2=INT")
    stopped = in_a_process(kind, inputs, data_root, out, "step@2=INT", "--workers", 1)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert "Traceback" not in stopped.stderr and stopped.stderr.count("Ctrl-C: stopping") == 1
    assert line.startswith("interrupted: ") and str(out) in line, line
    assert "stopped at step 2 (batch 2 of epoch 1/2)" in line, line
    resume = line.split(": nas-reid ", 1)[1]
    assert resume == (f"{kind} --resume --out {shlex.quote(str(out))} --threads 1 --workers 1 "
                      "--checkpoint-every 3")
    position = read_position(out)
    assert position == (0, 2, 2)
    done = cli(*shlex.split(resume))
    assert done.exit_code == 0, done.output
    assert_same_end(out, reference(request, kind))

    # twice, the second during the checkpoint write: stops at once, the last checkpoint kept whole
    out, stopped = twice, ended(second)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert "Traceback" not in stopped.stderr
    assert "stopped at once" in line and "from its last checkpoint, its start" in line, line
    assert read_position(out) == (0, 0, 0) and not list(out.rglob("*.tmp"))
    done = cli(*shlex.split(line.split(": nas-reid ", 1)[1]))
    assert done.exit_code == 0, done.output
    assert_same_end(out, reference(request, kind))


def read_position(out: Path) -> tuple[int, int, int]:
    """(epoch, batch, step) of a run folder's checkpoint."""
    path = out / "checkpoints" / "last.pt"
    if (out / "genotype_history.jsonl").is_file():
        state = load_checkpoint(path)
    else:
        state = read_checkpoint(path)["training"]
    return state["epoch"], state["batch"], state["step"]


@pytest.mark.slow
def test_ctrl_c_stops_tune_with_exit_130_and_says_how_to_continue(tmp_path, inputs, data_root):
    import os
    import subprocess
    import sys

    import yaml

    from tests.tiny import tiny_tune_space

    space = tmp_path / "tune.yaml"
    space.write_text(yaml.safe_dump(tiny_tune_space()))

    def tune(out: Path, kill_at: str) -> subprocess.CompletedProcess:
        args = ["tune", space, "--backend", "optuna", "--genotype", inputs / "genotype.json",
                "--data", "synthreid", "--root", data_root, "--recipe", inputs / "recipe.yaml",
                "--trials", 1, "--early-stopping", "none", "--out", out, "--threads", 1]
        env = {**os.environ, "NAS_REID_KILL_AT": kill_at, "OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, "-m", "nas_reid.cli", *map(str, args)], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)

    # during a trial's retrain: the study is kept, and resumes
    stopped = tune(tmp_path / "study", "step@2=INT")
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == \
        f"interrupted: continue with nas-reid tune --resume --out {tmp_path / 'study'}"
    # during the set-up, before the study exists: nothing kept, and it says so
    stopped = tune(tmp_path / "early", "write:tune.yaml=INT")
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert stopped.stderr.strip().splitlines()[-1] == \
        f"interrupted before the study in {tmp_path / 'early'} started; nothing was kept"
    assert not (tmp_path / "early").exists()


# ------------------------------------------------------------------------------ extending (20.2)


def copy_run(source: Path, out: Path) -> Path:
    import shutil

    shutil.copytree(source, out)
    return out


def resume(kind: str, out: Path, **kwargs):
    return KINDS[kind][0](out, None, resume=True, **kwargs,
                          **({"space": None} if kind == "search" else {"genotype": None,
                                                                        "recipe": None}))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["search", "retrain"])
def test_a_finished_run_extended_on_resume_says_what_changes_and_resumes_exactly(
        kind, tmp_path, inputs, data_root, request, capsys):
    import yaml

    # uninterrupted: the finished two-epoch run goes on to three
    whole = copy_run(reference(request, kind), tmp_path / "whole")
    capsys.readouterr()
    done = resume(kind, whole, epochs=3, progress=True)
    assert done.finished and done.epochs == 3 and done.epochs_done == 3
    told = capsys.readouterr().err.splitlines()
    assert told[0] == f"{kind} run folder: {whole} (resuming after epoch 2 of 3)", told
    assert told[1].startswith("  curves: tensorboard --logdir "), told
    told = told[2:]
    assert told[0] == (f"--epochs 3: the {kind} in {whole} now runs 3 epochs instead of 2, "
                       f"resumed at the end of epoch 2/3 (step {2 * STEPS[kind]}); from epoch 3 "
                       "on the schedules follow 3 epochs, the epochs done keep theirs:"), told
    if kind == "search":  # tau 5 -> 0.5 linear, reaching 0.5 in the last epoch; cosine lr 0.05 -> 0
        assert told[1] == "  temperature, epoch 3: 0.5 (the run had ended)", told
        assert told[2] == "  weights lr, epoch 3: 0.0125 (the run had ended)", told
    else:
        assert told[1] == "  lr, epoch 3: 0.001 (the run had ended)", told
    records = [r for r in _lines(whole / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [(r["epoch"], r["epochs"]) for r in records] == [(1, 2), (2, 2), (3, 3)]
    if kind == "search":
        assert records[-1]["tau"] == pytest.approx(0.5)
        assert records[-1]["lr"]["weights"] == pytest.approx(0.0125)
    config = yaml.safe_load((whole / "config.yaml").read_text())
    section, total = (("search", config["search"]["epochs"]) if kind == "search" else
                      ("train", config["recipe"]["epochs"]))
    assert total == 3
    assert config[section]["epochs_changed"] == [
        {"from": 2, "to": 3, "at": {"epoch": 2, "batch": 0, "step": 2 * STEPS[kind]}}]

    # killed (SIGKILL) in the middle of the added epoch, resumed without --epochs: the same end
    part = copy_run(reference(request, kind), tmp_path / "part")
    killed = in_a_process(kind, inputs, data_root, part, "step@3", "--resume", "--epochs", 3)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert read_position(part)[2] > 2 * STEPS[kind]  # a mid-epoch checkpoint of the 3rd epoch
    assert resume(kind, part).finished
    assert_same_end(part, whole)

    # fewer epochs than done: refused, nothing touched
    before = listing(whole)
    assert_fails_well(cli(kind, "--resume", "--out", whole, "--epochs", 2),
                      "--epochs 2", "already ran 3 epochs", "--epochs 3 or more")
    assert listing(whole) == before


def test_a_part_done_run_extended_follows_the_new_total_from_where_it_stopped(tmp_path, dataset):
    """Stopped in epoch 2 of 2 (step 6 of 8), extended to 4: the rest of epoch 2 runs at the
    4-epoch schedule's values for epoch 2; epoch 1 keeps its own. The temperature goes linearly
    from 5 in the first epoch to 0.5 in the last (:meth:`TauConfig.at_epoch`)."""
    out = tmp_path / "run"
    run_search(out, dataset, max_steps=6)
    done = search(None, None, out_dir=out, resume=True, epochs=4, progress=False)
    assert done.finished and done.epochs_done == 4
    records = [r for r in _lines(out / "metrics.jsonl") if r["kind"] == "epoch"]
    assert [r["epochs"] for r in records] == [2, 4, 4, 4]
    assert [r["tau"] for r in records] == pytest.approx([5.0, 3.5, 2.0, 0.5])
    cosine = [0.05 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert [r["lr"]["weights"] for r in records] == pytest.approx([0.05, *cosine[1:]])
    with pytest.raises(UserError, match="already ran 4 epochs; give --epochs 4 or more"):
        search(None, None, out_dir=out, resume=True, epochs=3, progress=False)
