"""The Ray Tune backend of the tuner: a local Ray (2 CPUs, no dashboard) started once for this
module and shut down after it; tiny retrains (ResNet-18 at 64x32, one SE cell, PK 2x4, two
epochs) on the tiny synthreid benchmark, one CPU and one torch thread per trial. Also the
honest validation split both backends score on, and the cluster address checks.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import socket
from pathlib import Path

import optuna
import pytest
import ray
import yaml
from ray import tune

from nas_reid.hpo import Objective, run_tune, validation_split
from nas_reid.errors import UserError
from nas_reid.hpo.ray_backend import _check_resources, _Searcher, _suggest, is_remote_client
from nas_reid.hpo.space import load_tune_space
from nas_reid.train.recipe import load_recipe
from tests.tiny import tiny_genotype, tiny_tune_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = tiny_tune_space("ray_tune")
# batch.p=50 needs 50 training identities: the retrain of such a trial raises in the worker
FAILING = {**SPACE, "name": "ray_fail",
           "params": {**SPACE["params"], "batch.p": {"type": "categorical", "choices": [2, 50]}},
           "fixed": {"epochs": 2, "batch": {"k": 4},
                     "lr_schedule": {"warmup_epochs": 1, "milestones": []}}}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "trials.csv").open()))


def reported_epochs(trial_dir: Path) -> list[int]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ no Ray needed


def test_the_validation_split_is_honest(dataset):
    val = validation_split(dataset, 0.25, seed=0)
    info = val.extra["validation"]
    assert (info["train_ids"], info["heldout_ids"]) == (6, 2)
    held = {p for p, _, _ in val.query + val.gallery}
    trained = {p for p, _, _ in val.train}
    test = {p for p, _, _ in dataset.query + dataset.gallery}
    assert held and val.query and not held & test and not trained & test  # never the test split
    assert held | trained == {p for p, _, _ in dataset.train} and not held & trained
    pid_of = {p: pid for p, pid, _ in dataset.train}
    held_ids = {pid_of[p] for p in held}
    assert held_ids == set(info["heldout_pids"])
    assert not held_ids & {pid_of[p] for p in trained}  # identity-disjoint
    assert sorted({pid for _, pid, _ in val.train}) == list(range(6))  # relabelled for the classifier
    for _, pid, cam in val.query:  # every query has a match under another camera
        assert any(g_pid == pid and g_cam != cam for _, g_pid, g_cam in val.gallery)
    other = validation_split(dataset, 0.25, seed=1).extra["validation"]["heldout_pids"]
    assert other != info["heldout_pids"]
    assert (val.name, val.root) == (dataset.name, dataset.root)
    # what a trial trains and scores on
    objective = Objective.build(SPACE, dataset, genotype=tiny_genotype(), recipe="bot")
    assert objective.data.train == val.train and objective.data.query == val.query


def test_the_searcher_records_early_stopped_trials_as_pruned():
    space = load_tune_space(SPACE)
    storage = optuna.storages.InMemoryStorage()
    searcher = _Searcher(lambda trial: _suggest(space, trial), metric="mAP", mode="max",
                         sampler=optuna.samplers.TPESampler(seed=0), storage=storage,
                         study_name="s")
    configs = [searcher.suggest(name) for name in ("a", "b", "c")]
    assert [c["trial_number"] for c in configs] == [0, 1, 2]
    assert set(configs[0]) == {"optimizer.lr", "loss.triplet_margin", "trial_number"}
    searcher.on_trial_complete("a", result={"mAP": 0.4, "epoch": 1, "epochs": 2})  # stopped by ASHA
    searcher.on_trial_complete("b", result={"mAP": 0.6, "epoch": 2, "epochs": 2})
    searcher.on_trial_complete("c", error=True)
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [(t.state.name, t.value) for t in trials] == [("PRUNED", None), ("COMPLETE", 0.6),
                                                           ("FAIL", None)]


def test_an_unreachable_cluster_is_a_clean_error(tmp_path, data_root, run, monkeypatch):
    genotype = tmp_path / "g.json"
    tiny_genotype().save(genotype)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    base = ["tune", space, "--genotype", genotype, "--root", data_root, "--recipe", "bot",
            "--out", tmp_path / "out"]
    port = closed_port()
    for address in (f"ray://127.0.0.1:{port}", f"127.0.0.1:{port}", "nohost"):
        result = run(*base, "--address", address)
        assert result.exit_code == 2, result.output
        assert address in result.output and "Traceback" not in result.output
        assert not (tmp_path / "out").exists()
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    result = run(*base)
    assert result.exit_code == 2 and "no Ray cluster reachable" in result.output
    assert not (tmp_path / "out").exists()


def test_ray_client_to_another_machine_needs_shared_storage(tmp_path, data_root, run):
    assert not is_remote_client(None) and not is_remote_client("auto")
    assert not is_remote_client("10.0.0.1:6379")  # a driver on a node: its paths are its own
    for local in ("ray://127.0.0.1:10001", "ray://localhost:10001",
                  f"ray://{socket.gethostname()}:10001"):
        assert not is_remote_client(local), local
    remote = "ray://198.51.100.7:10001"  # TEST-NET-2: never this machine
    assert is_remote_client(remote)
    genotype = tmp_path / "g.json"
    tiny_genotype().save(genotype)
    base = ["tune", "--genotype", genotype, "--root", data_root, "--out", tmp_path / "out",
            "--address", remote]
    for extra in ([], ["--storage", "sqlite:///x.db"], ["--storage-path", "s3://bucket/tune"]):
        result = run(*base, *extra)
        assert result.exit_code == 2, result.output
        assert "Ray Client" in result.output and "--storage" in result.output
        assert not (tmp_path / "out").exists() and not Path("x.db").exists()


# ------------------------------------------------------------------------------ real Ray runs


def test_resume_trusts_only_the_storage_path_the_study_was_created_with(tmp_path, dataset, run,
                                                                      monkeypatch):
    """Tuner.restore unpickles tuner.pkl from the storage path: a resume must not take another
    one, whether given by --storage-path or by an edited tune.yaml (Ray never starts)."""
    from nas_reid.hpo import ray_backend
    from nas_reid.hpo.study import run_settings, write_settings

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray_backend, "ray_session", no_ray)
    out = tmp_path / "study"
    out.mkdir()
    url = f"sqlite:///{out / 'study.db'}"
    own = str((out / "ray").resolve())
    optuna.create_study(study_name="ray_tune", storage=url, direction="maximize").set_user_attr(
        ray_backend.STORAGE_PATH_ATTR, own)
    objective = Objective.build(SPACE, dataset, genotype=tiny_genotype(), recipe="bot")
    elsewhere = str(tmp_path / "elsewhere")
    ray = {"storage_path": elsewhere, "cpus_per_trial": 1.0, "gpus_per_trial": 0.0,
           "max_concurrent": None}
    write_settings(out, {**run_settings(objective, backend="ray", study_name="ray_tune",
                                        storage=url, seed=0, early_stopping="asha", trials=1,
                                        ray=ray), "experiments": []})
    common = dict(genotype=tiny_genotype(), data=dataset, recipe="bot", out_dir=out, trials=1)
    with pytest.raises(UserError, match=f"--storage-path {elsewhere} is not the storage path "
                       f"study 'ray_tune' was created with \\({own}\\)"):
        run_tune(SPACE, resume=True, storage_path=elsewhere, **common)
    edited = run("tune", "--resume", "--out", out)  # tune.yaml names another storage path
    assert edited.exit_code == 2 and "is not the storage path study" in edited.output
    assert edited.output.count("\n") == 1
    shown = run("tune", "--help").output
    assert "only trusted users can write" in " ".join(shown.split())


@pytest.mark.slow
def test_resources_a_trial_cannot_get(local_ray):
    with pytest.raises(UserError, match="asks for 64 CPU and 0.5 GPU per trial but the Ray "
                                        "cluster has 2 CPU and 0 GPU"):
        _check_resources(64.0, 0.5, started=True)  # a local Ray this run started: an error
    with pytest.warns(UserWarning, match="wait until the cluster grows"):
        _check_resources(64.0, 0.0, started=False)  # a cluster may scale up: a warning
    _check_resources(1.0, 0.0, started=True)


@pytest.fixture(scope="module")
def tuned(local_ray, tmp_path_factory, data_root):
    """A 4-trial Ray tune with ASHA through the CLI, 2 trials at a time; the seed makes
    TPE pick batch.p=50 (a retrain that raises) for some trials and 2 for the others."""
    from click.testing import CliRunner

    from nas_reid.cli import main

    root = tmp_path_factory.mktemp("ray_tune")
    space = root / "space.yaml"
    space.write_text(yaml.safe_dump(FAILING))
    genotype = root / "g.json"
    tiny_genotype().save(genotype)
    out = root / "study"
    result = CliRunner().invoke(main, [str(a) for a in (
        "tune", space, "--genotype", genotype, "--root", data_root, "--recipe", "bot",
        "--trials", 4, "--max-concurrent", 2, "--early-stopping", "asha", "--seed", 0,
        "--out", out)], catch_exceptions=False)
    return out, result


@pytest.mark.slow
def test_a_four_trial_asha_tune_writes_its_files(tuned):
    out, result = tuned
    assert result.exit_code == 0, result.output
    assert "study ray_fail (ray)" in result.output and "optuna-dashboard sqlite:///" in result.output
    for name in ("trials.csv", "best.yaml", "best_trial.yaml", "optimization_history.png",
                 "tune.yaml", "study.db"):
        assert (out / name).is_file(), name
        assert f"wrote {out / name}" in result.output or name in ("tune.yaml", "study.db")
    assert (out / "optimization_history.png").read_bytes().startswith(b"\x89PNG")
    study = optuna.load_study(study_name="ray_fail", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 4
    table = rows(out)
    assert [int(r["number"]) for r in table] == [0, 1, 2, 3]
    assert [r["state"] for r in table] == [t.state.name for t in study.trials]
    settings = yaml.safe_load((out / "tune.yaml").read_text())
    assert settings["backend"] == "ray" and settings["experiments"] == [{"name": "ray_fail", "trials": 4}]
    experiment = out / "ray" / "ray_fail"
    assert sorted(p.name for p in experiment.glob("trial_*")) == [f"trial_{n}" for n in range(4)]
    for row in table:
        trial = experiment / f"trial_{row['number']}"
        if row["state"] in ("COMPLETE", "PRUNED"):
            assert reported_epochs(trial) == list(range(1, int(row["epochs"]) + 1))
        if row["state"] == "PRUNED":  # stopped by ASHA: never resumed, its checkpoint removed
            assert row["run_dir"] == "" and not list(trial.glob("checkpoint_*"))
        if row["state"] == "COMPLETE":
            assert Path(row["run_dir"], "metrics.jsonl").is_file()  # the run folder, checkpointed
            assert row["run_dir"].startswith(str(trial / "checkpoint_"))
            assert row["epochs"] == "2" and float(row["value"]) == pytest.approx(float(row["last_value"]))
    best = yaml.safe_load((out / "best_trial.yaml").read_text())
    assert best["value"] == max(t.value for t in study.trials if t.state.name == "COMPLETE")
    recipe = load_recipe(out / "best.yaml")
    assert recipe.batch.p == 2 and recipe.optimizer.lr == pytest.approx(best["params"]["optimizer.lr"])


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_others_complete(tuned):
    out, result = tuned
    table = rows(out)
    failed = [r for r in table if r["params_batch.p"] == "50"]
    assert failed and len(failed) < 4  # the seed gives both kinds
    for row in table:
        if row["params_batch.p"] == "50":
            assert row["state"] == "FAIL" and "P=50" in row["error"]
            assert row["epochs"] == "" and row["run_dir"] == ""
        else:
            assert row["state"] in ("COMPLETE", "PRUNED") and row["error"] == ""
    assert f"{len(failed)} failed" in result.output


@pytest.mark.slow
def test_trials_asha_stops_are_pruned_and_lose_their_checkpoints(local_ray, tmp_path, dataset):
    """One trial at a time, ASHA's rung after epoch 1: a trial with a learning rate too small
    to learn falls below the rung's cutoff once a learning trial is recorded, and is stopped
    (seed 8: TPE's random start draws lr 1e-3 first, then 1e-9 three times)."""
    space = {**SPACE, "name": "ray_prune",
             "params": {"optimizer.lr": {"type": "categorical", "choices": [1.0e-9, 1.0e-3]}},
             "fixed": {**SPACE["fixed"], "lr_schedule": {"warmup_epochs": 0, "milestones": []}},
             "early_stopping": {"grace_period": 1, "reduction_factor": 2}}
    out = tmp_path / "study"
    result = run_tune(space, genotype=tiny_genotype(), data=dataset, recipe="bot", out_dir=out,
                      trials=4, max_concurrent=1, early_stopping="asha", seed=8)
    table = rows(out)
    pruned = [r for r in table if r["state"] == "PRUNED"]
    complete = [r for r in table if r["state"] == "COMPLETE"]
    assert pruned and complete and result.n_pruned == len(pruned)
    experiment = out / "ray" / "ray_prune"
    for row in pruned:  # stopped after epoch 1; its checkpoint removed, no run folder listed
        trial = experiment / f"trial_{row['number']}"
        assert row["epochs"] == "1" and row["run_dir"] == ""
        assert reported_epochs(trial) == [1] and not list(trial.glob("checkpoint_*"))
    for row in complete:
        assert Path(row["run_dir"], "checkpoints", "last.pt").is_file()


class InterruptOnce(tune.Callback):
    """Ctrl-C for the driver once a trial has finished and another one's first-epoch checkpoint
    is registered (a marker file keeps the restored copy of this callback from doing it
    again). A trial whose last result is not yet checkpointed when the run stops restarts from
    its previous checkpoint: Ray Tune resumes trials at least once, not exactly once."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def on_step_end(self, iteration, trials, **info):
        if os.path.exists(self.marker) or not any(t.status == "TERMINATED" for t in trials):
            return
        running = [t for t in trials if t.status == "RUNNING" and t.last_result]
        if running and all(t.checkpoint is not None and t.last_result.get("epoch") == 1
                           for t in running):
            Path(self.marker).write_text("interrupted")
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_resume_after_an_interruption_continues(local_ray, tmp_path, data_root, dataset):
    out = tmp_path / "study"
    common = dict(genotype=tiny_genotype(), data=dataset, recipe="bot", out_dir=out, trials=4,
                  max_concurrent=2, early_stopping="none")
    first = run_tune(SPACE, callbacks=[InterruptOnce(tmp_path / "marker")], **common)
    assert first.interrupted and (tmp_path / "marker").is_file()
    assert first.n_unfinished >= 1 and first.n_complete >= 1  # what the study held at the stop
    experiment = out / "ray" / "ray_tune"
    before = {p.name: reported_epochs(p) for p in experiment.glob("trial_*")}
    started = {name for name, epochs in before.items() if epochs == [1]}
    finished = {name for name, epochs in before.items() if epochs == [1, 2]}
    assert started and finished  # one trial stopped after its first epoch, one had finished

    again = run_tune(SPACE, resume=True, **common)
    assert not again.interrupted
    assert (again.n_complete, again.n_failed, again.n_unfinished) == (4, 0, 0)
    after = {p.name: reported_epochs(p) for p in experiment.glob("trial_*")}
    assert sorted(after) == [f"trial_{n}" for n in range(4)]  # no trial was started twice
    assert all(epochs == [1, 2] for epochs in after.values())  # no epoch was run twice
    for name in finished:  # finished trials were not run again
        assert after[name] == before[name]
    study = optuna.load_study(study_name="ray_tune", storage=f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    for name in started:  # continued from its epoch-1 checkpoint: its run folder logs each epoch once
        row = rows(out)[int(name.split("_")[1])]
        lines = Path(row["run_dir"], "metrics.jsonl").read_text().splitlines()
        assert [r["epoch"] for r in map(json.loads, lines) if r["kind"] == "epoch"] == [1, 2]
    # asking for more trials runs a second experiment on the same study
    more = run_tune(SPACE, resume=True, **{**common, "trials": 5})
    assert more.n_complete == 5 and len(rows(out)) == 5
    settings = yaml.safe_load((out / "tune.yaml").read_text())
    assert [e["name"] for e in settings["experiments"]] == ["ray_tune", "ray_tune-2"]
    assert [p.name for p in (out / "ray" / "ray_tune-2").glob("trial_*")] == ["trial_4"]
    params = [tuple(sorted(t.params.items())) for t in
              optuna.load_study(study_name="ray_tune", storage=f"sqlite:///{out / 'study.db'}").trials]
    assert len(set(params)) == 5  # the new experiment's sampler does not repeat the first's
