"""Tests of the Market-1501 ranking metrics, the distances, and the CUHK03 classic CMC."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.reference import evaluate_reference
from nas_reid.errors import EvaluationError, UserError
from nas_reid.evaluation import (
    evaluate_cuhk03_classic,
    evaluate_features,
    evaluate_ranking,
    pairwise_distance,
)

from nas_reid.evaluation import ranking as ranking_mod
GOLDEN = Path(__file__).parent / "golden" / "ranking_golden.json"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def assert_same(ours, ref, keys=("mAP", "mINP"), tol=1e-12):
    assert np.array_equal(ours["cmc"], ref["cmc"]), (ours["cmc"], ref["cmc"])
    for key in keys:
        assert abs(ours[key] - ref[key]) <= tol, (key, ours[key], ref[key])
    assert ours["num_valid_queries"] == ref["num_valid_queries"]
    assert ours["num_skipped_queries"] == ref["num_skipped_queries"]


def random_problem(rng, integer_distances=False, distractors=True):
    """Random labels (some queries without valid match), optionally integer distances (ties)."""
    num_q = int(rng.integers(1, 40))
    num_g = int(rng.integers(1, 120))
    num_ids = int(rng.integers(1, 20))
    num_cams = int(rng.integers(1, 5))
    q_pids = rng.integers(1, num_ids + 1, num_q)
    g_pids = rng.integers(0 if distractors else 1, num_ids + 1, num_g)  # 0 = distractor
    q_cams = rng.integers(0, num_cams, num_q)
    g_cams = rng.integers(0, num_cams, num_g)
    if integer_distances:
        distmat = rng.integers(0, 4, (num_q, num_g)).astype(np.float32)
    else:
        distmat = rng.random((num_q, num_g))
    return distmat, q_pids, g_pids, q_cams, g_cams


@pytest.fixture(params=["auto", "sparse", "dense"])
def path(request, monkeypatch):
    """Run a test through the automatic choice, or force the sparse / dense bucketing."""
    ratio = {"auto": ranking_mod._SPARSE_RATIO, "sparse": float("inf"), "dense": -1.0}
    monkeypatch.setattr(ranking_mod, "_SPARSE_RATIO", ratio[request.param])
    return request.param


# --------------------------------------------------------------------------------------------
# golden values from torchreid / fast-reid / the Market MATLAB AP


def golden_problem(recipe):
    rng = np.random.default_rng(recipe["seed"])
    num_q, num_g = recipe["num_query"], recipe["num_gallery"]
    q_pids = rng.integers(0, recipe["num_query_ids"], num_q)
    q_camids = rng.integers(0, recipe["num_cams"], num_q)
    g_pids = rng.integers(0, recipe["num_gallery_ids"], num_g)
    g_camids = rng.integers(0, recipe["num_cams"], num_g)
    distmat = rng.random((num_q, num_g))
    distmat *= np.where(q_pids[:, None] == g_pids[None, :], recipe["same_id_scale"], 1.0)
    return distmat, q_pids, g_pids, q_camids, g_camids


GOLDEN_CASES = json.loads(GOLDEN.read_text())["cases"]


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=[c["name"] for c in GOLDEN_CASES])
@pytest.mark.parametrize("as_torch,chunk_size", [(False, None), (True, 7)])
def test_golden_torchreid_fastreid(case, as_torch, chunk_size, path):
    distmat, qp, gp, qc, gc = golden_problem(case["recipe"])
    assert all(len(np.unique(row)) == len(row) for row in distmat)  # tie-free, as generated
    if as_torch:
        distmat, qp, gp = torch.from_numpy(distmat), torch.from_numpy(qp), torch.from_numpy(gp)
    out = evaluate_ranking(distmat, qp, gp, qc, gc, case["max_rank"], chunk_size=chunk_size,
                           official_ap=True)
    golden_cmc = np.array(case["cmc"], dtype=np.float32)  # torchreid returns float32
    assert np.array_equal(out["cmc"].astype(np.float32), golden_cmc)
    valid = case["num_valid_queries"]
    hits = np.rint(golden_cmc.astype(np.float64) * valid)  # queries with a hit within rank k
    assert np.array_equal(np.rint(out["cmc"] * valid), hits)
    assert abs(out["mAP"] - case["mAP"]) <= 1e-6
    assert abs(out["mINP"] - case["mINP"]) <= 1e-6
    assert abs(out["mAP_official"] - case["mAP_official"]) <= 1e-6
    assert out["num_valid_queries"] == valid
    assert out["num_skipped_queries"] == case["num_skipped_queries"]


# --------------------------------------------------------------------------------------------
# hand-computed case


def hand_case():
    # gallery:   g0        g1        g2        g3        g4        g5
    g_pids = np.array([1, 2, 1, 3, 1, 0])  # 0 = distractor
    g_cams = np.array([0, 1, 1, 0, 2, 1])
    q_pids = np.array([1, 2, 3])
    q_cams = np.array([0, 1, 1])
    distmat = np.array([
        # q0 (pid 1, cam 0): g0 junk; kept order g5 g1 g2(+) g3 g4(+) -> positives at ranks 2, 4
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.05],
        # q1 (pid 2, cam 1): its only gallery image g1 is junk -> skipped
        [0.5, 0.1, 0.2, 0.3, 0.4, 0.6],
        # q2 (pid 3, cam 1): g4 first, then a tie broken by gallery index: g0 g1 g2 g3(+) g5
        [0.9, 0.9, 0.9, 0.9, 0.1, 0.9],
    ], dtype=np.float32)
    return distmat, q_pids, g_pids, q_cams, g_cams


def test_hand_computed(path):
    out = evaluate_ranking(*hand_case(), max_rank=7, official_ap=True)  # 7 > 6 gallery items
    # q0: CMC 0,0,1,...; AP = (1/3 + 2/5)/2 = 11/30; INP = 2/5;
    #     trapezoid AP = (0 + 1/3)/2/2 + (1/4 + 2/5)/2/2 = 59/240
    # q2: CMC 0,0,0,0,1,...; AP = 1/5; INP = 1/5; trapezoid AP = (0 + 1/5)/2 = 1/10
    assert out["cmc"].tolist() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0]  # padded past 6 items
    assert out["cmc"].dtype == np.float64 and out["cmc"].shape == (7,)
    assert out["mAP"] == pytest.approx(float((Fraction(11, 30) + Fraction(1, 5)) / 2), abs=1e-15)
    assert out["mINP"] == pytest.approx(float((Fraction(2, 5) + Fraction(1, 5)) / 2), abs=1e-15)
    assert out["mAP_official"] == pytest.approx(float((Fraction(59, 240) + Fraction(1, 10)) / 2),
                                                abs=1e-15)
    assert out["num_valid_queries"] == 2
    assert out["num_skipped_queries"] == 1
    assert "mAP_official" not in evaluate_ranking(*hand_case(), max_rank=7)


def test_tie_with_positive_broken_by_gallery_index(path):
    # one positive (index 2) tied with negatives at indices 0, 1 (before) and 3 (after)
    distmat = np.array([[1.0, 1.0, 1.0, 1.0, 2.0]])
    out = evaluate_ranking(distmat, [5], [1, 2, 5, 3, 4], [0], [1, 1, 1, 1, 1], max_rank=5)
    assert out["cmc"].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert out["mAP"] == pytest.approx(1 / 3)
    # two positives tied with each other and with a negative in between
    distmat = np.array([[0.0, 0.0, 0.0]])
    out = evaluate_ranking(distmat, [5], [5, 1, 5], [0], [1, 1, 1], max_rank=3)
    assert out["cmc"].tolist() == [1.0, 1.0, 1.0]
    assert out["mAP"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert out["mINP"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------------------------
# against the numpy reference on random problems


@pytest.mark.parametrize("integer_distances", [False, True], ids=["continuous", "ties"])
def test_random_vs_reference(integer_distances, path):
    rng = np.random.default_rng(1234 + integer_distances)
    compared = 0
    for _ in range(60):
        distmat, qp, gp, qc, gc = random_problem(rng, integer_distances)
        max_rank = int(rng.integers(1, 150))  # often larger than the gallery
        try:
            ref = evaluate_reference(distmat, qp, gp, qc, gc, max_rank, official_ap=True)
        except ValueError:
            with pytest.raises(EvaluationError):
                evaluate_ranking(distmat, qp, gp, qc, gc, max_rank)
            continue
        chunk = int(rng.integers(1, 50))
        ours = evaluate_ranking(distmat, qp, gp, qc, gc, max_rank, chunk_size=chunk,
                                official_ap=True)
        assert_same(ours, ref, keys=("mAP", "mINP", "mAP_official"))
        assert ours["cmc"].shape == (max_rank,)
        compared += 1
    assert compared > 30


def test_larger_problem_vs_reference(path):
    """Realistic-ish shape: clustered distances, distractors, many positives per query."""
    rng = np.random.default_rng(7)
    num_q, num_g = 150, 2000
    q_pids = rng.integers(1, 60, num_q)
    g_pids = np.concatenate([rng.integers(1, 60, num_g - 300), np.zeros(300, np.int64)])
    q_cams, g_cams = rng.integers(0, 6, num_q), rng.integers(0, 6, num_g)
    distmat = rng.random((num_q, num_g), dtype=np.float32)
    distmat *= np.where(q_pids[:, None] == g_pids[None, :], 0.2, 1.0).astype(np.float32)
    distmat[:, ::7] = np.round(distmat[:, ::7], 2)  # some exact ties too
    ref = evaluate_reference(distmat, q_pids, g_pids, q_cams, g_cams, 50, official_ap=True)
    for chunk in (None, 1, 33, 1000):
        ours = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, chunk_size=chunk,
                                official_ap=True)
        assert_same(ours, ref, keys=("mAP", "mINP", "mAP_official"))


def test_numpy_and_torch_inputs_identical():
    rng = np.random.default_rng(3)
    distmat, qp, gp, qc, gc = random_problem(rng, integer_distances=True)
    while True:
        try:
            base = evaluate_ranking(distmat, qp, gp, qc, gc, official_ap=True)
            break
        except EvaluationError:
            distmat, qp, gp, qc, gc = random_problem(rng, integer_distances=True)
    variants = [
        (torch.from_numpy(distmat), torch.from_numpy(qp), torch.from_numpy(gp), qc, gc),
        (distmat.astype(np.float64), qp.tolist(), gp.tolist(), qc.tolist(), gc.tolist()),
        (distmat.astype(np.int32), qp.astype(np.int32), gp, qc.astype(np.uint8), gc),
        (torch.from_numpy(distmat).half(), qp, gp, torch.from_numpy(qc), torch.from_numpy(gc)),
        (np.asfortranarray(distmat), qp, gp, qc, gc),
        (distmat[:, ::-1][:, ::-1], qp, gp, qc, gc),
    ]
    for d, a, b, c, e in variants:
        out = evaluate_ranking(d, a, b, c, e, official_ap=True)
        assert_same(out, base, keys=("mAP", "mINP", "mAP_official"), tol=0.0)
    readonly = distmat.copy()
    readonly.setflags(write=False)
    assert_same(evaluate_ranking(readonly, qp, gp, qc, gc), base, tol=0.0)


def test_string_ids_are_factorised():
    distmat, qp, gp, qc, gc = hand_case()
    base = evaluate_ranking(distmat, qp, gp, qc, gc)
    as_str = evaluate_ranking(distmat, [f"p{p}" for p in qp], [f"p{p}" for p in gp],
                              [f"c{c}" for c in qc], [f"c{c}" for c in gc])
    assert_same(as_str, base, tol=0.0)


def test_chunk_size_does_not_change_results(path):
    rng = np.random.default_rng(11)
    distmat = rng.integers(0, 30, (97, 400)).astype(np.float64)
    qp, gp = rng.integers(0, 25, 97), rng.integers(0, 25, 400)
    qc, gc = rng.integers(0, 3, 97), rng.integers(0, 3, 400)
    base = evaluate_ranking(distmat, qp, gp, qc, gc, official_ap=True)
    for chunk in (1, 2, 10, 96, 97, 500):
        out = evaluate_ranking(distmat, qp, gp, qc, gc, chunk_size=chunk, official_ap=True)
        assert_same(out, base, keys=("mAP", "mINP", "mAP_official"), tol=1e-15)


def test_official_ap_never_above_step_ap():
    rng = np.random.default_rng(5)
    for _ in range(20):
        distmat, qp, gp, qc, gc = random_problem(rng)
        try:
            out = evaluate_ranking(distmat, qp, gp, qc, gc, official_ap=True)
        except EvaluationError:
            continue
        assert out["mAP_official"] <= out["mAP"] + 1e-12
        assert 0.0 < out["mINP"] <= 1.0 and 0.0 < out["mAP_official"]


def test_perfect_ranking_scores_one():
    q_pids = np.arange(10)
    g_pids = np.repeat(np.arange(10), 3)
    distmat = (q_pids[:, None] != g_pids[None, :]).astype(np.float32)
    out = evaluate_ranking(distmat, q_pids, g_pids, np.zeros(10), np.ones(30), official_ap=True)
    assert np.all(out["cmc"] == 1.0)
    assert out["mAP"] == out["mINP"] == out["mAP_official"] == 1.0


# --------------------------------------------------------------------------------------------
# errors


def test_error_no_valid_query():
    distmat = np.ones((2, 3))
    with pytest.raises(EvaluationError, match="no query has a valid match"):
        evaluate_ranking(distmat, [1, 2], [1, 2, 3], [0, 0], [0, 0, 5])  # same camera only
    with pytest.raises(EvaluationError, match="no query has a valid match"):
        evaluate_ranking(distmat, [7, 8], [1, 2, 3], [0, 0], [1, 1, 1])  # ids absent
    with pytest.raises(EvaluationError):
        evaluate_ranking(np.ones((0, 3)), [], [1, 2, 3], [], [1, 1, 1])
    assert issubclass(EvaluationError, UserError)


def test_error_shapes_and_values():
    distmat, qp, gp, qc, gc = hand_case()
    with pytest.raises(EvaluationError, match="q_pids has 2 entries"):
        evaluate_ranking(distmat, qp[:2], gp, qc, gc)
    with pytest.raises(EvaluationError, match="g_camids has 5 entries"):
        evaluate_ranking(distmat, qp, gp, qc, gc[:5])
    with pytest.raises(EvaluationError, match="2-D"):
        evaluate_ranking(distmat[0], qp, gp, qc, gc)
    with pytest.raises(EvaluationError, match="1-D"):
        evaluate_ranking(distmat, qp[:, None], gp, qc, gc)
    bad = distmat.copy()
    bad[2, 3] = np.nan
    with pytest.raises(EvaluationError, match="NaN.*row 2"):
        evaluate_ranking(bad, qp, gp, qc, gc, chunk_size=1)
    with pytest.raises(EvaluationError, match="max_rank"):
        evaluate_ranking(distmat, qp, gp, qc, gc, max_rank=0)
    with pytest.raises(EvaluationError, match="chunk_size"):
        evaluate_ranking(distmat, qp, gp, qc, gc, chunk_size=0)
    with pytest.raises(EvaluationError, match="non-integral"):
        evaluate_ranking(distmat, qp + 0.5, gp, qc, gc)
    integral = evaluate_ranking(distmat, qp.astype(float), gp, torch.from_numpy(qc).float(), gc)
    assert_same(integral, evaluate_ranking(distmat, qp, gp, qc, gc), tol=0.0)


# --------------------------------------------------------------------------------------------
# distances and the feature-level entry


def test_pairwise_distance_definitions():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 8)), rng.standard_normal((7, 8))
    cos = pairwise_distance(x, y, "cosine").numpy()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    yn = y / np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(cos, 1.0 - xn @ yn.T, atol=1e-12)
    euc = pairwise_distance(torch.from_numpy(x), torch.from_numpy(y), "euclidean").numpy()
    np.testing.assert_allclose(euc, ((x[:, None] - y[None]) ** 2).sum(-1), atol=1e-10)
    assert pairwise_distance(x.astype(np.float32), y, "cosine").dtype == torch.float32
    with pytest.raises(EvaluationError, match="metric"):
        pairwise_distance(x, y, "manhattan")
    with pytest.raises(EvaluationError, match="dimensions differ"):
        pairwise_distance(x, y[:, :4])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_feature_entry_equals_distance_entry(metric):
    rng = np.random.default_rng(42)
    num_q, num_g, num_ids = 120, 700, 40
    q_pids, g_pids = rng.integers(0, num_ids, num_q), rng.integers(0, num_ids, num_g)
    q_cams, g_cams = rng.integers(0, 4, num_q), rng.integers(0, 4, num_g)
    centers = rng.standard_normal((num_ids, 16))
    qf = (centers[q_pids] + 1.2 * rng.standard_normal((num_q, 16))).astype(np.float32)
    gf = (centers[g_pids] + 1.2 * rng.standard_normal((num_g, 16))).astype(np.float32)
    distmat = pairwise_distance(qf, gf, metric)
    base = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, official_ap=True)
    assert 0.2 < base["mAP"] < 0.95  # a meaningful problem
    for chunk in (None, 1, 17):
        out = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                chunk_size=chunk, official_ap=True)
        assert_same(out, base, keys=("mAP", "mINP", "mAP_official"), tol=1e-12)
    ref = evaluate_reference(distmat.numpy(), q_pids, g_pids, q_cams, g_cams, official_ap=True)
    assert_same(base, ref, keys=("mAP", "mINP", "mAP_official"))


def test_squared_and_plain_euclidean_rank_the_same():
    rng = np.random.default_rng(8)
    qf, gf = rng.standard_normal((30, 6)), rng.standard_normal((200, 6))
    qp, gp = rng.integers(0, 10, 30), rng.integers(0, 10, 200)
    qc, gc = rng.integers(0, 2, 30), rng.integers(0, 2, 200)
    squared = pairwise_distance(qf, gf, "euclidean")
    a = evaluate_ranking(squared, qp, gp, qc, gc)
    b = evaluate_ranking(np.sqrt(((qf[:, None] - gf[None]) ** 2).sum(-1)), qp, gp, qc, gc)
    assert_same(a, b)


def test_feature_entry_errors():
    x = np.zeros((3, 4), dtype=np.float32)
    with pytest.raises(EvaluationError, match="dimensions differ"):
        evaluate_features(x, np.zeros((5, 3)), [0] * 3, [0] * 5, [0] * 3, [1] * 5)
    with pytest.raises(EvaluationError, match="g_pids has 4 entries"):
        evaluate_features(x, np.zeros((5, 4)), [0] * 3, [0] * 4, [0] * 3, [1] * 5)
    with pytest.raises(EvaluationError, match="metric"):
        evaluate_features(x, x, [0] * 3, [0] * 3, [0] * 3, [1] * 3, metric="l1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(2)
    distmat, qp, gp, qc, gc = golden_problem(GOLDEN_CASES[1]["recipe"])
    cpu = evaluate_ranking(distmat, qp, gp, qc, gc, official_ap=True)
    gpu = evaluate_ranking(torch.from_numpy(distmat).cuda(), qp, gp, qc, gc, official_ap=True)
    assert_same(gpu, cpu, keys=("mAP", "mINP", "mAP_official"), tol=1e-12)
    qf = rng.standard_normal((50, 8)).astype(np.float32)
    gf = rng.standard_normal((300, 8)).astype(np.float32)
    qp, gp = rng.integers(0, 10, 50), rng.integers(0, 10, 300)
    qc, gc = rng.integers(0, 3, 50), rng.integers(0, 3, 300)
    a = evaluate_features(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda(), qp, gp, qc, gc)
    distmat = pairwise_distance(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda())
    b = evaluate_ranking(distmat, qp, gp, qc, gc)
    assert_same(a, b)


# --------------------------------------------------------------------------------------------
# CUHK03 classic single-gallery-shot protocol


def test_cuhk03_seeded_and_chunk_independent():
    rng = np.random.default_rng(9)
    distmat = rng.random((40, 300))
    qp, gp = rng.integers(0, 30, 40), rng.integers(0, 30, 300)
    qc, gc = rng.integers(0, 2, 40), rng.integers(0, 2, 300)
    a = evaluate_cuhk03_classic(distmat, qp, gp, qc, gc, seed=3)
    b = evaluate_cuhk03_classic(torch.from_numpy(distmat), qp, gp, qc, gc, seed=3, chunk_size=7)
    assert np.array_equal(a["cmc"], b["cmc"])
    assert a["num_repeats"] == 10 and a["cmc"].shape == (50,)
    c = evaluate_cuhk03_classic(distmat, qp, gp, qc, gc, seed=4)
    assert not np.array_equal(a["cmc"], c["cmc"])
    assert a["num_valid_queries"] == evaluate_ranking(distmat, qp, gp, qc, gc)["num_valid_queries"]
    assert np.all(np.diff(a["cmc"]) >= 0) and a["cmc"][-1] == 1.0


def test_cuhk03_one_image_per_identity_equals_plain_cmc():
    rng = np.random.default_rng(10)
    g_pids = rng.permutation(60)  # one gallery image per identity
    g_cams = np.ones(60, dtype=np.int64)
    q_pids = rng.integers(0, 70, 50)  # ids >= 60 have no match
    q_cams = np.zeros(50, dtype=np.int64)
    distmat = rng.integers(0, 5, (50, 60)).astype(np.float64)  # ties: stable order in both
    plain = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=70)
    shot = evaluate_cuhk03_classic(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=70,
                                   num_repeats=3, seed=1)
    assert np.allclose(shot["cmc"], plain["cmc"], atol=1e-15, rtol=0)
    assert shot["num_valid_queries"] == plain["num_valid_queries"]
    assert shot["num_skipped_queries"] == plain["num_skipped_queries"]


def test_cuhk03_sampling_hand_case():
    # positive identity 1 has two images at 0.1 and 0.5; identity 2 one image at 0.3;
    # a same-camera image of identity 1 (junk) at 0.0 is ignored. Rank 1 iff 0.1 is drawn.
    distmat = np.array([[0.0, 0.1, 0.3, 0.5]])
    out = evaluate_cuhk03_classic(distmat, [1], [1, 1, 2, 1], [0], [0, 1, 1, 1], max_rank=3,
                                  num_repeats=2000, seed=0)
    assert 0.45 < out["cmc"][0] < 0.55
    assert out["cmc"][1] == out["cmc"][2] == 1.0


def test_cuhk03_errors():
    with pytest.raises(EvaluationError, match="no query has a valid match"):
        evaluate_cuhk03_classic(np.ones((1, 2)), [1], [1, 2], [0], [0, 0])
    with pytest.raises(EvaluationError, match="num_repeats"):
        evaluate_cuhk03_classic(np.ones((1, 2)), [1], [1, 2], [0], [1, 1], num_repeats=0)
