"""The search loop, its run folder, resume, determinism, DDP, the collapse guard and the CLI.

Every search here runs a tiny space (ResNet-18 at 64x32, one or two one-node cells, three
candidates) on a tiny synthreid benchmark (16 identities, 8 train / 8 test; the 8 train ids split
4 / 4 between weights and architecture), two epochs of four PK 2x4 steps: a few seconds each on
one thread.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from nas_reid.cli import main
from nas_reid.space.genotype import Genotype, derive_genotype
from nas_reid.search import (
    CollapseWarning,
    check_collapse,
    collapse_report,
    load_checkpoint,
    query_gallery_split,
    search,
    split_identities,
)
from nas_reid.engine.runtime import rng_state, set_rng_state
from nas_reid.search.checkpoint import save_checkpoint
from nas_reid.space import Supernet, load_space
from tests.tiny import tiny_space

EPOCH_KEYS = {"kind", "epoch", "epochs", "step", "time", "lr", "tau", "arch_updates", "loss", "rib",
              "heldout", "arch_probs", "backbone_probs", "backbone", "cost", "genotype", "op_counts",
              "collapse", "decisions", "dcs_keep", "best", "ddp", "subnets"}
RUN_FILES = ["config.yaml", "metrics.jsonl", "genotype_history.jsonl", "genotype.json", "cells.png",
             "arch_probs.png", "checkpoints/last.pt"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_search(space, dataset, out, **kwargs):
    return search(space, dataset, out_dir=out, progress=False, **kwargs)


def comparable(genotype: Genotype) -> dict:
    """The genotype JSON without the run folder's name."""
    doc = json.loads(genotype.to_json())
    doc["provenance"].pop("search_run")
    return doc


def same_arch(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("runs") / "reference"
    return run_search(tiny_space(), dataset, out, log_every=2)


# ------------------------------------------------------------------------------ the run folder


def test_a_search_writes_every_file_of_the_run_folder(finished):
    out = finished.out_dir
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert finished.finished and finished.epochs_done == 2 and finished.steps == 8
    assert finished.genotype_path == out / "genotype.json"

    space = load_space(tiny_space())
    genotype = Genotype.from_json(out / "genotype.json", space=space)  # validates, same space hash
    assert genotype == finished.genotype
    assert genotype.provenance.seed == 0 and genotype.provenance.epoch == 2
    assert [c.position for c in genotype.cells] == ["layer3", "layer4"]

    config = yaml.safe_load((out / "config.yaml").read_text())
    assert load_space(config["space"]).canonical_hash() == space.canonical_hash()
    assert config["search"]["data"]["name"] == "synthreid" and config["search"]["epochs"] == 2

    history = (out / "genotype_history.jsonl").read_text().splitlines()
    assert len(history) == 2
    assert Genotype.from_dict(json.loads(history[-1])) == genotype

    for picture in ("cells.png", "arch_probs.png"):
        with Image.open(out / picture) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 100

    ckpt = load_checkpoint(out / "checkpoints" / "last.pt")  # weights_only=True inside
    assert ckpt["finished"] and ckpt["epoch"] == 2 and ckpt["step"] == 8
    assert torch.equal(ckpt["model"]["arch.layer4"], finished.arch_parameters["layer4"])


def test_metrics_jsonl_has_the_documented_keys(finished):
    lines = [json.loads(line) for line in
             (finished.out_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["kind"] == "epoch"]
    steps = [r for r in lines if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in steps] == [2, 4, 6, 8]  # log_every=2
    for r in epochs:
        assert set(r) == EPOCH_KEYS
        assert set(r["loss"]["weights"]) == {"total", "id", "triplet", "rib"}
        assert set(r["loss"]["arch"]) == {"triplet", "total"}
        assert r["loss"]["arch"]["total"] == r["loss"]["arch"]["triplet"]  # no cost term
        assert r["backbone_probs"] == {} and r["backbone"] == "resnet_tiny" and r["cost"] is None
        assert set(r["rib"]) == {"weight", "I_XF", "I_FY", "IB"}
        assert set(r["heldout"]) == {"mAP", "R1", "R5", "queries", "gallery"}
        assert 0.0 <= r["heldout"]["mAP"] <= 1.0
        probs = r["arch_probs"]
        assert set(probs) == {"layer3", "layer4"}
        assert all(abs(sum(row) - 1.0) < 1e-4 for rows in probs.values() for row in rows)
        assert sum(r["op_counts"].values()) == 2
        assert set(r["collapse"]) == {"identity_edges", "live_edges", "identity_fraction",
                                      "identity_cells", "warning"}
        assert r["ddp"] == {"world_size": 1, "genotypes_agree": True}
        # one op decision per cell; two architecture epochs cannot settle a choice (window 3)
        decisions = r["decisions"]
        assert (decisions["settled"], decisions["total"], decisions["window"]) == (0, 2, 3)
        assert decisions["arch_epochs"] == r["epoch"]  # no warm-up in the tiny space
        assert [d["key"] for d in decisions["decisions"]] == ["layer3 0->1", "layer4 0->1"]
    final = epochs[-1]["decisions"]["decisions"]
    assert [d["choice"] for d in final] == [c.edges[0].op for c in finished.genotype.cells]
    assert finished.decisions.as_dict() == epochs[-1]["decisions"]
    # tau runs from the space's start in the first architecture epoch to its end in the last
    # (until issue 20.7 it stopped at epoch / epochs: 2.75 here, never 0.5); the cosine lr
    # halves at epoch 2 of 2
    assert [r["tau"] for r in epochs] == pytest.approx([5.0, 0.5])
    assert [r["lr"]["weights"] for r in epochs] == pytest.approx([0.05, 0.025])
    assert epochs[-1]["genotype"] == finished.genotype.summary()


# ------------------------------------------------------------------------------ resume, determinism


@pytest.mark.parametrize("stop_after", [4, 3, 6], ids=["end-of-epoch-1", "mid-epoch-1", "mid-epoch-2"])
def test_resume_ends_with_the_same_genotype_and_arch_parameters(tmp_path, dataset, finished,
                                                                stop_after):
    out = tmp_path / "run"
    first = run_search(tiny_space(), dataset, out, max_steps=stop_after, log_every=2)
    assert not first.finished and first.steps == stop_after
    assert not (out / "genotype.json").exists()
    resumed = search(None, None, out_dir=out, resume=True, progress=False)  # all from the run
    assert resumed.finished and resumed.steps == 8
    assert same_arch(resumed.arch_parameters, finished.arch_parameters)
    assert comparable(resumed.genotype) == comparable(finished.genotype)
    # the files hold each epoch once, as an uninterrupted run's do
    history = (out / "genotype_history.jsonl").read_text().splitlines()
    assert len(history) == 2
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [1, 2]
    assert [r["heldout"] for r in epochs if r["kind"] == "epoch"] == \
        [r["heldout"] for r in finished.metrics]
    assert [r["decisions"] for r in epochs if r["kind"] == "epoch"] == \
        [r["decisions"] for r in finished.metrics]
    assert resumed.decisions == finished.decisions


def test_resuming_a_finished_run_returns_it(finished):
    again = search(None, None, out_dir=finished.out_dir, resume=True, progress=False)
    assert again.finished and comparable(again.genotype) == comparable(finished.genotype)
    assert same_arch(again.arch_parameters, finished.arch_parameters)


def test_the_same_seed_gives_the_same_genotype(tmp_path, dataset, finished):
    again = run_search(tiny_space(), dataset, tmp_path / "again")
    assert comparable(again.genotype) == comparable(finished.genotype)
    assert same_arch(again.arch_parameters, finished.arch_parameters)
    other = run_search(tiny_space(), dataset, tmp_path / "other", seed=1)
    assert not same_arch(other.arch_parameters, finished.arch_parameters)
    assert other.genotype.provenance.seed == 1


def test_a_resume_with_another_space_is_refused(tmp_path, dataset):
    out = tmp_path / "run"
    run_search(tiny_space(), dataset, out, max_steps=1)
    changed = tiny_space()
    changed["ops"] = ["identity", "eca"]
    with pytest.raises(Exception, match="differs from the run's"):
        search(changed, dataset, out_dir=out, resume=True, progress=False)
    with pytest.raises(Exception, match="differs from the run's"):
        search(None, None, out_dir=out, resume=True, seed=3, progress=False)


# ------------------------------------------------------------------------------ the collapse guard


def test_collapse_guard_on_hand_set_alphas():
    space = load_space({**tiny_space(skip_cap=0)})
    net = Supernet(space, 4)
    with torch.no_grad():
        net.arch["layer3"].copy_(torch.tensor([[5.0, 0.0, 1.0]]))  # identity dominates
        net.arch["layer4"].copy_(torch.tensor([[5.0, 0.0, 1.0]]))
    raw = derive_genotype(net, skip_cap=None)
    assert raw.op_counts() == {"identity": 2}
    report = collapse_report(raw)
    assert report.identity_edges == 2 and report.identity_cells == ["layer3", "layer4"]
    assert "collapse" in check_collapse(raw)
    capped = derive_genotype(net)  # the space's skip_cap=0 replaces identity by the next best
    assert capped.op_counts() == {"eca": 2} and check_collapse(capped) is None
    with torch.no_grad():
        net.arch["layer3"].copy_(torch.tensor([[0.0, 5.0, 1.0]]))
    assert check_collapse(derive_genotype(net, skip_cap=None)) is None  # 1 of 2: not more than half


def test_the_search_warns_when_identity_dominates(tmp_path, dataset):
    space = tiny_space(epochs=1)
    space["ops"] = ["identity", "zero"]  # nothing else to pick
    with pytest.warns(CollapseWarning, match="2 of 2 edges pick identity"):
        result = run_search(space, dataset, tmp_path / "collapse")
    assert result.metrics[-1]["collapse"]["warning"] is True
    assert result.genotype.op_counts() == {"identity": 2}


# ------------------------------------------------------------------------------ the data split


def test_identity_split_is_disjoint_relabelled_and_seeded(dataset):
    split = split_identities(dataset.train, 0.5, seed=0, min_ids=2)
    assert not set(split.weight_pids) & set(split.heldout_pids)
    assert sorted(split.weight_pids + split.heldout_pids) == sorted({p for _, p, _ in dataset.train})
    assert {p for _, p, _ in split.weight} == set(range(split.num_weight_ids))
    assert {p for _, p, _ in split.heldout} == set(range(split.num_heldout_ids))
    assert len(split.weight) + len(split.heldout) == len(dataset.train)
    assert split_identities(dataset.train, 0.5, seed=0, min_ids=2) == split
    others = {tuple(split_identities(dataset.train, 0.5, seed=s, min_ids=2).heldout_pids)
              for s in range(1, 6)}
    assert len(others) > 1
    with pytest.raises(Exception, match="at least 10"):
        split_identities(dataset.train, 0.5, seed=0, min_ids=5)


def test_held_out_query_gallery_split_by_camera():
    items = [(f"{pid}_{cam}_{i}", pid, cam) for pid, cams in
             [(0, [0, 0, 1, 1, 2]), (1, [0, 1]), (2, [0, 0, 0]), (3, [1, 2, 2])] for i, cam in enumerate(cams)]
    qg = query_gallery_split(items)
    query = {(p, c) for _, p, c in qg.query}
    assert query == {(0, 0), (0, 1), (0, 2), (1, 0), (3, 1)}  # (3, 2) would leave (3, 1) no match
    assert len(qg.query) + len(qg.gallery) == len(items)
    for _, pid, cam in qg.query:  # every query has a gallery match under another camera
        assert any(p == pid and c != cam for _, p, c in qg.gallery)


def test_bf16_and_channels_last_search_runs_and_resumes_on_cpu(tmp_path, dataset, finished):
    # the CUDA default (schedule.precision auto) forced on: the autocast / channels_last code
    # paths of both steps, the RIB extraction and the quick eval run without a GPU
    space = tiny_space(precision={"bf16": True, "channels_last": True})
    whole = run_search(space, dataset, tmp_path / "bf16")
    config = yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())
    assert config["search"]["bf16"] and config["search"]["channels_last"]
    assert config["space"]["schedule"]["precision"] == {"bf16": True, "channels_last": True}
    assert whole.finished and whole.genotype is not None
    for r in whole.metrics:
        assert all(math.isfinite(v) for v in r["loss"]["weights"].values())
        assert 0.0 <= r["heldout"]["mAP"] <= 1.0
    assert not same_arch(whole.arch_parameters, finished.arch_parameters)  # bf16 did run
    # the float32 default on a CPU
    default = yaml.safe_load((finished.out_dir / "config.yaml").read_text())["search"]
    assert default["bf16"] is False and default["channels_last"] is False
    # a bf16 search resumed mid-epoch ends where the uninterrupted one does
    out = tmp_path / "bf16-resumed"
    run_search(space, dataset, out, max_steps=3)
    resumed = search(None, None, out_dir=out, resume=True, progress=False)
    assert same_arch(resumed.arch_parameters, whole.arch_parameters)
    assert comparable(resumed.genotype) == comparable(whole.genotype)


def test_checkpoint_rng_states_survive_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    save_checkpoint(tmp_path / "c.pt", {"rng": [state]})
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_plots_of_a_multi_node_genotype(tmp_path):
    from nas_reid.viz.genotype_plots import plot_arch_probabilities, plot_cells

    space = load_space({**tiny_space(), "cells": {"positions": ["layer3", "layer4"], "nodes": 3,
                                                  "edges_per_node": 1}})
    torch.manual_seed(0)
    net = Supernet(space, 4)
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()
    genotype = derive_genotype(net, provenance={"epoch": 3})
    fig = plot_cells(genotype, tmp_path / "cells.png")
    assert fig.axes and (tmp_path / "cells.png").stat().st_size > 1000
    fig = plot_arch_probabilities(genotype, tmp_path / "probs.png")
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["identity", "se", "eca"]
    assert len(fig.axes[0].get_yticklabels()) == 12  # 6 edges per 3-node cell, two cells


# ------------------------------------------------------------------------------ DDP

DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from nas_reid.data import load_dataset
    from nas_reid.search import search
    space, data_root, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    result = search(space, load_dataset("synthreid", data_root), out_dir=out, progress=False)
    rank = os.environ["RANK"]
    with open(f"{out}.rank{rank}.json", "w") as f:
        json.dump({"genotype": result.genotype.to_json(), "steps": result.steps,
                   "arch": {k: v.tolist() for k, v in result.arch_parameters.items()},
                   "ddp": [m["ddp"] for m in result.metrics]}, f)
""")


@pytest.mark.slow
def test_ddp_two_cpu_processes_end_with_the_same_genotype(tmp_path, data_root):
    script = tmp_path / "ddp_search.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(tiny_space()), str(data_root), str(out)],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["genotype"] == ranks[1]["genotype"]
    assert ranks[0]["arch"] == ranks[1]["arch"]
    assert ranks[0]["steps"] == 4  # each rank takes every other batch: 2 steps per epoch
    assert all(d == {"world_size": 2, "genotypes_agree": True} for d in ranks[0]["ddp"])
    for name in RUN_FILES:  # rank 0 wrote the run folder
        assert (out / name).is_file(), name
    assert json.loads(ranks[0]["genotype"]) == json.loads((out / "genotype.json").read_text())


# ------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # a default runs/ folder would land here
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(main, ["search", *[str(a) for a in args]], catch_exceptions=False)

    return invoke


def write_space(tmp_path, space: dict) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def assert_fails_well(result, *words):
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


def test_search_help(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for option in ("--space", "--data", "--root", "--epochs", "--device", "--out", "--resume", "--seed"):
        assert option in result.output


def test_cli_tiny_search_prints_where_the_genotype_is(cli, tmp_path, data_root):
    space = write_space(tmp_path, tiny_space())
    result = cli("--space", space, "--data", "synthreid", "--root", data_root, "--epochs", "1",
                 "--out", tmp_path / "cli-run", "--threads", "1")
    assert result.exit_code == 0, result.output
    genotype = tmp_path / "cli-run" / "genotype.json"
    assert f"genotype: {genotype}" in result.output
    assert Genotype.from_json(genotype).provenance.epoch == 1
    assert "held-out mAP" in result.output
    assert "choices: 0 of 2 settled: the search updated the architecture in 1 epoch" in result.output
    assert result.output.count("not settled: layer") == 2 and "sampling.tau.end" in result.output


@pytest.mark.slow
def test_a_terminal_sees_the_set_up_phases_and_the_progress_bar(tmp_path, data_root):
    """``nas-reid search`` in its own process on a pseudo-terminal, as a user runs it: the run
    folder, the TensorBoard command and the cluster fit are said before epoch 1, and tqdm
    draws its bar (it draws none when stderr is not a terminal)."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios

    script = Path(sys.executable).with_name("nas-reid")
    if not script.is_file():
        pytest.skip("the nas-reid console script is not installed beside this Python")
    space = write_space(tmp_path, tiny_space())
    master, slave = pty.openpty()
    # a terminal's size, as a real one has (tqdm sizes its bar to it; 0 columns draw nothing)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    child = subprocess.Popen([str(script), "search", "--space", str(space), "--data", "synthreid",
                              "--root", str(data_root), "--out", "run", "--threads", "1"],
                             cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave,
                             env=dict(os.environ))
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 300)
            if not ready:
                pytest.fail("no output for 300 s: " + b"".join(chunks).decode(errors="replace"))
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        code = child.wait(timeout=60)
    text = b"".join(chunks).decode(errors="replace")
    assert code == 0, text
    lines = [part.strip() for line in text.splitlines() for part in line.split("\r")]
    folder = lines.index("search run folder: run (new, 2 epochs)")
    assert lines[folder + 1] == "curves: tensorboard --logdir run/tensorboard"
    cluster = next(i for i, line in enumerate(lines) if line.startswith(
        "set-up: fitting the RIB's input clusters on the "))
    first_epoch = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/2  loss"))
    assert folder < cluster < first_epoch  # the set-up is said before the first epoch ends
    assert re.search(r"epoch 1/2: +\d+%\|.*\| *\d+/\d+ .*step/s", text), text  # the bar
    assert "genotype: run/genotype.json" in text


def test_cli_set_overrides_fields_of_the_space(cli, tmp_path, data_root):
    space = write_space(tmp_path, tiny_space())
    out = tmp_path / "set-run"
    result = cli("--space", space, "--root", data_root, "--epochs", "2", "--out", out,
                 "--threads", "1", "--set", "schedule.arch.lr=0.01",
                 "--set", "schedule.cost={form: additive, target: 50000}")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["space"]["schedule"]["arch"]["lr"] == 0.01
    assert config["search"]["space_file"] == str(space)  # the file the overrides were applied to
    assert config["space"]["schedule"]["cost"]["form"] == "additive"
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["cost"]["form"] == "additive" and last["cost"]["target"] == 50000
    assert_fails_well(cli("--resume", "--out", out, "--set", "schedule.arch.lr=0.1"),
                      "leave out --set")


def test_cli_bad_set_or_space_name_fails_before_writing(cli, tmp_path, data_root):
    space = write_space(tmp_path, tiny_space())
    for args, words in [(("--set", "schedule.cost.form=additve"), ("schedule.cost.form", "additve")),
                        (("--set", "schedule.cost.form=additive"), ("target",)),
                        (("--set", "cells.nodez=2"), ("cells.nodez",)),
                        (("--set", "schedule"), ("KEY=VALUE",))]:
        result = cli("--space", space, "--root", data_root, "--out", tmp_path / "r", *args)
        assert_fails_well(result, *words)
        assert not (tmp_path / "r").exists()
    assert_fails_well(cli("--space", "mobile_cpux", "--out", tmp_path / "r"),
                      "not a shipped search space", "mobile_cpu")
    assert not (tmp_path / "r").exists()


def test_cli_missing_dataset_folder(cli, tmp_path):
    result = cli("--data", "market1501", "--root", tmp_path / "nowhere", "--out", tmp_path / "r")
    assert_fails_well(result, "nowhere")
    assert not (tmp_path / "r").exists()


def test_cli_root_required_for_a_real_dataset(cli, tmp_path):
    assert_fails_well(cli("--data", "dukemtmc"), "--root")
    assert not (tmp_path / "runs").exists()


def test_cli_malformed_yaml(cli, tmp_path, data_root):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nops: [identity, {name: se\n")
    result = cli("--space", bad, "--root", data_root)
    assert_fails_well(result, "bad.yaml", "not valid YAML")
    assert not (tmp_path / "runs").exists()
    invalid = write_space(tmp_path, {**tiny_space(), "cells": {"positions": ["layer9"]}})
    assert_fails_well(cli("--space", invalid, "--root", data_root), "cells.positions")
    assert not (tmp_path / "runs").exists()


def test_cli_resume_without_checkpoint(cli, tmp_path):
    assert_fails_well(cli("--resume", "--out", tmp_path / "empty"), "no checkpoint")
    assert not (tmp_path / "empty").exists()
    assert_fails_well(cli("--resume"), "--out")


def test_cli_refuses_an_out_dir_that_holds_a_run(cli, finished, tmp_path):
    before = sorted(p.name for p in finished.out_dir.rglob("*"))
    assert_fails_well(cli("--out", finished.out_dir), "already holds a finished search")
    assert sorted(p.name for p in finished.out_dir.rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_fails_well(cli("--out", tmp_path / "other"), "not empty")


def test_cli_epochs_must_leave_an_architecture_epoch(cli, tmp_path, data_root):
    space = write_space(tmp_path, tiny_space(warmup_epochs=1))
    assert_fails_well(cli("--space", space, "--root", data_root, "--epochs", "1",
                          "--out", tmp_path / "r"), "warmup_epochs")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_cuda_without_cuda(cli, tmp_path):
    assert_fails_well(cli("--device", "cuda", "--out", tmp_path / "r"), "CUDA is not available")
    assert not (tmp_path / "r").exists()
