"""Which choices a search had settled (nas_reid.search.decisions): margins, how long a choice held,
warm-up epochs left out, node inputs, the skip cap, a searchable backbone's choices, and
``nas-reid genotype show`` of a run folder."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from nas_reid.cli import main
from nas_reid.search.decisions import SETTLE_EPOCHS, decision_report, decision_values
from nas_reid.space.genotype import derive_genotype
from nas_reid.viz.genotype_report import decision_rows, load_source
from nas_reid.space import Supernet, load_space
from tests.tiny import tiny_mobile_space

OPS = ["zero", "identity", {"name": "se", "params": {"reduction": 8}}, "eca",
       {"name": "rga_c", "params": {"s_ratio": 2, "d_ratio": 2}}]
NAMES = ["zero", "identity", "se", "eca", "rga_c"]


def supernet(nodes=1, edges_per_node=1, positions=("layer3", "layer4"), skip_cap=None):
    space = {
        "name": "tiny", "input": {"height": 64, "width": 32},
        "backbone": {"name": "resnet18", "last_stride": 1},
        "cells": {"positions": list(positions), "nodes": nodes, "edges_per_node": edges_per_node},
        "ops": OPS, "sampling": {"strategy": "gumbel"}, "schedule": {"skip_cap": skip_cap},
    }
    torch.manual_seed(0)
    return Supernet(load_space(space), num_classes=5)


def row(**logits):
    """A logit row over NAMES: row(se=3, zero=5) -> [5, 0, 3, 0, 0]."""
    return [float(logits.get(n, 0.0)) for n in NAMES]


def history(net, epochs):
    """One genotype per epoch: ``epochs`` is a list of {position: logit rows}."""
    out = []
    for number, alphas in enumerate(epochs, start=1):
        with torch.no_grad():
            for position, rows in alphas.items():
                net.arch[position].copy_(torch.tensor(rows, dtype=torch.float32))
        out.append(derive_genotype(net, provenance={"epoch": number}))
    return out


def softmax(logits):
    e = [math.exp(v) for v in logits]
    return [v / sum(e) for v in e]


def test_a_choice_that_held_is_settled_one_that_changed_at_the_end_is_not():
    net = supernet()
    # epochs 1-2 are warm-up (their choices do not count); layer3 keeps se from epoch 3 on,
    # layer4 goes eca -> se at epoch 6
    epochs = [{"layer3": [row(eca=1)], "layer4": [row(rga_c=1)]}] * 2
    epochs += [{"layer3": [row(se=1 + 0.1 * i, eca=0.5)], "layer4": [row(eca=1)]} for i in range(3)]
    epochs += [{"layer3": [row(se=2, eca=0.5, zero=3)], "layer4": [row(se=1.2, eca=1)]}]
    report = decision_report(history(net, epochs), warmup_epochs=2)
    assert report.window == SETTLE_EPOCHS == 3 and report.arch_epochs == [3, 4, 5, 6]
    by_key = {d.key: d for d in report.decisions}
    assert list(by_key) == ["layer3 0->1", "layer4 0->1"]

    l3 = by_key["layer3 0->1"]
    # zero is never a choice nor the runner-up (DARTS' rule); the probabilities are the recorded
    # (rounded) softmax of the last epoch
    p = softmax(row(se=2, eca=0.5, zero=3))
    assert (l3.choice, l3.runner_up) == ("se", "eca")
    assert l3.probability == pytest.approx(p[2], abs=1e-6)
    assert l3.runner_up_probability == pytest.approx(p[3], abs=1e-6)
    assert l3.margin == pytest.approx(p[2] - p[3], abs=2e-6)
    assert (l3.held_since, l3.held_epochs, l3.changes, l3.settled) == (3, 4, 0, True)
    # its margin moved little over the last 3 architecture epochs, against a large final margin
    assert l3.movement is not None and l3.confidence > 2

    l4 = by_key["layer4 0->1"]
    assert (l4.choice, l4.runner_up) == ("se", "eca")
    assert (l4.held_since, l4.held_epochs, l4.changes, l4.settled) == (6, 1, 1, False)
    assert [d.key for d in report.settled] == ["layer3 0->1"]
    assert [d.key for d in report.unsettled] == ["layer4 0->1"]
    assert report.summary() == ("1 of 2 settled (unchanged over the last 3 architecture epochs, "
                                "margin above 2x its movement)")
    assert l4.describe().startswith("layer4 0->1: se p 0.")
    assert "held since epoch 6, changed 1 time; margin " in l4.describe()

    doc = report.as_dict()
    assert (doc["settled"], doc["total"], doc["window"], doc["arch_epochs"]) == (1, 2, 3, 4)
    assert doc["decisions"][1]["key"] == "layer4 0->1" and doc["decisions"][1]["settled"] is False
    assert json.loads(json.dumps(doc)) == doc


def test_a_choice_that_held_with_a_margin_inside_its_movement_is_not_settled():
    """The argmax held for every architecture epoch, but its lead swung by more than half of
    its final size from epoch to epoch: one or two more epochs could undo it."""
    net = supernet(positions=("layer4",))
    swings = [0.30, 0.02, 0.25, 0.03]  # se's logit lead over eca, epoch by epoch
    epochs = [{"layer4": [row(se=1 + d, eca=1)]} for d in swings]
    d = decision_report(history(net, epochs), warmup_epochs=0).decisions[0]
    assert (d.choice, d.runner_up, d.held_epochs, d.changes) == ("se", "eca", 4, 0)
    assert d.movement > d.margin / 2 and d.confidence < 2 and not d.settled
    assert "margin 0." in d.describe() and "x its epoch-to-epoch movement" in d.describe()
    steady = [{"layer4": [row(se=1 + 0.2 + 0.01 * i, eca=1)]} for i in range(4)]
    d = decision_report(history(net, steady), warmup_epochs=0).decisions[0]
    assert d.settled and d.confidence > 10
    flat = decision_report(history(net, [{"layer4": [row(se=2, eca=1)]}] * 4), 0).decisions[0]
    assert flat.settled and flat.movement == 0 and flat.confidence == math.inf
    assert flat.as_dict()["confidence"] is None and "margin steady" in flat.describe()


def test_too_few_architecture_epochs_settle_nothing():
    net = supernet(positions=("layer4",))
    genotypes = history(net, [{"layer4": [row(se=3)]}] * 3)
    report = decision_report(genotypes, warmup_epochs=1)  # two architecture epochs < 3
    assert report.arch_epochs == [2, 3]
    assert not report.settled and report.decisions[0].held_epochs == 2
    assert report.summary().startswith("0 of 1 settled: the search updated the architecture in 2 "
                                       "epochs, fewer than the 3")
    assert decision_report(genotypes, warmup_epochs=1, window=2).decisions[0].settled
    # a search still in its warm-up: no architecture epoch
    early = decision_report(genotypes[:1], warmup_epochs=2).decisions[0]
    assert (early.held_since, early.held_epochs, early.changes, early.settled) == (None, 0, 0, False)
    assert "no architecture epoch" in early.describe()
    assert decision_report([], warmup_epochs=0).decisions == []
    with pytest.raises(ValueError, match="window"):
        decision_report(genotypes, warmup_epochs=0, window=0)


def test_a_node_that_drops_edges_has_an_inputs_decision():
    net = supernet(nodes=2, edges_per_node=1, positions=("layer3",))
    # edges (0,1), (0,2), (1,2); node 2 keeps one of its two inputs
    rows = [row(eca=2), row(se=1), row(rga_c=3, zero=1)]
    (g,) = history(net, [{"layer3": rows}])
    values = decision_values(g)
    # node 1 has one input (no choice); the ops of the kept edges 0->1 and 1->2, not of the
    # dropped 0->2
    assert list(values) == ["layer3 0->1", "layer3 1->2", "layer3 node 2 inputs"]
    inputs = values["layer3 node 2 inputs"]
    strength_1_2 = softmax(rows[2])[4]
    strength_0_2 = softmax(rows[1])[2]
    assert inputs.value == "1" and inputs.runner_up == "0->2"
    assert inputs.probability == pytest.approx(strength_1_2, abs=1e-6)
    assert inputs.runner_up_probability == pytest.approx(strength_0_2, abs=1e-6)
    # asked for by key, a dropped edge's op is still computed (for an earlier epoch's genotype)
    assert decision_values(g, ["layer3 0->2"])["layer3 0->2"].value == "se"


def test_a_choice_the_skip_cap_replaced_is_marked():
    net = supernet(skip_cap=0, positions=("layer3",))
    genotypes = history(net, [{"layer3": [row(identity=3, eca=1)]}] * 3)
    assert genotypes[-1].cells[0].edges[0].op == "eca"  # the cap's replacement
    (d,) = decision_report(genotypes, warmup_epochs=0).decisions
    assert d.choice == "identity" and d.capped and d.settled
    assert d.describe().endswith("; replaced by the skip cap)")


def test_a_searchable_backbone_has_one_decision_per_choice():
    torch.manual_seed(0)
    net = Supernet(load_space(tiny_mobile_space()), num_classes=5)
    with torch.no_grad():
        net.arch_backbone["s3_width"].copy_(torch.tensor([2.0, 0.0]))
    g = derive_genotype(net)
    values = decision_values(g)
    keys = [k for k in values if k.startswith("backbone ")]
    assert keys == [f"backbone {k}" for k in g.backbone_probabilities]
    stage = {s.name: s for s in g.backbone.mobile.stages}["s3"]
    width = values["backbone s3_width"]
    assert width.value == str(stage.width) and width.probability > width.runner_up_probability
    assert values["backbone s3_kernel"].value == str(stage.kernel)


def test_genotype_show_lists_the_decisions_of_a_search_run(tmp_path):
    net = supernet()
    epochs = [{"layer3": [row(se=2)], "layer4": [row(eca=1 + i)]} for i in range(4)]
    genotypes = history(net, epochs)
    run = tmp_path / "search-x"
    run.mkdir()
    (run / "genotype_history.jsonl").write_text(
        "".join(json.dumps(g.to_dict()) + "\n" for g in genotypes))
    (run / "genotype.json").write_text(genotypes[-1].to_json())
    records = [{"kind": "epoch", "epoch": n, "epochs": 4, "arch_updates": n > 1} for n in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = CliRunner().invoke(main, ["genotype", "show", str(run)])
    assert result.exit_code == 0, result.output
    assert ("choices: 2 of 2 settled (unchanged over the last 3 architecture epochs, margin "
            "above 2x its movement)") in result.output
    assert "settled      layer4 0->1: eca p " in result.output
    assert "(held since epoch 2, changed 0 times; margin " in result.output

    header, rows = decision_rows(load_source(run))
    assert header[0] == "choice" and header[-1] == "settled"
    assert [r[0] for r in rows] == ["layer3 0->1", "layer4 0->1"]
    assert rows[1][1] == "eca" and rows[1][6] == "epoch 2" and rows[1][-1] == "yes"
    assert rows[1][2] == f"{genotypes[-1].probabilities['layer4'].values[0][3]:.3f}"
    # a genotype file alone has no history: no rows
    alone = tmp_path / "alone.json"
    alone.write_text(genotypes[-1].to_json())
    assert decision_rows(load_source(alone))[1] == []
