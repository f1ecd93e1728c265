"""The Optuna backend of the tuner (no Ray): studies of tiny retrains and searches, failures,
pruning, interruption and resume, the files and plots, the CLI.

Every real trial trains ResNet-18 at 64x32 with one SE cell on the tiny synthreid benchmark's
training identities (8: 6 to train on, 2 held out for validation), PK 2x4, two epochs: a few
seconds each on one thread.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml

from nas_reid.errors import UserError
from nas_reid.evaluation.evaluate import METRIC_KEYS
from nas_reid.hpo import StudyResult, TuneSpaceError, run_study
from nas_reid.space import load_space
from nas_reid.train import loop
from nas_reid.train.loop import retrain
from nas_reid.train.recipe import load_recipe
from nas_reid.viz.tune_plots import write_tune_plots
from tests.tiny import tiny_genotype, tiny_space, tiny_tune_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPACE = tiny_tune_space("tiny_tune")
PNG = b"\x89PNG\r\n\x1a\n"


def study(dataset, out, space=SPACE, **kwargs) -> StudyResult:
    kwargs.setdefault("recipe", "bot")
    return run_study(space, tiny_genotype(), dataset, out_dir=out, **kwargs)


EARLY = {**SPACE, "early_stopping": {"grace_period": 1}}
"""Stops after epoch 1 (the default grace period of SPACE's two epochs is both)."""


def trials_of(out: Path, name: str = "tiny_tune") -> list:
    s = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")
    return s.get_trials(deepcopy=False)


def states(out: Path, name: str = "tiny_tune") -> list[str]:
    return [t.state.name for t in trials_of(out, name)]


def rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "trials.csv").open()))


def epochs_logged(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["epoch"] for r in map(json.loads, lines) if r["kind"] == "epoch"]


# ------------------------------------------------------------------------------ real retrains


def test_on_epoch_gets_every_epoch_record(tmp_path, dataset):
    seen = []
    result = retrain(tiny_genotype(), dataset, recipe="bot", overrides={**SPACE["fixed"], "eval": {"every": 1}},
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
    result = study(dataset, out, trials=3, early_stopping="none")
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 0, 0)
    assert result.study_name == "tiny_tune" and result.out_dir == out and not result.interrupted
    for name in ("best.yaml", "best_trial.yaml", "trials.csv", "study.db", "tune.yaml",
                 "optimization_history.png", "param_importances.png"):
        assert (out / name).is_file(), name
    for name in ("optimization_history.png", "param_importances.png"):
        assert (out / name).read_bytes().startswith(PNG)
    assert set(result.files) >= {"trials.csv", "best.yaml", "best_trial.yaml",
                                 "optimization_history.png", "param_importances.png"}
    for n in range(3):
        run_dir = out / "trials" / str(n) / "retrain"
        assert (run_dir / "results.json").is_file()
        assert epochs_logged(run_dir) == [1, 2]  # every epoch evaluated (the tuner's eval.every)
    assert 0 <= result.best_value <= 1
    best = yaml.safe_load((out / "best_trial.yaml").read_text())
    assert best["value"] == pytest.approx(result.best_value) and best["config"] == "best.yaml"
    assert best["overrides"] == result.best_overrides
    assert set(best["params"]) == set(SPACE["params"]) == set(result.best_params)
    recipe = load_recipe(out / "best.yaml")  # the whole recipe, ready for --recipe
    assert recipe.name == "tiny_tune-best" and recipe.epochs == 2 and recipe.batch.p == 2
    assert recipe.optimizer.lr == pytest.approx(best["params"]["optimizer.lr"])
    assert recipe.eval.every == load_recipe("bot").eval.every  # the tuner's own setting left out
    assert "nas-reid retrain" in (out / "best.yaml").read_text().splitlines()[2]
    table = rows(out)
    assert [r["state"] for r in table] == ["COMPLETE"] * 3
    assert [r["epochs"] for r in table] == ["2"] * 3
    assert max(float(r["value"]) for r in table) == pytest.approx(result.best_value)
    assert all(r["run_dir"].endswith(f"trials/{r['number']}/retrain") for r in table)
    settings = yaml.safe_load((out / "tune.yaml").read_text())
    assert settings["backend"] == "optuna" and settings["validation"]["heldout_ids"] == 2


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path, dataset, monkeypatch):
    real = loop.retrain

    def flaky(genotype, data, *, out_dir, **kwargs):
        if Path(out_dir).parent.name == "1":
            raise RuntimeError("boom")
        return real(genotype, data, out_dir=out_dir, **kwargs)

    monkeypatch.setattr(loop, "retrain", flaky)
    out = tmp_path / "study"
    result = study(dataset, out, trials=3, early_stopping="none")
    assert (result.n_complete, result.n_failed) == (2, 1)
    assert states(out) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert rows(out)[1]["error"] == "RuntimeError: boom"
    assert yaml.safe_load((out / "best_trial.yaml").read_text())["trial"] in (0, 2)


def test_resume_runs_only_the_remaining_trials(tmp_path, dataset):
    out = tmp_path / "study"
    first = study(dataset, out, trials=2)
    assert first.n_complete + first.n_pruned == 2
    with pytest.raises(UserError, match="resume"):
        study(dataset, out, trials=3)
    with pytest.raises(UserError, match="differs.*seed"):
        study(dataset, out, trials=3, resume=True, seed=1)
    again = study(dataset, out, trials=3, resume=True)
    assert len(states(out)) == 3
    assert again.n_complete + again.n_pruned + again.n_failed == 3
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "2"]
    assert len(rows(out)) == 3
    # the resumed session's sampler does not draw the first session's start-up trials again
    assert len({tuple(sorted(t.params.items())) for t in trials_of(out)}) == 3
    # already reached: nothing more to run
    study(dataset, out, trials=2, resume=True)
    assert len(states(out)) == 3


def test_an_interrupted_trial_continues_from_its_checkpoint(tmp_path, dataset, monkeypatch):
    real = loop.retrain
    calls = []

    def interrupted_once(genotype, data, *, out_dir, on_epoch, **kwargs):
        calls.append(Path(out_dir).parent.name)

        def hook(record):
            on_epoch(record)
            if len(calls) == 2 and record["epoch"] == 1:  # Ctrl-C in trial 1's first epoch
                raise KeyboardInterrupt

        return real(genotype, data, out_dir=out_dir, on_epoch=hook, **kwargs)

    monkeypatch.setattr(loop, "retrain", interrupted_once)
    out = tmp_path / "study"
    first = study(dataset, out, trials=3, early_stopping="none")
    assert first.interrupted and states(out) == ["COMPLETE", "FAIL"]
    assert rows(out)[1]["error"] == "interrupted"
    again = study(dataset, out, trials=3, early_stopping="none", resume=True)
    assert not again.interrupted
    trials = trials_of(out)
    # trial 2 continues trial 1 in its folder; trial 3 is new; the interrupted one does not count
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].user_attrs["continues"] == 1 and trials[2].params == trials[1].params
    assert calls == ["0", "1", "1", "3"]
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0", "1", "3"]
    assert epochs_logged(out / "trials" / "1" / "retrain") == [1, 2]  # resumed, not restarted
    assert trials[2].intermediate_values.keys() == {1, 2}


def test_target_search_searches_then_retrains(tmp_path, dataset):
    space = {"name": "tiny_search", "target": "search", "metric": {"name": "mAP"},
             "params": {"weights.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True},
                        "sampling.tau.start": {"type": "float", "low": 2.0, "high": 5.0}},
             "fixed": {"epochs": 2, "warmup_epochs": 1},
             "retrain": {"epochs": 2, "batch": {"p": 2, "k": 4},
                         "lr_schedule": {"warmup_epochs": 1, "milestones": []}}}
    out = tmp_path / "study"
    result = run_study(space, data=dataset, search_space=tiny_space(), recipe="bot", out_dir=out,
                       trials=1)
    assert result.n_complete == 1 and 0 <= result.best_value <= 1
    trial = out / "trials" / "0"
    found = json.loads((trial / "search" / "genotype.json").read_text())
    assert json.loads((trial / "retrain" / "genotype.json").read_text())["cells"] == found["cells"]
    assert not (trial / "search" / "checkpoints").exists()
    assert epochs_logged(trial / "retrain") == [1, 2]
    searched = yaml.safe_load((trial / "search" / "config.yaml").read_text())["space"]
    assert searched["schedule"]["weights"]["lr"] == pytest.approx(result.best_params["weights.lr"])
    assert searched["sampling"]["tau"]["start"] == pytest.approx(result.best_params["sampling.tau.start"])
    best = load_space(out / "best.yaml")  # a whole search space, ready for --space
    assert best.name == "tiny_search-best" and best.schedule.epochs == 2
    assert best.sampling.tau.start == pytest.approx(result.best_params["sampling.tau.start"])
    assert "nas-reid search --space best.yaml" in (out / "best.yaml").read_text()
    assert yaml.safe_load((out / "best_trial.yaml").read_text())["overrides"]["sampling"]["tau"]
    assert result.skipped == {"param_importances": "1 complete trial(s); importances need at least 2"}
    assert (out / "optimization_history.png").is_file() and not (out / "param_importances.png").exists()


# ------------------------------------------------------------------------------ fakes (fast)


def fake_retrain(values: dict[int, float], epochs: int = 3):
    def fake(genotype, data, *, out_dir, on_epoch, **kwargs):
        v = values[int(Path(out_dir).parent.name)]
        for epoch in range(1, epochs + 1):
            on_epoch({"kind": "epoch", "epoch": epoch, "epochs": epochs,
                      "eval": {k: v for k in METRIC_KEYS}, "loss": {"total": 1.0}})
        return SimpleNamespace(finished=True, results={"plain": {"mAP": v}})

    return fake


def test_the_median_pruner_prunes_a_poor_trial(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(loop, "retrain", fake_retrain({0: 0.9, 1: 0.8, 2: 0.1}))
    out = tmp_path / "study"
    result = study(dataset, out, EARLY, trials=3, early_stopping="median")
    assert (result.n_complete, result.n_pruned, result.n_failed) == (2, 1, 0)
    assert states(out) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert result.best_value == pytest.approx(0.9)
    table = rows(out)
    assert (table[2]["value"], table[2]["epochs"], table[2]["last_value"]) == ("", "1", "0.1")
    none = study(dataset, tmp_path / "nopruning", trials=3, early_stopping="none")
    assert none.n_complete == 3



def test_a_trial_loads_images_with_the_workers_asked_for(tmp_path, dataset, monkeypatch):
    seen = []
    fake = fake_retrain({0: 0.5})

    def recording(genotype, data, **kwargs):
        seen.append(kwargs["num_workers"])
        return fake(genotype, data, **kwargs)

    monkeypatch.setattr(loop, "retrain", recording)
    study(dataset, tmp_path / "study", EARLY, trials=1, num_workers=3)
    assert seen == [3]
    with pytest.raises(UserError, match="workers"):
        study(dataset, tmp_path / "bad", EARLY, trials=1, num_workers=-1)
    assert not (tmp_path / "bad").exists()

def test_echo_says_each_trial_and_epoch_as_it_goes(tmp_path, dataset, monkeypatch, capsys):
    monkeypatch.setattr(loop, "retrain", fake_retrain({0: 0.9, 1: 0.8}))
    out = tmp_path / "study"
    study(dataset, out, EARLY, trials=2, early_stopping="asha", echo=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("trial 0: optimizer.lr=") and lines[0].endswith(
        f"; in {out / 'trials' / '0'}")
    assert lines[1:5] == ["trial 0 epoch 1/3: validation mAP 90.0 %, loss 1.000",
                          "trial 0 epoch 2/3: validation mAP 90.0 %, loss 1.000",
                          "trial 0 epoch 3/3: validation mAP 90.0 %, loss 1.000",
                          "trial 0 complete: validation mAP 90.0 %"]
    assert lines[5].startswith("trial 1: ")
    assert lines[6:8] == ["trial 1 epoch 1/3: validation mAP 80.0 %, loss 1.000",
                          "trial 1 pruned at epoch 1 (mAP 80.0 %)"]
    study(dataset, tmp_path / "quiet", EARLY, trials=1)
    assert "trial 0" not in capsys.readouterr().err  # the library is quiet unless asked


def test_asha_prunes_early_but_never_at_the_last_epoch(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(loop, "retrain", fake_retrain({0: 0.9, 1: 0.8, 2: 0.1}))
    out = tmp_path / "asha"
    study(dataset, out, EARLY, trials=3, early_stopping="asha")
    assert states(out) == ["COMPLETE", "PRUNED", "PRUNED"]  # top 1/2 of each rung goes on
    assert [r["epochs"] for r in rows(out)] == ["3", "1", "1"]
    monkeypatch.setattr(loop, "retrain", fake_retrain({0: 0.9, 1: 0.8, 2: 0.1}, epochs=1))
    out = tmp_path / "one_epoch"
    study(dataset, out, EARLY, trials=3, early_stopping="asha")
    assert states(out) == ["COMPLETE"] * 3


def test_pruned_trials_lose_their_checkpoints_and_finished_ones_keep_them(tmp_path, dataset,
                                                                         monkeypatch):
    fake = fake_retrain({0: 0.9, 1: 0.8, 2: 0.1})

    def with_checkpoints(genotype, data, *, out_dir, on_epoch, **kwargs):
        def hook(record):  # as the real retrain: the epoch's checkpoint first, then the report
            (Path(out_dir) / "checkpoints").mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "checkpoints" / "last.pt").write_bytes(b"a retrain state")
            on_epoch(record)

        return fake(genotype, data, out_dir=out_dir, on_epoch=hook, **kwargs)

    monkeypatch.setattr(loop, "retrain", with_checkpoints)
    out = tmp_path / "study"
    study(dataset, out, EARLY, trials=3, early_stopping="asha")
    assert states(out) == ["COMPLETE", "PRUNED", "PRUNED"]
    left = sorted(str(p.relative_to(out)) for p in (out / "trials").rglob("*.pt"))
    assert left == ["trials/0/retrain/checkpoints/last.pt"]
    assert (out / "trials" / "1" / "retrain").is_dir()  # the run folder itself stays


def test_bad_inputs_are_user_errors_and_leave_nothing(tmp_path, dataset):
    def fails(match, space=SPACE, genotype="default", **kwargs):
        kwargs.setdefault("out_dir", tmp_path / "out")
        kwargs.setdefault("trials", 1)
        with pytest.raises(UserError, match=match):
            run_study(space, tiny_genotype() if genotype == "default" else genotype, dataset, **kwargs)
        assert not (tmp_path / "out").exists()

    fails("early stopping", early_stopping="hyperband")
    fails("trials", trials=0)
    fails("metric.name", space={**SPACE, "metric": {"name": "rank1"}})
    fails("eval.every: is set by the tuner", space={**SPACE, "fixed": {"eval.every": 0}})
    fails("give the genotype", genotype=None)
    fails("only for target: search", search_space="cpu_small")
    fails("leave out the genotype", space={**SPACE, "target": "search", "params": {
        "weights.lr": SPACE["params"]["optimizer.lr"]}, "fixed": {}})
    fails("batch.p=16 needs more identities", space={**SPACE, "fixed": {"epochs": 12}})
    fails("fixed fields do not fit the recipe 'synthetic': recipe 'synthetic' .*warmup_epochs: 2 must",
          space={**SPACE, "fixed": {"epochs": 2}})
    fails("grace_period=3 is more than the 2 epochs",
          space={**SPACE, "early_stopping": {"grace_period": 3}})
    fails("no such file, and not a shipped search space", genotype=None,
          space={**SPACE, "target": "search", "params": {"weights.lr": SPACE["params"]["optimizer.lr"]},
                 "fixed": {}}, search_space="no_such_space")
    # storages that do not open: nothing is left behind, not even an empty folder
    for url, match in (("not a url", "does not open"),
                       (f"sqlite:///{tmp_path}/missing/dir/x.db", "does not open"),
                       ("mysql://user@localhost/db", "does not open")):
        fails(match, storage=url)
    # an existing study in a shared storage: nothing of this run is left there either
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="tiny_tune", storage=shared, direction="maximize")
    fails("already exists", storage=shared)
    assert optuna.get_all_study_names(shared) == ["tiny_tune"]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        study(dataset, tmp_path / "taken", trials=1)


def test_a_failure_after_the_study_is_created_removes_it(tmp_path, dataset, monkeypatch):
    from nas_reid.hpo import optuna_backend

    def broken(*args, **kwargs):
        raise UserError("cannot write")

    monkeypatch.setattr(optuna_backend, "write_settings", broken)
    db = tmp_path / "shared.db"
    optuna.create_study(study_name="other", storage=f"sqlite:///{db}")
    with pytest.raises(UserError, match="cannot write"):
        study(dataset, tmp_path / "out", trials=1, storage=f"sqlite:///{db}")
    assert not (tmp_path / "out").exists()
    assert optuna.get_all_study_names(f"sqlite:///{db}") == ["other"]


def test_tune_plots_say_why_a_picture_is_missing(tmp_path):
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    s = optuna.create_study(study_name="p", direction="maximize")
    written, skipped = write_tune_plots(s, tmp_path, metric="mAP")
    assert written == [] and set(skipped) == {"optimization_history", "param_importances"}
    for x in (0.1, 0.5, 0.9):
        s.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=dist, value=0.5))
    written, skipped = write_tune_plots(s, tmp_path, metric="mAP")
    assert [p.name for p in written] == ["optimization_history.png"]
    assert "same value" in skipped["param_importances"]
    s.add_trial(optuna.trial.create_trial(params={"x": 0.3}, distributions=dist, value=0.7))
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params={"x": 0.2},
                                          distributions=dist))
    written, skipped = write_tune_plots(s, tmp_path, metric="mAP")
    assert sorted(p.name for p in written) == ["optimization_history.png", "param_importances.png"]
    assert skipped == {} and all(p.read_bytes().startswith(PNG) for p in written)


# ------------------------------------------------------------------------------ the CLI


def test_cli_tune_runs_resumes_and_fails_cleanly(tmp_path, data_root, monkeypatch, run):
    monkeypatch.chdir(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    genotype = tmp_path / "g.json"
    tiny_genotype().save(genotype)
    args = ["tune", space, "--backend", "optuna", "--genotype", genotype, "--data", "synthreid",
            "--root", data_root, "--recipe", "bot", "--trials", "1", "--early-stopping", "none",
            "--out", "study", "--threads", "1"]
    done = run(*args)
    assert done.exit_code == 0, done.output
    assert "1 complete" in done.output
    best = yaml.safe_load((tmp_path / "study" / "best_trial.yaml").read_text())["value"]
    assert f"best validation mAP {100 * best:.1f} %: " in done.output  # a percentage, as search
    assert f"wrote {Path('study') / 'best.yaml'}" in done.output
    assert "optuna-dashboard sqlite:///" in done.output
    load_recipe(tmp_path / "study" / "best.yaml")
    again = run(*args)  # the study exists: --resume or another --out
    assert again.exit_code == 2 and "--resume" in again.output and "Traceback" not in again.output
    # --resume takes what it is not told from tune.yaml (space, genotype, data, recipe, backend)
    more = run("tune", "--resume", "--out", "study", "--trials", "2", "--threads", "1")
    assert more.exit_code == 0, more.output
    assert "2 complete" in more.output and len(rows(tmp_path / "study")) == 2
    differs = run("tune", "--resume", "--out", "study", "--seed", "5")
    assert differs.exit_code == 2 and "seed (0 -> 5)" in differs.output
    for bad, expected in (
            (["tune", tmp_path / "nope.yaml", "--genotype", genotype, "--out", "s2"], "nope.yaml"),
            (["tune", space, "--genotype", "no_such_model", "--out", "s2"], "no_such_model"),
            (["tune", "no_such_space", "--genotype", genotype, "--out", "s2"], "not a shipped tune space"),
            (["tune", space, "--out", "s2"], "give --genotype"),
            (["tune", space, "--genotype", genotype, "--out", "s2", "--backend", "optuna",
              "--address", "auto"], "--address is for --backend ray"),
            (["tune", space, "--genotype", genotype, "--out", "s2", "--backend", "optuna",
              "--storage", "nonsense://"], "does not open"),
            (["tune", "--resume", "--out", "s2"], "holds no tuning run")):
        result = run(*bad)
        assert result.exit_code == 2, (bad, result.output)
        assert expected in result.output and "Traceback" not in result.output
        assert not (tmp_path / "s2").exists()
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("name: x\nparams: {a: [1, 2\n")
    result = run("tune", malformed, "--genotype", genotype, "--out", "s2")
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not (tmp_path / "s2").exists()


def test_bad_trial_values_fail_the_trial_not_the_study(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(loop, "retrain", fake_retrain({0: 0.5, 1: 0.5, 2: 0.5, 3: 0.5}))
    space = {**SPACE, "params": {"lr_schedule.warmup_epochs": {"type": "categorical", "choices": [1, 5]}},
             "fixed": {"epochs": 2, "batch": {"p": 2, "k": 4}, "lr_schedule": {"milestones": []}}}
    out = tmp_path / "study"
    run_study(space, tiny_genotype(), dataset, out_dir=out, trials=4, recipe="bot", seed=0,
              early_stopping="none")
    for row in rows(out):
        bad = row["params_lr_schedule.warmup_epochs"] == "5"
        assert row["state"] == ("FAIL" if bad else "COMPLETE")
        assert ("lr_schedule.warmup_epochs=5" in row["error"]) == bad
    assert {r["params_lr_schedule.warmup_epochs"] for r in rows(out)} == {"1", "5"}
    with pytest.raises(TuneSpaceError):
        from nas_reid.hpo import Objective

        Objective.build(space, dataset, genotype=tiny_genotype(), recipe="bot").recipe_overrides(
            {"lr_schedule.warmup_epochs": 5})


def _record_run_dir(out: Path, number: int, run_dir: Path, name: str = "tiny_tune") -> None:
    """Point trial ``number``'s recorded ``run_dir`` elsewhere (an edited study, another
    machine's path): Optuna does not update a finished trial, so the database is edited."""
    import sqlite3

    trial_id = trials_of(out, name)[number]._trial_id
    with sqlite3.connect(out / "study.db") as db:
        changed = db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? "
                             "AND key = 'run_dir'", (json.dumps(str(run_dir)), trial_id)).rowcount
    assert changed == 1


@pytest.mark.parametrize("where", ["outside", "symlink"])
def test_resume_never_touches_a_recorded_folder_outside_out(tmp_path, dataset, monkeypatch, where):
    real = fake_retrain({0: 0.5, 1: 0.4, 2: 0.3, 3: 0.2})
    calls = []

    def interrupted_once(genotype, data, *, out_dir, on_epoch, **kwargs):
        calls.append(Path(out_dir))
        if len(calls) == 2:  # Ctrl-C in trial 1
            raise KeyboardInterrupt
        return real(genotype, data, out_dir=out_dir, on_epoch=on_epoch, **kwargs)

    monkeypatch.setattr(loop, "retrain", interrupted_once)
    out = tmp_path / "study"
    assert study(dataset, out, trials=2, early_stopping="none").interrupted
    victim = tmp_path / "victim"
    (victim / "retrain").mkdir(parents=True)
    (victim / "keep.txt").write_text("mine")
    (victim / "retrain" / "keep.txt").write_text("mine")
    if where == "outside":
        _record_run_dir(out, 1, victim / "retrain")
    else:  # the trial's own folder replaced by a link to another one
        import shutil

        shutil.rmtree(out / "trials" / "1")
        (out / "trials" / "1").symlink_to(victim, target_is_directory=True)
    with pytest.warns(UserWarning, match="outside"):
        again = study(dataset, out, trials=2, early_stopping="none", resume=True)
    assert sorted(p.name for p in victim.rglob("*")) == ["keep.txt", "keep.txt", "retrain"]
    assert not any(victim in p.parents or p == victim for p in calls[2:])
    if where == "outside":
        assert again.n_complete == 2 and calls[2].is_relative_to(out / "trials")
    else:  # nowhere inside --out is left for it: the continuation fails, the folder is kept
        assert states(out) == ["COMPLETE", "FAIL", "FAIL"] and "outside" in rows(out)[2]["error"]
        assert again.n_failed == 2  # the interrupted trial 1 and its continuation
