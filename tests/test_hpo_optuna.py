"""The Optuna backend of the tuner (no Ray): studies of tiny retrains, failures, pruning, resume.

Every real trial trains ResNet-18 at 64x32 with one SE cell on a tiny synthreid benchmark (16
identities), PK 2x4, two epochs: a few seconds each on one thread.
"""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from nas_reid.errors import UserError
from nas_reid.hpo import StudyResult, TuneSpaceError, run_study
from nas_reid.hpo import optuna_backend
from nas_reid.train.loop import retrain
from nas_reid.train.recipe import load_recipe
from tests.tiny import tiny_genotype

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = {
    "name": "tiny_tune",
    "target": "retrain",
    "metric": {"name": "mAP", "mode": "max"},
    "params": {
        "optimizer.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-3, "log": True},
        "loss.triplet_margin": {"type": "float", "low": 0.1, "high": 0.5},
    },
    "fixed": {"epochs": 2, "batch": {"p": 2, "k": 4},
              "lr_schedule": {"warmup_epochs": 1, "milestones": []}, "eval": {"every": 1}},
}


def study(dataset, out, **kwargs) -> StudyResult:
    kwargs.setdefault("recipe", "bot")
    return run_study(SPACE, tiny_genotype(), dataset, out_dir=out, **kwargs)


def states(out: Path, name: str = "tiny_tune") -> list[str]:
    s = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    return [t.state.name for t in s.get_trials(deepcopy=False)]


# ------------------------------------------------------------------------------ real retrains


def test_on_epoch_gets_every_epoch_record(tmp_path, dataset):
    seen = []
    result = retrain(tiny_genotype(), dataset, recipe="bot", overrides=SPACE["fixed"],
                     out_dir=tmp_path / "run", progress=False, on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert seen == result.metrics
    assert all(r["kind"] == "epoch" and 0 <= r["eval"]["mAP"] <= 1 for r in seen)


def test_an_exception_from_on_epoch_stops_the_run_resumably(tmp_path, dataset):
    def stop(record):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        retrain(tiny_genotype(), dataset, recipe="bot", overrides=SPACE["fixed"], out_dir=out,
                progress=False, on_epoch=stop)
    assert (out / "checkpoints" / "last.pt").is_file()
    resumed = retrain(None, dataset, out_dir=out, progress=False, resume=True)
    assert resumed.finished and resumed.epochs_done == 2


def test_a_study_of_three_trials_writes_its_files(tmp_path, dataset):
    out = tmp_path / "study"
    result = study(dataset, out, trials=3, pruner="none")
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 0, 0)
    assert result.study_name == "tiny_tune" and result.out_dir == out
    for name in ("best.yaml", "trials.csv", "study.db"):
        assert (out / name).is_file()
    assert all((out / "trials" / str(n) / "results.json").is_file() for n in range(3))
    assert 0 <= result.best_value <= 1
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["value"] == pytest.approx(result.best_value)
    assert best["overrides"] == result.best_overrides
    assert set(best["params"]) == set(SPACE["params"]) == set(result.best_params)
    recipe = load_recipe("bot", best["overrides"])
    assert recipe.epochs == 2 and recipe.optimizer.lr == pytest.approx(best["params"]["optimizer.lr"])
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert max(float(r["value"]) for r in rows) == pytest.approx(result.best_value)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, dataset, monkeypatch):
    real = optuna_backend.retrain

    def flaky(genotype, data, *, out_dir, **kwargs):
        if Path(out_dir).name == "1":
            raise RuntimeError("boom")
        return real(genotype, data, out_dir=out_dir, **kwargs)

    monkeypatch.setattr(optuna_backend, "retrain", flaky)
    out = tmp_path / "study"
    result = study(dataset, out, trials=3, pruner="none")
    assert (result.n_complete, result.n_failed) == (2, 1)
    assert states(out) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert yaml.safe_load((out / "best.yaml").read_text())["trial"] in (0, 2)


def test_resume_runs_only_the_remaining_trials(tmp_path, dataset):
    out = tmp_path / "study"
    first = study(dataset, out, trials=2)
    assert first.n_complete + first.n_pruned == 2
    with pytest.raises(UserError, match="resume"):
        study(dataset, out, trials=3)
    again = study(dataset, out, trials=3, resume=True)
    assert len(states(out)) == 3
    assert again.n_complete + again.n_pruned + again.n_failed == 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2"]
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 3
    # already reached: nothing more to run
    study(dataset, out, trials=2, resume=True)
    assert len(states(out)) == 3


# ------------------------------------------------------------------------------ fakes (fast)


def test_the_median_pruner_prunes_a_poor_trial(tmp_path, monkeypatch):
    values = {0: 0.9, 1: 0.8, 2: 0.1}

    def fake(genotype, data, *, out_dir, on_epoch, **kwargs):
        v = values[int(Path(out_dir).name)]
        for epoch in (1, 2, 3):
            on_epoch({"kind": "epoch", "epoch": epoch, "eval": {"mAP": v}})
        return SimpleNamespace(results={"plain": {"mAP": v}})

    monkeypatch.setattr(optuna_backend, "retrain", fake)
    out = tmp_path / "study"
    result = run_study(SPACE, None, None, out_dir=out, trials=3)
    assert (result.n_complete, result.n_pruned, result.n_failed) == (2, 1, 0)
    assert states(out) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert result.best_value == pytest.approx(0.9)
    none = run_study(SPACE, None, None, out_dir=tmp_path / "nopruning", trials=3, pruner="none")
    assert none.n_complete == 3


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(TuneSpaceError, match="not yet"):
        run_study({**SPACE, "target": "search", "params": {"weights.lr": SPACE["params"]["optimizer.lr"]},
                   "fixed": {}}, None, None, out_dir=tmp_path / "a", trials=1)
    with pytest.raises(UserError, match="pruner"):
        run_study(SPACE, None, None, out_dir=tmp_path / "b", trials=1, pruner="hyperband")
    with pytest.raises(UserError, match="trials"):
        run_study(SPACE, None, None, out_dir=tmp_path / "c", trials=0)
    with pytest.raises(TuneSpaceError, match="metric"):
        run_study({**SPACE, "metric": {"name": "rank1"}}, None, None, out_dir=tmp_path / "d", trials=1)


def test_cli_tune_runs_a_study_and_fails_cleanly(tmp_path, data_root, monkeypatch):
    from click.testing import CliRunner

    from nas_reid.cli import main

    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    genotype = tmp_path / "g.json"
    tiny_genotype().save(genotype)
    runner = CliRunner()
    args = ["tune", "--space", str(space), "--genotype", str(genotype), "--data", "synthreid",
            "--root", str(data_root), "--recipe", "bot", "--trials", "2", "--pruner", "none",
            "--out", "study", "--threads", "1"]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, done.output
    assert "2 complete" in done.output and "best value" in done.output
    best = yaml.safe_load((tmp_path / "study" / "best.yaml").read_text())
    load_recipe("bot", best["overrides"])
    again = runner.invoke(main, args)  # the study exists: --resume or another name
    assert again.exit_code == 2 and "resume" in again.output and "Traceback" not in again.output
    bad = runner.invoke(main, ["tune", "--space", str(tmp_path / "nope.yaml"), "--genotype",
                               str(genotype), "--out", "s2"])
    assert bad.exit_code == 2 and "nope.yaml" in bad.output
    bad = runner.invoke(main, ["tune", "--space", str(space), "--genotype", "no_such_model",
                               "--out", "s3"])
    assert bad.exit_code == 2 and "no_such_model" in bad.output
    assert not (tmp_path / "s3").exists()
