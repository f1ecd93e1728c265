"""The ``uniform`` strategy: single-path sampling, one sub-network at a time, every sub-network
scored on the held-out identities (checked against scoring each one on its own), the bootstrap
choice, and a whole uniform search with its run folder and resume; the ``zero_cost`` strategy:
every sub-network's triplet loss at initialisation (checked the same way) and its search."""

from __future__ import annotations

import copy
import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from nas_reid.search.decisions import bootstrap_report
from nas_reid.search import query_gallery_split, search, split_identities
from nas_reid.search.data import quick_eval
from nas_reid.losses import TripletLoss
from nas_reid.search.subnets import SubnetScores, _bns, score_at_init, score_subnets
from nas_reid.space import Supernet, load_space
from nas_reid.space.config import SpaceError
from nas_reid.space.mixed import MixedOp
from tests.tiny import tiny_mobile_space, tiny_space

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def uniform_space(**changes) -> dict:
    space = tiny_space(name="tiny_uniform")
    space["sampling"] = {"strategy": "uniform", "bootstrap": 200}
    space.update(changes)
    return space


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


# ------------------------------------------------------------------------------ the mixed op


def test_uniform_sampling_draws_every_candidate_from_the_seed_and_trains_no_alpha():
    op = MixedOp([Scale(1.0), Scale(2.0), Scale(3.0)], ["a", "b", "c"], "uniform").train()
    alpha = torch.zeros(3, requires_grad=True)
    x = torch.ones(1, 1, 2, 2, requires_grad=True)

    def draws():
        out = []
        for _ in range(60):
            y = op(x, alpha)
            out.append(op.last_choice)
            assert torch.equal(y, (op.last_choice + 1.0) * x)  # the drawn op's output as it is
        return out

    torch.manual_seed(3)
    first = draws()
    torch.manual_seed(3)
    assert draws() == first and set(first) == {0, 1, 2}
    op(x, alpha).sum().backward()
    assert alpha.grad is None and x.grad is not None

    op.eval()
    assert torch.equal(op(x, torch.tensor([0.0, 5.0, 1.0])), 2 * x)  # eval: argmax alpha


@pytest.mark.parametrize("strategy", ["softmax", "gumbel", "uniform"])
def test_a_fixed_edge_runs_its_candidate_alone_in_training_and_eval(strategy):
    op = MixedOp([Scale(1.0), Scale(2.0), Scale(3.0)], ["a", "b", "c"], strategy)
    x, alpha = torch.ones(1, 1, 2, 2), torch.tensor([5.0, 0.0, 0.0])
    op.fixed = 2
    for mode in (True, False):
        op.train(mode)
        assert torch.equal(op(x, alpha), 3 * x) and op.last_choice == 2


# ------------------------------------------------------------------------------ the supernet


@pytest.mark.parametrize("positions", [["layer3", "layer4"], ["layer1", "layer3"]])
def test_the_first_cell_input_then_the_segments_are_the_forward(positions):
    space = uniform_space(cells={"positions": positions, "nodes": 1, "edges_per_node": 1})
    torch.manual_seed(0)
    net = Supernet(load_space(space), num_classes=4).eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad(), net.fixed({positions[0]: [1], positions[1]: [2]}):
        z = net.first_cell_input(x)
        for position in positions:
            z = net.segment(position, z)
        whole = net(x)
    assert torch.equal(z["feat_bn"], whole["feat_bn"])
    assert all(m.fixed is None for cell in net.cells.values() for m in cell.edges)  # restored


# ------------------------------------------------------------------------------ scoring


def calibrate_alone(net, choice: dict, images: list[torch.Tensor]) -> None:
    """One sub-network's BNs recalibrated by whole forwards, segment after segment."""
    net.eval()
    with torch.no_grad(), net.fixed(choice):
        for position in net.cells:
            bns = _bns(net.segment_modules(position))
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
                bn.train()
            for imgs in images:
                net(imgs)
            for bn in bns:
                bn.eval()


def test_scoring_shares_work_yet_gives_each_sub_network_its_own_figures(dataset):
    space = load_space(uniform_space())
    torch.manual_seed(0)
    net = Supernet(space, num_classes=4)
    with torch.no_grad():  # BN statistics unlike any sub-network's
        for bn in _bns([net]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    split = split_identities(dataset.train, 0.5, 0, min_ids=2)
    heldout = query_gallery_split(split.heldout)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = score_subnets(net, split.weight, heldout, torch.device("cpu"), batch_size=8)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the supernet is as it was

    assert len(scores.choices) == 9 and scores.ap.shape[0] == 9
    from nas_reid.search.data import plain_loader

    images = [imgs for imgs, *_ in plain_loader(split.weight, (64, 32), batch_size=8)]
    for i, choice in enumerate(scores.choices):
        alone = copy.deepcopy(net)
        calibrate_alone(alone, {"layer3": [choice[0]], "layer4": [choice[1]]}, images)
        with torch.no_grad(), alone.fixed({"layer3": [choice[0]], "layer4": [choice[1]]}):
            figures = quick_eval(alone, heldout, (64, 32), torch.device("cpu"), batch_size=8)
        assert scores.mAP[i] == pytest.approx(figures["mAP"], abs=1e-5), scores.key(i)
        assert scores.r1[i] == pytest.approx(figures["R1"], abs=1e-9)
    assert len({round(float(m), 6) for m in scores.mAP}) > 1  # the sub-networks differ


def test_the_bootstrap_choice_and_its_frequencies():
    rng = np.random.default_rng(0)
    choices = [(a, b) for a in range(3) for b in range(3)]
    ap = rng.uniform(0.3, 0.4, size=(9, 200))
    ap[5] += 0.3  # (1, 2) is far ahead
    scores = SubnetScores(["layer3", "layer4"], ["identity", "se", "eca"], choices, ap, [0.5] * 9)
    pick, freq = scores.choose(300, seed=1)
    assert pick == (1, 2) and freq[0, 1] == 1.0 and freq[1, 2] == 1.0
    assert scores.key(5) == "layer3=se layer4=eca"
    rows = scores.rows(pick)
    assert rows[0]["arch"] == "layer3=se layer4=eca" and rows[0]["picked"] and rows[0]["rank"] == 1

    close = rng.uniform(0.3, 0.4, size=(9, 200))  # no winner: the frequencies spread
    scores = SubnetScores(["layer3", "layer4"], ["identity", "se", "eca"], choices, close, [0.5] * 9)
    pick, freq = scores.choose(300, seed=1)
    assert np.allclose(freq.sum(axis=1), 1.0) and freq.max() < 0.95
    assert scores.choose(300, seed=1)[1].tolist() == freq.tolist()  # seeded
    assert pick == tuple(int(row.argmax()) for row in freq)


# ------------------------------------------------------------------------------ the search


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory, dataset):
    out = tmp_path_factory.mktemp("runs") / "uniform"
    return search(uniform_space(), dataset, out_dir=out, progress=False)


def test_a_uniform_search_scores_every_sub_network_and_picks_the_bootstrap_mode(uniform_run):
    out = uniform_run.out_dir
    with open(out / "subnets.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and [int(r["rank"]) for r in rows] == list(range(1, 10))
    maps = [float(r["heldout_mAP"]) for r in rows]
    assert maps == sorted(maps, reverse=True)
    picked = [r["arch"] for r in rows if r["picked"] == "True"]
    genotype = uniform_run.genotype
    assert picked == [" ".join(f"{c.position}={c.edges[0].op}" for c in genotype.cells)]

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert epochs[0]["subnets"] is None and epochs[0]["arch_updates"] is False
    assert epochs[0]["decisions"]["total"] == 0 and epochs[0]["decisions"]["resamples"] == 200
    assert all(p == pytest.approx(1 / 3) for p in epochs[0]["arch_probs"]["layer3"][0])
    last = epochs[-1]
    assert last["subnets"]["scored"] == 9 and last["subnets"]["picked"] == picked[0]
    assert last["loss"]["arch"] is None  # no architecture step ran
    for position, probs in last["arch_probs"].items():  # the bootstrap frequencies
        assert sum(probs[0]) == pytest.approx(1.0)
    report = uniform_run.decisions
    assert report.resamples == 200 and len(report.decisions) == 2
    for d in report.decisions:
        assert d.basis == "bootstrap" and d.settled == (d.probability >= 0.95)
        assert "bootstrap resamples" in d.describe()
    assert report.summary() == bootstrap_report(genotype, 200).summary()


def test_a_uniform_search_resumed_ends_as_an_uninterrupted_one(uniform_run, dataset, tmp_path):
    out = tmp_path / "resumed"
    part = search(uniform_space(), dataset, out_dir=out, progress=False, max_steps=5)
    assert not part.finished
    done = search(None, dataset, out_dir=out, progress=False, resume=True)
    assert done.finished and done.genotype.cells == uniform_run.genotype.cells
    assert (out / "subnets.csv").read_text() == (uniform_run.out_dir / "subnets.csv").read_text()


def test_genotype_show_reports_the_bootstrap_decisions(uniform_run, run):
    result = run("genotype", "show", str(uniform_run.out_dir))
    assert result.exit_code == 0, result.output
    assert "layer3 0->1" in result.output


@pytest.mark.parametrize("change, message", [
    ({"cells": {"positions": ["layer3"], "nodes": 2, "edges_per_node": 1}}, "one-node cells"),
    ({"ops": ["identity", "se", "eca", "cbam_c", "rga_s", "rga_c", "dcs", "zero"],
      "cells": {"positions": ["layer1", "layer2", "layer3", "layer4"], "nodes": 1,
                "edges_per_node": 1}}, "4,096"),
])
def test_uniform_refuses_spaces_it_cannot_enumerate(change, message):
    with pytest.raises(SpaceError, match=message):
        load_space(uniform_space(**change))


def test_uniform_refuses_a_searchable_backbone():
    space = tiny_mobile_space()
    space["sampling"] = {"strategy": "uniform"}
    with pytest.raises(SpaceError, match="fixed backbone"):
        load_space(space)


def test_the_cli_reports_the_picked_sub_network_and_the_bootstrap(run, data_root, tmp_path):
    import yaml

    space = tmp_path / "uniform.yaml"
    space.write_text(yaml.safe_dump(uniform_space()))
    out = tmp_path / "run"
    result = run("search", "--space", str(space), "--data", "synthreid", "--root", str(data_root),
                 "--out", str(out), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "bootstrap resamples" in result.output
    assert "the picked sub-network, rank" in result.output and "of 9" in result.output
    assert "last epoch's argmax" not in result.output
    assert (out / "cells.png").is_file() and (out / "subnets.csv").is_file()


def test_every_strategy_the_space_accepts_has_a_mixed_op_rule_and_a_strategy_class():
    from typing import get_args

    from nas_reid.search.strategies import STRATEGIES, strategy_for
    from nas_reid.space.strategy import SamplingConfig
    from nas_reid.space.mixed import STRATEGIES as MIXED

    names = set(get_args(SamplingConfig.model_fields["strategy"].annotation))
    assert names == set(STRATEGIES) == set(MIXED) == {"softmax", "gumbel", "uniform", "zero_cost"}
    for name in names:
        space = load_space({**uniform_space(), "sampling": {"strategy": name}})
        strategy = strategy_for(space)
        scored = name in ("uniform", "zero_cost")
        assert strategy.name == name
        assert strategy.temperature == (name == "gumbel")
        assert strategy.arch_updates(5) == (not scored)
        assert strategy.decided(False) == (not scored)
        assert strategy.trains_weights == (name != "zero_cost")
        assert strategy.epochs(7) == (1 if name == "zero_cost" else 7)


def test_a_finished_uniform_search_extended_scores_again_at_its_new_last_epoch(dataset, tmp_path):
    out = tmp_path / "extended"
    first = search(uniform_space(), dataset, out_dir=out, progress=False)
    assert first.finished
    more = search(None, dataset, out_dir=out, progress=False, resume=True, epochs=3)
    assert more.finished and more.epochs_done == 3
    epochs = [r for r in more.metrics if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    assert epochs[0]["subnets"] is None and epochs[1]["subnets"] is not None
    assert epochs[2]["subnets"]["scored"] == 9 and more.decisions.resamples == 200
    picked = epochs[2]["subnets"]["picked"]
    assert picked == " ".join(f"{c.position}={c.edges[0].op}" for c in more.genotype.cells)


# ------------------------------------------------------------------------------ zero_cost


def zero_cost_space(**sampling) -> dict:
    return uniform_space(sampling={"strategy": "zero_cost", "bootstrap": 200, "proxy_batches": 2,
                                   **sampling})


def pk_batches(dataset, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from nas_reid.data.streams import BatchStream

    split = split_identities(dataset.train, 0.5, 0, min_ids=2)
    stream = BatchStream(split.weight, (64, 32), p=2, k=4, seed=0, stream=0)
    return [(b[0], b[1]) for _, b in zip(range(n), stream.epoch_batches(0))]


def test_scoring_at_init_shares_work_yet_gives_each_sub_network_its_own_loss(dataset):
    space = load_space(zero_cost_space())
    torch.manual_seed(0)
    net = Supernet(space, num_classes=4)
    batches = pk_batches(dataset, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    scores = score_at_init(net, batches, torch.device("cpu"), margin=0.3, seed=0)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running statistics restored
    assert scores.kind == "init" and scores.ap.shape == (9, 16)  # 2 batches x 8 anchors

    triplet = TripletLoss(0.3)
    for i, choice in enumerate(scores.choices):
        alone = copy.deepcopy(net).train()
        with torch.no_grad(), alone.fixed({"layer3": [choice[0]], "layer4": [choice[1]]}):
            losses = torch.cat([triplet(alone(imgs)["feat"], pids, per_anchor=True)
                                for imgs, pids in batches])
        assert np.allclose(-scores.ap[i], losses.numpy(), atol=1e-5), scores.key(i)
    assert len({round(float(m), 6) for m in scores.mAP}) > 1  # the sub-networks differ
    rows = scores.rows(scores.choose(100, seed=0)[0])
    assert list(rows[0]) == ["rank", "arch", "init_triplet", "picked"]
    assert [r["init_triplet"] for r in rows] == sorted(r["init_triplet"] for r in rows)


def test_a_zero_cost_search_trains_nothing_and_picks_by_the_loss_at_init(dataset, tmp_path):
    out = tmp_path / "zero_cost"
    with pytest.warns(UserWarning, match="randomly initialised backbone"):  # tiny: no weights
        result = search(zero_cost_space(), dataset, out_dir=out, progress=False)
    assert result.finished
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["step"] == 0 and epochs[0]["rib"] is None
    scored = epochs[0]["subnets"]
    assert scored["score"] == "init_triplet" and scored["batches"] == 2 and scored["anchors"] == 16
    with open(out / "subnets.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and "init_triplet" in rows[0]
    picked = [r["arch"] for r in rows if r["picked"] == "True"]
    assert picked == [" ".join(f"{c.position}={c.edges[0].op}" for c in result.genotype.cells)]
    assert result.decisions.resamples == 200
    assert "bootstrap resamples of the anchors at initialisation" in result.decisions.summary()
    from nas_reid.viz.genotype_report import load_source, source_decisions

    assert source_decisions(load_source(out)).summary() == result.decisions.summary()
    again = search(zero_cost_space(), dataset, out_dir=tmp_path / "again", progress=False)
    assert (tmp_path / "again" / "subnets.csv").read_text() == (out / "subnets.csv").read_text()


def test_the_cli_reports_a_zero_cost_pick(run, data_root, tmp_path):
    import yaml

    space = tmp_path / "zero_cost.yaml"
    space.write_text(yaml.safe_dump(zero_cost_space()))
    result = run("search", "--space", str(space), "--data", "synthreid", "--root", str(data_root),
                 "--out", str(tmp_path / "run"), "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "triplet loss at initialisation" in result.output and "of 9" in result.output
    assert "epoch 1/1  no training step" in result.output and "(new, 1 epoch)" in result.output


def test_the_lines_name_each_kind_of_score():
    from nas_reid.search.strategies import SCORE_TEXT, picked_line, scored_line

    record = {"scored": 49, "seconds": 20.2, "best": "x", "picked": "y", "picked_rank": 3,
              "best_mAP": 64.12, "picked_mAP": 63.0}
    assert scored_line(record) == ("49 sub-networks scored on the held-out identities (mAP) in "
                                   "20 s: best x (64.1); picked y (63.0); subnets.csv")
    assert picked_line(record) == "held-out mAP 63.0 (the picked sub-network, rank 3 of 49)"
    record = {**record, "score": "init_triplet", "anchors": 128, "best_triplet": 0.1234,
              "picked_triplet": 0.2}
    assert scored_line(record) == ("49 sub-networks scored at initialisation (triplet loss, 128 "
                                   "anchors) in 20 s: best x (0.1234); picked y (0.2000); "
                                   "subnets.csv")
    assert picked_line(record) == ("triplet loss at initialisation 0.2000 (the picked "
                                   "sub-network, rank 3 of 49)")
    assert set(SCORE_TEXT) == {"heldout_mAP", "init_triplet"}
