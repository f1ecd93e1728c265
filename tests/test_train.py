"""Retraining a genotype: the recipe, the run folder, resume, determinism, DDP, failures, the CLI.

Every run here trains ResNet-18 at 64x32 with one or two one-node cells on a tiny synthreid
benchmark (16 identities, 8 train / 8 test), PK 2x4: two to four steps per epoch, a few seconds
per run on one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from nas_reid.cli import main
from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype
from nas_reid.train.checkpoint import load_model, read_checkpoint
from nas_reid.train.loop import retrain
from nas_reid.train.recipe import RecipeError, default_recipe, load_recipe, parse_overrides
from tests.tiny import tiny_genotype

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RUN_FILES = ["config.yaml", "genotype.json", "metrics.jsonl", "results.json",
             "checkpoints/last.pt", "checkpoints/best.pt"]
EPOCH_KEYS = {"kind", "epoch", "epochs", "step", "time", "lr", "loss", "rib", "eval", "best",
              "images_per_second", "peak_memory_mib"}


def tiny_recipe(**changes) -> dict:
    recipe = {"name": "tiny", "epochs": 2, "batch": {"p": 2, "k": 4},
              "optimizer": {"name": "adam", "lr": 1e-3},
              "lr_schedule": {"warmup_epochs": 1, "milestones": []},
              "eval": {"every": 1}}
    recipe.update(changes)
    return recipe


def run(genotype, dataset, out, **kwargs):
    kwargs.setdefault("recipe", tiny_recipe())
    return retrain(genotype, dataset, out_dir=out, progress=False, **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("runs") / "reference"
    return run(tiny_genotype(), dataset, out, log_every=3)


def weights_of(out: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(out / "checkpoints" / "last.pt")["model"]


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ the recipe


def test_shipped_recipes_load_and_the_bot_schedule_is_the_papers():
    bot = load_recipe("bot")
    assert (bot.epochs, bot.batch.p, bot.batch.k, bot.optimizer.lr) == (120, 16, 4, 3.5e-4)
    s = bot.lr_schedule
    assert s.factor(0, 120) == pytest.approx(0.01)
    assert s.factor(5, 120) == pytest.approx(0.01 * 0.5 + 0.5)
    assert [s.factor(e, 120) for e in (10, 39, 40, 69, 70, 119)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    synthetic = load_recipe("synthetic")
    assert synthetic.epochs == 20 and synthetic.loss.rib == 0


def test_mobile_recipes_are_the_dcs_repos_sgd_and_the_defaults_of_a_mobile_backbone():
    # Statistical-Deep-Learning/DCS-Attention, configs/reid_DAS_config.yml
    mobile = load_recipe("mobile")
    o, s, loss = mobile.optimizer, mobile.lr_schedule, mobile.loss
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.035, 0.9, 5e-4)
    assert (mobile.epochs, s.warmup_epochs, s.milestones) == (1400, 10, [801, 1001, 1201, 1301])
    assert (loss.center, loss.center_lr, loss.triplet_margin) == (5e-4, 0.5, 0.3)
    short = load_recipe("mobile_synthetic")
    synthetic = load_recipe("synthetic").resolved()
    differs = {k for k in synthetic if short.resolved()[k] != synthetic[k]}
    # synthetic with the mobile recipe's SGD, from scratch (a searched mobile backbone has no
    # pretrained weights)
    assert differs == {"name", "optimizer", "backbone"}
    assert short.backbone.weights is None and load_recipe("synthetic").backbone.weights == "synthetic"
    assert (short.optimizer.name, short.optimizer.lr) == ("sgd", 0.035)
    assert [default_recipe(d, b) for d in ("synthreid", "market1501")
            for b in ("resnet18", "mobilenetv2", None)] == [
        "synthetic", "mobile_synthetic", "synthetic", "bot", "mobile", "bot"]


def test_cosine_schedule_and_overrides():
    r = load_recipe("bot", ["lr_schedule.decay=cosine", "epochs=30", "lr_schedule.warmup_epochs=0",
                            "lr_schedule.milestones=[]"])
    s = r.lr_schedule
    assert s.factor(0, 30) == pytest.approx(1.0) and s.factor(15, 30) == pytest.approx(0.5)
    assert s.factor(29, 30) < 0.01
    assert parse_overrides(["loss.rib=0.1", "batch.p=8"]) == {"loss": {"rib": 0.1}, "batch": {"p": 8}}


@pytest.mark.parametrize("overrides, match", [
    (["loss.ribb=1"], r"loss\.ribb"),
    (["lr_schedule.milestones=[70, 40]"], r"milestones"),
    (["epochs=10"], r"warmup_epochs"),
    (["optimizer.name=rmsprop"], r"optimizer\.name"),
    (["batch.p=1"], r"batch\.p"),
    (["loss.id=0", "loss.triplet=0"], r"at least one"),
    (["epochs"], r"KEY=VALUE"),
])
def test_bad_recipes_name_the_field(overrides, match):
    with pytest.raises(RecipeError, match=match):
        load_recipe("bot", overrides)


@pytest.mark.parametrize("name, epochs, warmup, milestones", [
    ("synthetic", 3, 0, [2]),        # 20 epochs, warm-up 2, milestones 12, 17
    ("synthetic", 40, 4, [24, 34]),
    ("bot", 40, 3, [13, 23]),        # 120 epochs, warm-up 10, milestones 40, 70
    ("bot", 1, 0, []),
    ("synthetic", 20, 2, [12, 17]),  # its own epochs: nothing changes, nothing said
])
def test_epochs_scale_the_warmup_and_the_milestones(name, epochs, warmup, milestones):
    from nas_reid.train.recipe import scaled_to

    recipe = load_recipe(name)
    overrides, note = scaled_to(recipe, epochs)
    scaled = load_recipe(name, overrides)
    assert scaled.epochs == epochs and scaled.lr_schedule.warmup_epochs == warmup
    assert scaled.lr_schedule.milestones == milestones
    if epochs == recipe.epochs:
        assert note is None
    else:
        assert note.startswith(f"--epochs {epochs}: recipe {name!r} is written for "
                               f"{recipe.epochs} epochs") and f"-> {warmup} epoch(s)" in note


def test_epochs_keep_a_schedule_the_user_sets_and_say_what_they_change(tmp_path, dataset, capsys):
    from nas_reid.train.recipe import scaled_to

    kept, note = scaled_to(load_recipe("synthetic"), 3, keep={"lr_schedule": {"warmup_epochs": 1}})
    assert kept == {"epochs": 3, "lr_schedule": {"milestones": [2]}} and "warm-up" not in note
    cosine = load_recipe("bot", ["lr_schedule.decay=cosine"])
    assert scaled_to(cosine, 60)[0] == {"epochs": 60, "lr_schedule": {"warmup_epochs": 5}}
    # a retrain told --epochs 3 of the synthetic recipe runs the scaled schedule and says so
    out = tmp_path / "run"
    retrain(tiny_genotype(), dataset, recipe="synthetic", overrides=["batch.p=2"], epochs=3,
            out_dir=out, progress=True, max_steps=0)
    saved = yaml.safe_load((out / "config.yaml").read_text())["recipe"]
    assert (saved["epochs"], saved["lr_schedule"]["warmup_epochs"],
            saved["lr_schedule"]["milestones"]) == (3, 0, [2])
    err = capsys.readouterr().err
    assert ("--epochs 3: recipe 'synthetic' is written for 20 epochs; its learning-rate schedule "
            "is scaled to 3: warm-up 2 -> 0 epoch(s), milestones [12, 17] -> [2]" in err)
    assert f"retrain run folder: {out} (new, 3 epochs)" in err  # said before the first epoch
    assert f"  curves: tensorboard --logdir {out / 'tensorboard'}" in err


def test_recipe_files_are_read_safely(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_recipe(bad)
    code = tmp_path / "code.yaml"
    code.write_text("epochs: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecipeError):
        load_recipe(code)
    with pytest.raises(RecipeError, match="no such file"):
        load_recipe(tmp_path / "missing.yaml")


# ------------------------------------------------------------------------------ the run folder


def test_a_retrain_writes_every_file_of_the_run_folder(finished, dataset):
    out = finished.out_dir
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert finished.finished and finished.epochs_done == 2
    steps_per_epoch = finished.steps // 2
    assert steps_per_epoch >= 2

    assert Genotype.from_json(out / "genotype.json") == tiny_genotype()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["recipe"] == load_recipe(tiny_recipe()).resolved()
    assert config["data"]["name"] == "synthreid"
    assert config["train"]["parameters"] == finished.num_parameters
    assert config["train"]["num_classes"] == dataset.num_train_pids == 8

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    steps = [r for r in lines if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert all(set(r) == EPOCH_KEYS for r in epochs)
    assert len(steps) == finished.steps // 3
    first, last = epochs
    assert first["lr"] == pytest.approx(1e-5) and last["lr"] == pytest.approx(1e-3)  # warm-up
    assert first["loss"]["id"] > 0 and first["loss"]["triplet"] >= 0
    assert first["loss"]["center"] == 0 and first["rib"] is None
    for r in epochs:
        assert set(r["eval"]) >= {"mAP", "R1", "R5", "R10", "mINP"}
        assert 0 <= r["eval"]["mAP"] <= 1
        assert r["images_per_second"] > 0 and r["peak_memory_mib"] is None

    results = json.loads((out / "results.json").read_text())
    assert results["plain"] == pytest.approx(last["eval"])  # the last model's evaluation
    assert results["rerank"] is None
    assert results["dataset"]["queries"] == len(dataset.query)
    assert finished.results["plain"] == pytest.approx(results["plain"])
    best = finished.best
    assert best["mAP"] == max(r["eval"]["mAP"] for r in epochs)


def test_checkpoints_rebuild_the_model_from_the_genotype(finished, dataset):
    loaded = load_model(finished.out_dir / "checkpoints" / "best.pt")
    assert loaded.genotype == tiny_genotype() and loaded.num_classes == 8
    assert not loaded.model.training
    best_epoch = finished.best["epoch"]
    assert loaded.state["epoch"] == best_epoch
    assert loaded.state["metrics"]["mAP"] == pytest.approx(finished.best["mAP"])
    last = load_model(finished.out_dir / "checkpoints" / "last.pt")
    assert same_weights(last.model.state_dict(), weights_of(finished.out_dir))
    out = last.model(torch.randn(2, 3, 64, 32))
    assert out["feat_bn"].shape == (2, 128)  # resnet_tiny's layer4 channels


def test_resuming_a_finished_run_returns_it(finished, dataset):
    again = run(None, dataset, finished.out_dir, recipe=None, resume=True)
    assert again.finished and again.steps == finished.steps
    assert again.results["plain"] == pytest.approx(finished.results["plain"])


# ------------------------------------------------------------------------------ resume, determinism


def test_an_interrupted_run_resumed_ends_with_the_same_weights(tmp_path, dataset):
    """Center loss and RIB on, so their optimizer and buffers are part of the state too."""
    recipe = tiny_recipe(epochs=3, loss={"center": 5e-4, "rib": 0.1, "rib_warmup": 0.3},
                         eval={"every": 0})
    genotype = tiny_genotype((("layer3", "eca", {}), ("layer4", "rga_c", {"c_ratio": 8, "s_ratio": 2, "d_ratio": 2})))
    whole = run(genotype, dataset, tmp_path / "whole", recipe=recipe)
    steps = whole.steps
    assert steps >= 6
    part = run(genotype, dataset, tmp_path / "part", recipe=recipe, max_steps=steps // 3 + 1)
    assert not part.finished and part.steps == steps // 3 + 1
    assert not (tmp_path / "part" / "results.json").exists()
    part = run(None, dataset, tmp_path / "part", recipe=None, resume=True, max_steps=2 * steps // 3)
    assert not part.finished
    done = run(None, dataset, tmp_path / "part", recipe=None, resume=True)
    assert done.finished and done.steps == steps
    assert same_weights(weights_of(tmp_path / "whole"), weights_of(tmp_path / "part"))
    for a, b in zip(whole.metrics, done.metrics, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert whole.metrics[-1]["rib"]["weight"] == pytest.approx(0.1)
    assert whole.metrics[-1]["loss"]["center"] > 0 and whole.metrics[-1]["loss"]["rib"] != 0
    assert done.results["plain"] == pytest.approx(whole.results["plain"])


def test_bf16_and_channels_last_paths_run_on_cpu(tmp_path, dataset):
    recipe = tiny_recipe(epochs=2, precision={"bf16": True, "channels_last": True},
                         eval={"every": 0})
    result = run(tiny_genotype(), dataset, tmp_path / "bf16", recipe=recipe)
    config = yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())
    assert config["train"]["bf16"] and config["train"]["channels_last"]
    assert result.finished and all(torch.isfinite(torch.tensor(r["loss"]["total"]))
                                   for r in result.metrics)
    assert 0 <= result.results["plain"]["mAP"] <= 1


# ------------------------------------------------------------------------------ failures


def test_bad_inputs_fail_before_anything_is_written(tmp_path, dataset, finished):
    out = tmp_path / "never"
    with pytest.raises(UserError, match="reference"):
        run("no_such_model", dataset, out)
    with pytest.raises(UserError, match="milestones"):
        run(tiny_genotype(), dataset, out, recipe=tiny_recipe(lr_schedule={"warmup_epochs": 1, "milestones": [0]}))
    with pytest.raises(UserError, match="needs P=16"):
        run(tiny_genotype(), dataset, out, recipe="bot")
    with pytest.raises(UserError, match="nothing to resume"):
        run(None, dataset, out, recipe=None, resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            run(tiny_genotype(), dataset, out, device="cuda")
    assert not out.exists()
    with pytest.raises(UserError, match="already holds a finished retrain"):
        run(tiny_genotype(), dataset, finished.out_dir)
    with pytest.raises(UserError, match="leave out --recipe"):
        run(None, dataset, finished.out_dir, resume=True, seed=5)
    with pytest.raises(UserError, match="already ran 2 epochs"):  # --epochs: a new total
        run(None, dataset, finished.out_dir, recipe=None, resume=True, epochs=1)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no retrain run"):
        run(tiny_genotype(), dataset, foreign)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_failure_after_the_start_leaves_no_half_run(tmp_path, dataset, monkeypatch):
    import nas_reid.train.loop as loop

    def boom(self, session_start):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loop._Retrain, "_save", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run(tiny_genotype(), dataset, tmp_path / "half")
    assert not (tmp_path / "half").exists()


# ------------------------------------------------------------------------------ DDP

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from nas_reid.data import load_dataset
    from nas_reid.space.genotype import Genotype
    from nas_reid.train.loop import retrain
    from nas_reid.train.checkpoint import read_checkpoint
    genotype, recipe, data_root, out = (Genotype.from_json(sys.argv[1]), json.loads(sys.argv[2]),
                                        sys.argv[3], sys.argv[4])
    result = retrain(genotype, load_dataset("synthreid", data_root), recipe=recipe, out_dir=out,
                     progress=False)
    rank = os.environ["RANK"]
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"steps": result.steps, "finished": result.finished, "best": result.best,
                   "evals": [m["eval"] for m in result.metrics],
                   "plain": (result.results or {}).get("plain")}, f)
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_one_model(tmp_path, data_root):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    recipe = tiny_recipe(epochs=2, loss={"center": 5e-4}, eval={"every": 1})
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), tiny_genotype().to_json(), json.dumps(recipe), str(data_root), str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] >= 2
    assert ranks[0]["finished"] and ranks[1]["finished"]
    assert ranks[0]["plain"] is not None and ranks[1]["plain"] == ranks[0]["plain"]  # from results.json
    assert ranks[1]["best"] == ranks[0]["best"] and ranks[0]["best"]["epoch"] is not None
    assert ranks[1]["evals"] == ranks[0]["evals"] and all(e is not None for e in ranks[0]["evals"])
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["train"]["world_size"] == 2


# ------------------------------------------------------------------------------ CLI


def test_cli_retrain_prints_the_table_and_fails_cleanly(tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    genotype = tmp_path / "g.json"
    tiny_genotype().save(genotype)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(epochs=2, eval={"every": 0})))
    runner = CliRunner()
    done = runner.invoke(main, ["retrain", "--genotype", str(genotype), "--data", "synthreid",
                                "--root", str(data_root), "--recipe", str(recipe),
                                "--set", "seed=3", "--out", "r1", "--threads", "1"])
    assert done.exit_code == 0, done.output
    assert "mAP" in done.output and "run folder: r1" in done.output
    assert yaml.safe_load((tmp_path / "r1" / "config.yaml").read_text())["recipe"]["seed"] == 3

    root = ["--root", str(data_root)]
    for args, match in (
        (["--genotype", str(tmp_path / "missing.json"), *root], "missing.json"),
        (["--genotype", str(genotype), "--set", "loss.nope=1", "--recipe", str(recipe), *root],
         "loss.nope"),
        (["--genotype", str(genotype), "--data", "market1501"], "--root is required"),
    ):
        bad = runner.invoke(main, ["retrain", *args])
        assert bad.exit_code == 2, bad.output
        assert match in bad.output and "Traceback" not in bad.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json", "r.yaml", "r1"]


def test_cli_evaluate_writes_results_and_the_ranked_lists(finished, tmp_path):
    runner = CliRunner()
    out = tmp_path / "eval"
    done = runner.invoke(main, ["evaluate", "--checkpoint", str(finished.out_dir), "--rerank",
                                "--ranked", "3", "--out", str(out), "--threads", "1"])
    assert done.exit_code == 0, done.output
    results = json.loads((out / "results.json").read_text())
    assert results["plain"] == pytest.approx(finished.results["plain"])  # last.pt, same data
    assert results["rerank"] is not None and results["checkpoint"].endswith("last.pt")
    assert (out / "ranked_lists.png").stat().st_size > 1000
    assert "re-ranked" in done.output

    default = runner.invoke(main, ["evaluate", "--checkpoint",
                                   str(finished.out_dir / "checkpoints" / "best.pt"),
                                   "--ranked", "0", "--flip", "--threads", "1"])
    assert default.exit_code == 0, default.output
    assert (finished.out_dir / "evaluation" / "synthreid-best-flip" / "results.json").is_file()

    for args, match in ((["--checkpoint", str(tmp_path / "nope.pt")], "no checkpoint"),
                        (["--checkpoint", str(finished.out_dir / "config.yaml")], "cannot be read"),
                        (["--checkpoint", str(finished.out_dir), "--data", "market1501"],
                         "--root is required for --data market1501")):
        bad = runner.invoke(main, ["evaluate", *args])
        assert bad.exit_code == 2 and match in bad.output, bad.output
        assert "Traceback" not in bad.output


def test_the_throughput_benchmark_times_a_training_step():
    from bench.train_throughput import run_case

    r = run_case({"model": "rga_sc", "searched": None, "backbone": "resnet18", "size": [64, 32],
                  "device": "cpu", "precision": "fp32", "p": 2, "k": 2, "repeats": 1, "threads": 1})
    assert r["img_s"] > 0 and r["backbone"] == "resnet18" and r["size"] == [64, 32]
    assert "layer1: 0->1 rga_sc" in r["cells"]


def test_native_bf16_reads_the_x86_flags():
    from nas_reid.engine.precision import native_bf16

    assert native_bf16("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n") is True
    assert native_bf16("flags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n") is True
    assert native_bf16("flags\t\t: fpu sse2 avx2 fma\n") is False
    assert native_bf16("processor\t: 0\nFeatures\t: fp asimd bf16\n") is None  # not x86


@pytest.mark.parametrize("native, warns", [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bfloat16_instructions_warns(monkeypatch, native, warns):
    import warnings

    import nas_reid.engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    config = precision.PrecisionConfig(bf16=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = precision.Precision.resolve(config, torch.device("cpu"), where="recipe.precision")
    assert got.bf16  # still on: a warning, not a refusal
    slow = [w for w in caught if issubclass(w.category, precision.SlowPrecisionWarning)]
    assert bool(slow) == warns
    if warns:
        assert "recipe.precision.bf16=false" in str(slow[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precision.Precision.resolve(precision.PrecisionConfig(bf16=False), torch.device("cpu"))
    assert not caught
