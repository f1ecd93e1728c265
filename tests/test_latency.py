"""The measured-latency cost (FBNet's latency lookup table): the blocks of a space, the table and
its file, the expected latency against the achieved one, the search with ``metric: latency``
(its run folder, resume, a given table, DDP) and ``nas-reid latency-table``.

Tables are measured with batch 1, one warm-up and two timed forwards (a fraction of a second for
the tiny spaces); where only the arithmetic matters, a table of made-up latencies stands in."""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from nas_reid.errors import UserError
from nas_reid.space.genotype import Genotype, derive_genotype
from nas_reid.search import load_checkpoint, search
from nas_reid.search.checkpoint import CHECKPOINT, save_checkpoint
from nas_reid.search.cost import BlockCosts, CostModel, latency_bounds
from nas_reid.search.latency import (
    LATENCY_FILE,
    LatencyTable,
    LatencyTableError,
    measure_block,
    measure_table,
)
from nas_reid.space import SpaceError, Supernet, load_space
from nas_reid.space.blocks import mobile_blocks, network_blocks, space_blocks
from nas_reid.space.mobile import MobileBackbone, arch_flops
from nas_reid.viz.search_plots import plot_cost
from tests.tiny import tiny_mobile_space, tiny_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = {"batch": 1, "warmup": 1, "repeats": 2}
LATENCY_COST = {"form": "additive", "weight": 1.0, "target": 0.5, "metric": "latency",
                "latency": FAST}


def mobile_latency_space(**latency) -> dict:
    return tiny_mobile_space(cost={**LATENCY_COST, "latency": {**FAST, **latency}})


def resnet_latency_space(**latency) -> dict:
    return tiny_space(cost={**LATENCY_COST, "latency": {**FAST, **latency}})


def made_up_table(space, seed: int = 0) -> LatencyTable:
    """Random latencies for every block of ``space``: the arithmetic without the timing noise."""
    rng = random.Random(seed)
    return LatencyTable({k: round(rng.uniform(0.01, 1.0), 6) for k in space_blocks(space).keys()},
                        {"device": "made up", "torch": torch.__version__, "batch": 1, "warmup": 0,
                         "repeats": 1, "date": "2025-01-01T00:00:00"})


def set_one_hot(net: Supernet, generator: torch.Generator) -> None:
    """Every architecture choice one-hot (softmax gives exactly 1 and 0) at a random option."""
    with torch.no_grad():
        for a in net.arch_parameters():
            pick = torch.randint(a.shape[-1], a.shape[:-1], generator=generator)
            a.copy_(torch.nn.functional.one_hot(pick, a.shape[-1]).float() * 1e4)


# ------------------------------------------------------------------------------ the blocks


def test_the_blocks_of_a_network_are_the_network():
    s = load_space(tiny_mobile_space())
    net = Supernet(s, 4)
    set_one_hot(net, torch.Generator().manual_seed(0))
    arch = derive_genotype(net).backbone.mobile
    blocks = mobile_blocks(arch, s.input_size, 1)
    assert sum(b.flops() for b in blocks) == arch_flops(arch, s.input_size, 1)
    built = sum(p.numel() for b in blocks for p in b.build().parameters())
    assert built == sum(p.numel() for p in MobileBackbone(arch, 1).parameters())
    x = torch.randn(1, 3, *s.input_size)
    with torch.no_grad():
        for block in blocks:  # each block takes what the one before gives
            assert tuple(x.shape[1:]) == block.input_shape
            x = block.build().eval()(x)
    keys = set(space_blocks(s).keys())
    assert {b.key for b in network_blocks(derive_genotype(net))} <= keys


def test_the_expectation_over_the_blocks_is_the_flops_closed_form():
    """Priced by FLOPs, the written-out expectation the latency uses equals the backbone's
    closed form by moments for any probabilities."""
    s = load_space(tiny_mobile_space())
    net = Supernet(s, 4)
    flops = BlockCosts(space_blocks(s), lambda b: b.flops())
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        probs = {k: torch.softmax(torch.randn(p.numel(), generator=g, dtype=torch.float64), -1)
                 for k, p in net.backbone_probabilities().items()}
        assert float(flops.backbone(probs)) == pytest.approx(
            float(net.backbone.expected_flops(probs)), rel=1e-12)


def test_bounds_are_the_fastest_and_slowest_network_of_the_space():
    doc = tiny_mobile_space()
    doc["backbone"]["mobile"]["choices"].update(kernel=[3], expansion=[2, 4])
    s = load_space(doc)
    net = Supernet(s, 4)
    costs = BlockCosts(space_blocks(s), lambda b, t=made_up_table(s, 2): t.ms(b.key))
    choices = [(k, p.numel()) for k, p in net.backbone_probabilities().items()]
    cells = [(pos, a.shape[-1]) for pos, a in net.arch.items()]
    every = []
    for pick in itertools.product(*[range(n) for _, n in choices]):  # every network
        probs = {k: torch.nn.functional.one_hot(torch.tensor(i), n).double()
                 for (k, n), i in zip(choices, pick)}
        backbone = costs.backbone(probs)
        for ops in itertools.product(*[range(n) for _, n in cells]):
            arch = {pos: 1e4 * torch.nn.functional.one_hot(torch.tensor([o]), n).double()
                    for (pos, n), o in zip(cells, ops)}
            every.append(float(costs.add_cells(backbone, probs, arch)))
    assert costs.bounds() == pytest.approx((min(every), max(every)), rel=1e-12)


# ------------------------------------------------------------------------------ the table


@pytest.mark.parametrize("doc", [tiny_mobile_space(), tiny_space()], ids=["mobile", "resnet"])
def test_a_measured_table_covers_every_block_and_round_trips(tmp_path, doc):
    s = load_space(doc)
    rng = torch.get_rng_state()
    table = measure_table(s, **FAST)
    assert torch.equal(torch.get_rng_state(), rng)  # the search's seeding is left alone
    assert list(table.entries) == space_blocks(s).keys()
    assert all(ms > 0 for ms in table.entries.values())
    meta = table.meta
    assert meta["batch"] == 1 and meta["warmup"] == 1 and meta["repeats"] == 2
    assert meta["device"].startswith("cpu: ") and meta["threads"] == torch.get_num_threads()
    assert meta["torch"] == torch.__version__ and meta["input"] == {"height": 64, "width": 32}
    assert meta["space"]["hash"] == s.canonical_hash() and meta["date"]
    path = table.save(tmp_path / "t.json")
    doc = json.loads(path.read_text())
    assert doc["kind"] == "nas-reid/latency-table" and doc["version"] == 1
    again = LatencyTable.load(path)
    assert again.entries == table.entries and again.device == table.device
    assert again.to_dict() == table.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]  # no temporary file left


def test_bad_tables_are_refused_with_the_field_or_key_named(tmp_path):
    s = load_space(mobile_latency_space())
    net = Supernet(s, 4)
    table = made_up_table(s)
    good = table.to_dict()
    missing = dict(table.entries)
    gone = next(k for k in missing if k.startswith("ir:"))
    del missing[gone]
    with pytest.raises(LatencyTableError, match="missing: " + re.escape(repr(gone))):
        CostModel(net, s.schedule.cost, LatencyTable(missing, table.meta))
    with pytest.raises(LatencyTableError, match=r"no entry for 'head:8->32"):
        LatencyTable({}, {}).ms("head:8->32:2x1:relu6")

    def written(doc, name="bad.json"):
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    cases = [
        ({**good, "version": 2}, r"version: unknown format version 2"),
        ({**good, "kind": "something"}, r"kind: Input should be 'nas-reid/latency-table'"),
        ({**good, "entries": {**good["entries"], gone: "fast"}}, r"entries\." + re.escape(gone)),
        ({**good, "entries": {gone: -1.0}}, r"a latency is a finite number of ms >= 0"),
        ({**good, "meta": {**good["meta"], "repeats": 0}}, r"meta\.repeats"),
        ({k: v for k, v in good.items() if k != "entries"}, r"entries: required field"),
        ([1, 2], r"expected a JSON object"),
        ('{"kind": "nas-reid/latency-table",\n "version": 1,, }', r"not valid JSON at line 2, column 15"),
    ]
    for doc, message in cases:
        with pytest.raises(LatencyTableError, match=message):
            LatencyTable.load(written(doc))
    with pytest.raises(LatencyTableError, match="no such file"):
        LatencyTable.load(tmp_path / "nowhere.json")
    extra = {**good, "meta": {**good["meta"], "later_field": 1}}  # tolerant of new meta fields
    assert LatencyTable.load(written(extra, "extra.json")).entries == table.entries
    assert issubclass(LatencyTableError, UserError)


# ------------------------------------------------------------------------------ the cost


@pytest.mark.parametrize("doc", [mobile_latency_space(), resnet_latency_space()],
                         ids=["mobile", "resnet-with-cells"])
def test_expected_latency_of_one_hot_choices_is_the_achieved_latency(doc):
    s = load_space(doc)
    net = Supernet(s, 4)
    table = made_up_table(s)
    model = CostModel(net, s.schedule.cost, table)
    g = torch.Generator().manual_seed(3)
    seen = set()
    for _ in range(8):
        set_one_hot(net, g)
        genotype = derive_genotype(net)
        achieved = model.achieved(genotype)
        assert achieved == pytest.approx(sum(table.entries[b.key] for b in network_blocks(genotype)))
        assert float(model.expected(net).detach()) == pytest.approx(achieved, rel=1e-12, abs=0)
        seen.add(genotype.summary() + genotype.backbone.summary())
    assert len(seen) > 1
    low, high = model.costs.bounds()
    assert low <= achieved <= high and model.minimum(net) == low
    assert model.unit == "ms" and model.metric == "latency"


def test_expected_latency_is_differentiable_in_every_architecture_parameter():
    s = load_space(mobile_latency_space())
    net = Supernet(s, 4)
    model = CostModel(net, s.schedule.cost, made_up_table(s))
    model.expected(net).backward()
    for name, p in net.named_arch_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_cost_speaks_its_unit():
    s = load_space(tiny_mobile_space(cost={**LATENCY_COST, "form": "multiplicative",
                                           "unit": 10.0}))
    net = Supernet(s, 4)
    model = CostModel(net, s.schedule.cost, made_up_table(s))
    with pytest.raises(UserError, match=r"log\(ms / unit\).* costs [0-9.]+ ms"):
        model.check(net)
    with pytest.raises(ValueError, match="needs a LatencyTable"):
        CostModel(net, s.schedule.cost)
    flops = load_space(tiny_mobile_space(cost={"form": "multiplicative"})).schedule.cost
    assert flops.metric == "flops" and flops.unit_name == "MFLOPs"
    with pytest.raises(UserError, match=r"log\(MFLOPs / unit\)"):
        CostModel(net, flops).check(net)


def test_cost_history_reads_the_unit_and_old_records_are_mflops():
    from types import SimpleNamespace

    from nas_reid.viz.genotype_report import cost_history

    old = {"form": "additive", "target": 3.0, "expected": 2.5, "achieved": 2.0}
    new = {**old, "metric": "latency", "unit": "ms", "device": "cpu: x, 1 torch threads"}
    assert cost_history(SimpleNamespace(metrics=[{"epoch": 1, "cost": old}])).unit == "MFLOPs"
    hist = cost_history(SimpleNamespace(metrics=[{"epoch": 1, "cost": new}]))
    assert hist.unit == "ms" and hist.device == "cpu: x, 1 torch threads"


# ------------------------------------------------------------------------------ the YAML


def test_the_latency_fields_validate_and_stay_out_of_the_hash(tmp_path):
    plain = load_space(tiny_mobile_space())
    cost = plain.schedule.cost
    assert cost.metric == "flops" and cost.latency.batch == 1 and cost.latency.warmup == 10
    assert cost.latency.repeats == 30 and cost.latency.table is None and cost.latency.device is None
    latency = load_space(mobile_latency_space(device="cpu"))
    assert latency.canonical_hash() == plain.canonical_hash()
    for field, value, message in [
        ("metric", "joules", r"schedule\.cost\.metric: Input should be 'flops' or 'latency'"),
        ("latency", {"repeats": 0}, r"schedule\.cost\.latency\.repeats: Input should be greater"),
        ("latency", {"device": "tpu"}, r"schedule\.cost\.latency\.device: String should match"),
        ("latency", {"batches": 2}, r"schedule\.cost\.latency\.batches: unknown field; did you "
                                    r"mean 'batch'\? \(allowed: "
                                    r"batch, warmup, repeats, table, device\)"),
    ]:
        with pytest.raises(SpaceError, match=message):
            load_space(tiny_mobile_space(cost={**LATENCY_COST, field: value}))
    with pytest.raises(SpaceError, match=r"schedule\.cost\.target: .*give the target in ms"):
        load_space(tiny_mobile_space(cost={"form": "additive", "metric": "latency"}))
    folder = tmp_path / "spaces"
    folder.mkdir()
    (folder / "s.yaml").write_text(yaml.safe_dump(mobile_latency_space(table="tables/t.json")))
    assert load_space(folder / "s.yaml").schedule.cost.latency.table == str(folder / "tables/t.json")


# ------------------------------------------------------------------------------ the search


def epochs_of(out) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "epoch"]


@pytest.mark.filterwarnings("ignore::nas_reid.search.guards.CollapseWarning")
def test_a_latency_search_saves_its_table_resumes_without_measuring_and_takes_a_given_one(
        tmp_path, dataset, monkeypatch, capsys):
    out = tmp_path / "run"
    first = search(mobile_latency_space(), dataset, out_dir=out, max_steps=3, progress=True)
    assert not first.finished
    assert "latency table: 80 blocks on cpu: " in capsys.readouterr().err
    table = LatencyTable.load(out / LATENCY_FILE)
    assert list(table.entries) == space_blocks(load_space(mobile_latency_space())).keys()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["search"]["latency"]["device"] == table.device
    assert config["search"]["latency"]["table"] == LATENCY_FILE

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr("nas_reid.search.latency.measure_table", no_measuring)
    resumed = search(None, None, out_dir=out, resume=True, progress=True)
    assert resumed.finished
    err = capsys.readouterr().err
    assert f"read from {out / LATENCY_FILE}" in err and " ms " in err
    records = epochs_of(out)
    for r in records:
        cost = r["cost"]
        assert cost["metric"] == "latency" and cost["unit"] == "ms" and cost["device"] == table.device
        assert cost["target"] == 0.5 and 0 < cost["expected"] and 0 < cost["achieved"]
    assert records[-1]["cost"]["achieved"] == pytest.approx(
        sum(table.entries[b.key] for b in network_blocks(resumed.genotype)), rel=1e-6)
    assert plot_cost(out).axes[0].get_ylabel().startswith("latency, ms")

    # the same seed and the same (given) table: the uninterrupted run finds the same genotype
    given = search(mobile_latency_space(table=str(out / LATENCY_FILE)), dataset,
                   out_dir=tmp_path / "given", progress=False)
    assert given.genotype.to_dict()["cells"] == resumed.genotype.to_dict()["cells"]
    assert given.genotype.backbone == resumed.genotype.backbone
    assert all(torch.equal(given.arch_parameters[k], resumed.arch_parameters[k])
               for k in given.arch_parameters)
    assert LatencyTable.load(tmp_path / "given" / LATENCY_FILE).entries == table.entries
    assert [r["cost"] for r in epochs_of(tmp_path / "given")] == [r["cost"] for r in records]


def test_a_run_without_its_table_does_not_resume_and_a_bad_given_table_stops_the_start(
        tmp_path, dataset):
    out = tmp_path / "run"
    search(resnet_latency_space(), dataset, out_dir=out, max_steps=1, progress=False)
    (out / LATENCY_FILE).unlink()
    with pytest.raises(LatencyTableError, match=r"--resume: .*latency_table.json is missing"):
        search(None, None, out_dir=out, resume=True, progress=False)
    partial = made_up_table(load_space(resnet_latency_space()))
    del partial.entries["resnet:resnet_tiny:ls1:64x32"]
    path = partial.save(tmp_path / "partial.json")
    with pytest.raises(LatencyTableError, match=r"missing: 'resnet:resnet_tiny:ls1:64x32'"):
        search(resnet_latency_space(table=str(path)), dataset, out_dir=tmp_path / "b",
               progress=False)
    assert not (tmp_path / "b").exists()  # refused before anything was written


def test_a_run_from_before_the_latency_metric_resumes(tmp_path, dataset):
    out = tmp_path / "old"
    search(tiny_space(), dataset, out_dir=out, max_steps=1, progress=False)
    ckpt = load_checkpoint(out / CHECKPOINT)
    cost = ckpt["config"]["space"]["schedule"]["cost"]
    del cost["metric"], cost["latency"]  # as written by an earlier release
    save_checkpoint(out / CHECKPOINT, ckpt)
    assert search(None, None, out_dir=out, resume=True, progress=False).finished


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    from nas_reid.data import load_dataset
    from nas_reid.search import search
    space, data_root, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    result = search(space, load_dataset("synthreid", data_root), out_dir=out, progress=False)
    with open(f"{out}.rank{os.environ['RANK']}.json", "w") as f:
        json.dump([m["cost"] for m in result.metrics], f)
""")


@pytest.mark.slow
def test_ddp_ranks_price_networks_with_rank_0s_table(tmp_path, data_root):
    script = tmp_path / "ddp_latency.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), json.dumps(resnet_latency_space()), str(data_root), str(out)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    costs = [json.loads((tmp_path / f"ddp.rank{r}.json").read_text()) for r in (0, 1)]
    assert costs[0] == costs[1]  # measured once: the same (noisy) latencies on both ranks
    table = LatencyTable.load(out / LATENCY_FILE)
    genotype = Genotype.from_json(out / "genotype.json")
    assert costs[0][-1]["achieved"] == pytest.approx(
        sum(table.entries[b.key] for b in network_blocks(genotype)), rel=1e-6)


# ------------------------------------------------------------------------------ CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA timing path needs a GPU")
def test_cuda_blocks_are_timed_with_events(tmp_path):
    s = load_space(tiny_mobile_space())
    block = space_blocks(s).blocks()[1]
    assert measure_block(block, batch=2, warmup=2, repeats=5, device="cuda") > 0
    table = measure_table(s, device="cuda", **FAST)
    assert table.meta["device_type"] == "cuda" and "CUDA" in table.device
    assert latency_bounds(s, table)[0] > 0


# ------------------------------------------------------------------------------ the CLI


def test_cli_latency_table_writes_a_table_a_search_can_use(run, tmp_path):
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(tiny_mobile_space()))
    out = tmp_path / "tables" / "tiny.json"
    assert run("latency-table", "--help").exit_code == 0
    result = run("latency-table", "--space", space, "--out", out, "--warmup", "1", "--repeats", "2")
    assert result.exit_code == 0, result.output
    table = LatencyTable.load(out)
    s = load_space(space)
    table.require(space_blocks(s).keys())
    fastest, slowest = latency_bounds(s, table)
    assert f"{len(table.entries)} entries" in result.output and table.device in result.output
    assert f"fastest {fastest:.3f} ms, slowest {slowest:.3f} ms" in result.output
    assert table.meta["repeats"] == 2 and table.meta["warmup"] == 1 and table.meta["batch"] == 1
    again = run("latency-table", "--space", space, "--out", out)
    assert again.exit_code == 2 and "add --overwrite" in again.output
    shipped = run("latency-table", "--space", "cpu_small", "--out", tmp_path / "small.json",
                  "--warmup", "0", "--repeats", "1")
    assert shipped.exit_code == 0 and "'cpu_small'" in shipped.output


@pytest.mark.parametrize("args, words", [
    (["--space", "no_such_space"], ["no such file, and not a shipped search space"]),
    (["--space", "cpu_small", "--out", "{tmp}/a_file/t.json"], ["is not a folder"]),
    (["--space", "cpu_small", "--device", "cuda"], ["CUDA is not available"]),
])
def test_cli_latency_table_fails_well(run, tmp_path, args, words):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "a_file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "t.json")]
    result = run("latency-table", *args)
    assert result.exit_code == 2, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    for word in words:
        assert word in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing written
