"""Ground truth and search quality: enumeration, the runner's resume / skip logic, and the
metrics of the quality report on tiny fake tables."""

from __future__ import annotations

import math

import pytest

from nas_reid.errors import UserError
from nas_reid.search.quality import (
    GT_FIELDS,
    Truth,
    agreement_ceiling,
    append_row,
    check_one_backbone,
    enumerate_architectures,
    equal_compute_k,
    judge,
    kendall_tau,
    key_of,
    pending_jobs,
    random_search,
    read_rows,
    recipe_agreement,
    run_ground_truth,
    scores_from_probabilities,
    rank_noise,
    summarize,
)
from nas_reid.space import Supernet, load_space
from tests.tiny import tiny_space


def _row(arch, seed, test, val, seconds=60.0):
    return {"arch": arch, "seed": str(seed), "test_mAP": str(test), "val_mAP": str(val),
            "wall_seconds": str(seconds), "overrides": ""}


# four architectures, two seeds; test means 40, 30, 20, 10 (a best), validation agrees in order
FAKE = [_row(a, s, t + d, v + d) for a, t, v in (("a", 40, 35), ("b", 30, 25), ("c", 20, 15),
                                                 ("d", 10, 5))
        for s, d in ((0, -1.0), (1, 1.0))]


def test_enumerate_and_key_of_round_trip():
    space = load_space(tiny_space())
    archs = enumerate_architectures(space)
    assert len(archs) == 3 ** 2 and len({k for k, _ in archs}) == 9
    assert archs[0][0] == "layer3=identity layer4=identity" and archs[-1][0] == "layer3=eca layer4=eca"
    for key, genotype in archs:
        assert key_of(genotype, space) == key
        assert genotype.space.hash == space.canonical_hash()
    with pytest.raises(UserError, match="one node with one edge"):
        enumerate_architectures(load_space(tiny_space(nodes=2)))


def test_a_searched_genotype_has_a_key_and_scores_every_architecture():
    import torch

    from nas_reid.space.genotype import derive_genotype

    space = load_space(tiny_space())
    net = Supernet(space, num_classes=4)
    with torch.no_grad():  # layer3 prefers se, layer4 eca
        net.arch["layer3"].copy_(torch.tensor([[0.0, 2.0, 0.0]]))
        net.arch["layer4"].copy_(torch.tensor([[0.0, 0.0, 1.0]]))
    genotype = derive_genotype(net)
    assert key_of(genotype, space) == "layer3=se layer4=eca"
    scores = scores_from_probabilities(genotype, space)
    assert len(scores) == 9 and max(scores, key=scores.get) == "layer3=se layer4=eca"
    p3 = torch.softmax(torch.tensor([0.0, 2.0, 0.0]), 0)
    p4 = torch.softmax(torch.tensor([0.0, 0.0, 1.0]), 0)
    assert math.isclose(scores["layer3=se layer4=eca"], math.log(p3[1]) + math.log(p4[2]),
                        rel_tol=1e-4)


def test_truth_means_noise_and_judgement():
    truth = Truth.from_rows(FAKE)
    assert truth.best.key == "a" and truth.archs["b"].test == 30 and truth.archs["b"].val == 25
    assert truth.archs["c"].test_std == pytest.approx(math.sqrt(2))
    noise = truth.noise()
    assert noise["std"] == pytest.approx(math.sqrt(2)) and noise["tau"] == {"0-1": 1.0}
    best, worst = judge(truth, "a"), judge(truth, "d")
    assert (best.regret, best.percentile) == (0.0, 100.0)
    assert (worst.regret, worst.percentile) == (30.0, 0.0)
    assert judge(truth, "b").percentile == pytest.approx(200 / 3)
    assert judge(truth, "a", {"a": 4, "b": 3, "c": 2, "d": 1}).tau == pytest.approx(1.0)
    assert judge(truth, "a", {"a": 1, "b": 2, "c": 3, "d": 4}).tau == pytest.approx(-1.0)
    with pytest.raises(UserError, match="not in the ground truth"):
        judge(truth, "z")


def test_kendall_tau_counts_pairs():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(4 / 6)  # 5 of 6 agree
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))


def test_a_cheaper_recipe_is_judged_by_how_it_ranks_the_architectures_both_hold():
    full = Truth.from_rows(FAKE)
    swapped = [_row(a, 0, t, t) for a, t in (("a", 9), ("b", 10), ("c", 5), ("d", 1), ("e", 50))]
    got = recipe_agreement(full, Truth.from_rows(swapped))
    assert got["archs"] == 4 and got["tau"] == pytest.approx(4 / 6) and not got["same_best"]
    assert recipe_agreement(full, full) == {"archs": 4, "tau": pytest.approx(1.0), "same_best": True}
    with pytest.raises(UserError, match="share 1 architecture"):
        recipe_agreement(full, Truth.from_rows([_row("a", 0, 1, 1), _row("z", 0, 2, 2)]))


def _recipe(spread, noise, seeds=(0, 1), archs="abcdefghijkl", offset=0.0):
    """Rows of a recipe: architecture i's true test mAP is 50 + spread * i; its seed s adds
    offset * s (alike for all) and +-noise, the sign alternating over architectures (so the
    residual of architecture + seed effects has std noise * sqrt(2 * 12 / 11) at two seeds)."""
    deviation = {0: -1.0, 1: 1.0, 2: 0.0}
    return Truth.from_rows([
        _row(a, s, 50 + spread * i + offset * s + noise * deviation[s] * (-1) ** i, 0)
        for i, a in enumerate(archs) for s in seeds])


def test_rank_noise_leaves_out_what_a_seed_does_to_every_architecture():
    fit = rank_noise(_recipe(1.0, 0.5, offset=3.0))
    assert fit["sd"] == pytest.approx(0.5 * math.sqrt(2 * 12 / 11)) and fit["dof"] == 11
    assert fit["offsets"] == {0: 0.0, 1: pytest.approx(3.0)}
    # an offset alone: nothing that reorders architectures
    assert rank_noise(_recipe(1.0, 0.0, offset=3.0))["sd"] == pytest.approx(0.0, abs=1e-9)
    assert rank_noise(_recipe(1.0, 0.5, seeds=(0,))) is None
    # unbalanced: the architectures with one seed inform the effects, not the residual
    rows = _recipe(1.0, 0.5, offset=3.0).rows
    partial = Truth.from_rows([r for r in rows if r["seed"] == "0" or r["arch"] in "ab"])
    assert rank_noise(partial)["dof"] == 1
    assert rank_noise(partial)["offsets"][1] == pytest.approx(3.0)


def test_the_noise_ceiling_is_high_when_the_spread_dwarfs_the_noise_and_low_otherwise():
    clear = agreement_ceiling(_recipe(5.0, 0.01), _recipe(5.0, 0.01))
    assert clear["archs"] == 12 and clear["median"] == pytest.approx(1.0)
    assert clear["p_threshold"] == 1.0 and clear["assumed"] == []
    # arch-to-arch differences of a tenth of the seed noise: two identical recipes barely agree
    noisy = agreement_ceiling(_recipe(0.1, 2.0), _recipe(0.1, 2.0))
    assert abs(noisy["median"]) < 0.3 and noisy["p_threshold"] < 0.05
    assert noisy["low"] <= noisy["median"] <= noisy["high"]
    # the same figures for the same inputs (a seeded simulation)
    assert agreement_ceiling(_recipe(0.1, 2.0), _recipe(0.1, 2.0)) == noisy


def test_the_noise_ceiling_takes_a_single_seed_recipes_noise_from_the_other():
    got = agreement_ceiling(_recipe(1.0, 0.01, seeds=(0,)), _recipe(1.0, 0.01))
    assert got["assumed"] == ["full"] and got["noise"]["full"] == (None, None)
    assert got["median"] == pytest.approx(1.0)
    with pytest.raises(UserError, match="neither recipe has two seeds of two or more"):
        agreement_ceiling(_recipe(1.0, 0.5, seeds=(0,)), _recipe(1.0, 0.5, seeds=(0,)))
    with pytest.raises(UserError, match="share 2 architecture"):
        agreement_ceiling(_recipe(1.0, 0.5, archs="ab"), _recipe(1.0, 0.5, archs="abc"))


def test_random_search_selects_by_validation_never_by_test():
    truth = Truth.from_rows(FAKE)
    everything = random_search(truth, k=4, trials=50)
    assert all(j.key == "a" for j in everything)  # all seen: the best by validation is the best
    one = summarize(random_search(truth, k=1, trials=4000, seed=1))
    assert one["mean_regret"] == pytest.approx((0 + 10 + 20 + 30) / 4, abs=1.0)
    # validation that disagrees with test: random search follows validation
    flipped = [dict(r, val_mAP=str(100 - float(r["val_mAP"]))) for r in FAKE]
    assert all(j.key == "d" for j in random_search(Truth.from_rows(flipped), k=4, trials=20))
    assert random_search(truth, k=2, trials=30, seed=3) == random_search(truth, k=2, trials=30, seed=3)


def test_equal_compute_k():
    assert equal_compute_k(search_seconds=600, retrain_seconds=300) == 3
    assert equal_compute_k(search_seconds=10, retrain_seconds=300) == 1


def test_pending_jobs_skip_finished_rows_seed_major():
    archs = [("a", "ga"), ("b", "gb"), ("c", "gc")]
    rows = [_row("a", 0, 1, 1), _row("b", 1, 1, 1), {**_row("c", 0, 1, 1), "overrides": "epochs=8"}]
    jobs = pending_jobs(archs, [0, 1], rows, tag="")
    assert [(k, s) for k, _, s in jobs] == [("b", 0), ("c", 0), ("a", 1), ("c", 1)]
    assert [(k, s) for k, _, s in pending_jobs(archs, [0], rows, tag="epochs=8")] == [("a", 0), ("b", 0)]


class _Genotype:
    def __init__(self, key):
        self.key = key

    def to_json(self):
        return self.key


def _fake_train(job):
    if job["arch"] == job.get("fail_on"):
        raise RuntimeError("killed")
    value = {"a": 40, "b": 30, "c": 20}[job["arch"]] + job["seed"]
    return {"arch": job["arch"], "seed": job["seed"], "val_mAP": value - 5, "test_mAP": value,
            "wall_seconds": 1.0, "overrides": job["tag"]}


def test_the_runner_appends_rows_and_resumes_after_a_failure(tmp_path):
    csv_path = tmp_path / "gt.csv"
    archs = [(k, _Genotype(k)) for k in ("a", "b", "c")]
    jobs = pending_jobs(archs, [0, 1], read_rows(csv_path), tag="")
    with pytest.raises(RuntimeError, match="killed"):  # the third job dies: two rows are kept
        run_ground_truth(jobs, _fake_train, csv_path, base={"tag": "", "fail_on": "c"})
    assert [(r["arch"], r["seed"]) for r in read_rows(csv_path)] == [("a", "0"), ("b", "0")]
    jobs = pending_jobs(archs, [0, 1], read_rows(csv_path), tag="")
    assert len(jobs) == 4
    assert run_ground_truth(jobs, _fake_train, csv_path, base={"tag": ""}) == 4
    rows = read_rows(csv_path)
    assert len(rows) == 6 and list(rows[0]) == GT_FIELDS
    assert pending_jobs(archs, [0, 1], rows, tag="") == []
    truth = Truth.from_rows(rows)
    assert truth.best.key == "a" and truth.archs["a"].test == 40.5


def test_append_row_writes_one_header(tmp_path):
    path = tmp_path / "x.csv"
    append_row(path, {"a": 1, "b": 2}, ["a", "b"])
    append_row(path, {"a": 3, "b": 4, "extra": 5}, ["a", "b"])
    assert path.read_text().splitlines() == ["a,b", "1,2", "3,4"]


def test_append_row_refuses_a_file_with_other_columns(tmp_path):
    path = tmp_path / "x.csv"
    append_row(path, {"a": 1, "b": 2}, ["a", "b"])
    with pytest.raises(UserError, match="columns"):
        append_row(path, {"a": 3, "b": 4, "c": 5}, ["a", "b", "c"])
    assert path.read_text().splitlines() == ["a,b", "1,2"]


def test_the_ground_truth_report_compares_two_recipes_with_their_noise_ceiling():
    from bench.ground_truth import compare

    full = [dict(r, overrides="") for r in _recipe(1.0, 0.1).rows]
    cheap = [dict(r, overrides="--epochs 6") for r in _recipe(1.0, 0.1).rows]
    text = compare(Truth.from_rows(cheap), "--epochs 6", full + cheap, "")
    assert "test mAP: Kendall tau 1.00 over 12 architectures; same best: yes" in text
    assert "two recipes ranking alike would show tau 1.00" in text
    assert "the observed 1.00 is within what the noise allows" in text
    text = compare(Truth.from_rows(cheap), "--epochs 6", full, "", " in other.csv")
    assert text.startswith("rank agreement of '--epochs 6' with '' in other.csv:")
    reversed_ = [dict(r, test_mAP=str(200 - float(r["test_mAP"]))) for r in cheap]
    text = compare(Truth.from_rows(reversed_), "--epochs 6", full + reversed_, "")
    assert "the observed -1.00 is below that range: the recipes rank differently" in text
    one_each = [r for r in full + cheap if r["seed"] == "0"]
    text = compare(Truth.from_rows([r for r in one_each if r["overrides"]]), "--epochs 6",
                   one_each, "")
    assert "noise ceiling: not computed (neither recipe has two seeds of two" in text


def test_a_ground_truth_csv_holds_the_retrains_of_one_backbone_file():
    rows = [{"arch": "a", "backbone_sha256": "abc"}, {"arch": "b", "backbone_sha256": "abc"}]
    check_one_backbone(rows, "abc", "gt.csv")
    check_one_backbone([], "def", "gt.csv")
    with pytest.raises(UserError, match=r"gt.csv holds retrains from another pretrained backbone "
                       r"file \(abc\) than this run's \(def\): write to another --csv"):
        check_one_backbone(rows, "def", "gt.csv")
    with pytest.raises(UserError, match=r"\(unrecorded\) than this run's \(none\)"):
        check_one_backbone([{"arch": "a"}], "", "gt.csv")


def test_ground_truth_py_refuses_another_backbone_or_other_columns_before_training(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    csv_path = tmp_path / "gt.csv"
    append_row(csv_path, {"arch": "layer3=se layer4=se", "seed": 0, "overrides": "",
                          "backbone_sha256": "abc"}, GT_FIELDS)
    command = [sys.executable, str(root / "bench" / "ground_truth.py"), "--set",
               "backbone.weights=none", "--archs", "1", "--seeds", "0", "--csv", str(csv_path),
               "--out", str(tmp_path / "runs")]
    got = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert got.returncode == 1, got.stderr
    assert got.stderr.strip().splitlines()[-1] == (
        f"error: {csv_path} holds retrains from another pretrained backbone file (abc) than this "
        "run's (none): write to another --csv, e.g. one named after the backbone")
    csv_path.write_text("arch,seed\n")
    got = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert got.returncode == 1 and "its columns (arch, seed) are not this writer's" in got.stderr
    assert not (tmp_path / "runs").exists() and csv_path.read_text() == "arch,seed\n"


def test_a_table_part_way_through_a_seed_is_compared_without_that_seeds_offset():
    from nas_reid.search.quality import arch_effects

    rows = _recipe(1.0, 0.0, offset=3.0).rows  # seed 1 lifts all by 3 points; truth a < b < ...
    partial = Truth.from_rows([r for r in rows if r["seed"] == "0" or r["arch"] in "ab"])
    assert partial.archs["b"].test > partial.archs["c"].test  # plain means: b lifted above c
    effects = arch_effects(partial)
    assert effects["b"] < effects["c"] and effects["b"] - effects["a"] == pytest.approx(1.0)
    full = Truth.from_rows(rows)
    assert recipe_agreement(full, partial)["tau"] == pytest.approx(1.0)


def test_ground_truth_rows_are_keyed_by_the_precision_they_trained_in():
    from bench.ground_truth import complete_tag, resolved_precision

    fp32 = ["precision.bf16=false", "precision.channels_last=false"]
    assert resolved_precision("synthetic", [], "cpu") == fp32
    assert resolved_precision("synthetic", [], "cuda:0") == [
        "precision.bf16=true", "precision.channels_last=true"]
    assert resolved_precision("synthetic", ["precision.bf16=false"], "cuda") == [
        "precision.channels_last=true"]
    assert complete_tag("", "synthetic", "cpu") == " ".join(fp32)
    assert complete_tag("--epochs 6", "synthetic", "cpu") == " ".join(fp32) + " --epochs 6"
    cheap = "precision.bf16=true precision.channels_last=true --epochs 6"  # the first table's
    assert complete_tag(cheap, "synthetic", "cpu") == cheap
