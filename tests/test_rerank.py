"""Tests of the vectorised k-reciprocal re-ranking against the plain numpy reference."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from bench.reference import evaluate_reference, rerank_reference
from nas_reid.errors import EvaluationError
from nas_reid.evaluation import evaluate_ranking, rerank

from nas_reid.evaluation import k_reciprocal as rerank_mod


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def clustered(num_q, num_g, dim=16, num_ids=12, noise=0.8, seed=0):
    """Identity-clustered float64 features (continuous: no exact ties in the kNN lists)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, num_ids, num_q + num_g)
    cams = rng.integers(0, 3, num_q + num_g)
    feats = rng.standard_normal((num_ids, dim))[ids]
    feats += noise * rng.standard_normal((num_q + num_g, dim))
    return feats[:num_q], feats[num_q:], ids[:num_q], ids[num_q:], cams[:num_q], cams[num_q:]


def metrics(distmat, qp, gp, qc, gc):
    out = evaluate_reference(np.asarray(distmat), qp, gp, qc, gc)
    return np.array([out["cmc"][0], out["mAP"], out["mINP"]])


@pytest.mark.parametrize("num_q,num_g,k1,k2,lam", [
    (40, 160, 20, 6, 0.3),  # the original parameters
    (30, 90, 7, 3, 0.5),  # odd k1: round(3.5) = 4 (half to even)
    (25, 100, 13, 1, 0.3),  # k2 = 1: no local query expansion; round(6.5) = 6
    (4, 10, 20, 6, 0.3),  # fewer items than k1 + 1
])
def test_matches_reference(num_q, num_g, k1, k2, lam):
    qf, gf, qp, gp, qc, gc = clustered(num_q, num_g, seed=num_q)
    ref = rerank_reference(qf, gf, k1, k2, lam)
    ours64 = rerank(qf, gf, k1, k2, lam)
    assert ours64.dtype == torch.float64 and ours64.shape == (num_q, num_g)
    np.testing.assert_allclose(ours64.numpy(), ref, atol=1e-10, rtol=0)
    ours32 = rerank(torch.from_numpy(qf).float(), torch.from_numpy(gf).float(), k1, k2, lam)
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.numpy(), ref, atol=1e-4, rtol=0)
    if len(np.intersect1d(qp, gp)):
        np.testing.assert_allclose(metrics(ours32, qp, gp, qc, gc), metrics(ref, qp, gp, qc, gc),
                                   atol=1e-3)


def test_float32_and_float64_consistent_and_reranking_helps():
    qf, gf, qp, gp, qc, gc = clustered(60, 300, dim=32, num_ids=30, noise=1.1, seed=5)
    d64 = rerank(qf, gf).numpy()
    d32 = rerank(qf.astype(np.float32), gf.astype(np.float32)).numpy()
    np.testing.assert_allclose(d32, d64, atol=1e-4, rtol=0)
    m64, m32 = metrics(d64, qp, gp, qc, gc), metrics(d32, qp, gp, qc, gc)
    np.testing.assert_allclose(m32, m64, atol=1e-3)
    plain = metrics(((qf[:, None] - gf[None]) ** 2).sum(-1), qp, gp, qc, gc)
    assert m64[1] > plain[1]  # re-ranking improves mAP on clustered data


def test_lambda_one_is_row_normalised_original_distance():
    qf, gf, *_ = clustered(10, 40, seed=2)
    feats = np.concatenate([qf, gf])
    full = ((feats[:, None] - feats[None]) ** 2).sum(-1)
    expected = (full / full.max(axis=1, keepdims=True))[:10, 10:]
    np.testing.assert_allclose(rerank(qf, gf, lambda_=1.0).numpy(), expected, atol=1e-12)
    jaccard_only = rerank(qf, gf, lambda_=0.0).numpy()
    assert np.all((jaccard_only >= -1e-12) & (jaccard_only <= 1.0 + 1e-12))


def test_tiny_blocks_give_the_same_result(monkeypatch):
    """Every chunked loop (kNN rows, expansion, query expansion, join) split very finely."""
    qf, gf, *_ = clustered(30, 120, seed=4)
    base = rerank(qf, gf).numpy()
    monkeypatch.setattr(rerank_mod, "_BLOCK_ELEMENTS", 97)
    monkeypatch.setattr(rerank_mod, "_ENTRY_BLOCK", 50)
    np.testing.assert_allclose(rerank(qf, gf).numpy(), base, atol=1e-12, rtol=0)


def test_numpy_and_torch_inputs_and_empty():
    qf, gf, *_ = clustered(8, 30, seed=6)
    a = rerank(qf, gf, k1=5, k2=2)
    b = rerank(torch.from_numpy(qf), torch.from_numpy(gf), k1=5, k2=2)
    assert torch.equal(a, b)
    assert rerank(qf[:0], gf).shape == (0, 30)


def test_errors():
    qf, gf, *_ = clustered(5, 20, seed=7)
    with pytest.raises(EvaluationError, match="k1"):
        rerank(qf, gf, k1=0)
    with pytest.raises(EvaluationError, match="k2"):
        rerank(qf, gf, k2=0)
    with pytest.raises(EvaluationError, match="lambda_"):
        rerank(qf, gf, lambda_=1.5)
    with pytest.raises(EvaluationError, match="dimensions differ"):
        rerank(qf, gf[:, :3])
    bad = qf.copy()
    bad[0, 0] = np.nan
    with pytest.raises(EvaluationError, match="NaN"):
        rerank(bad, gf)


def test_reranked_tensor_evaluates_like_the_reference():
    qf, gf, qp, gp, qc, gc = clustered(30, 150, seed=8)
    ours = evaluate_ranking(rerank(torch.from_numpy(qf).float(), torch.from_numpy(gf).float()),
                            qp, gp, qc, gc)
    ref = evaluate_reference(rerank_reference(qf, gf), qp, gp, qc, gc)
    assert np.array_equal(ours["cmc"], ref["cmc"])
    assert abs(ours["mAP"] - ref["mAP"]) < 1e-3 and abs(ours["mINP"] - ref["mINP"]) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    qf, gf, *_ = clustered(50, 200, seed=9)
    cpu = rerank(qf, gf).numpy()
    gpu = rerank(torch.from_numpy(qf).cuda(), torch.from_numpy(gf).cuda()).cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, atol=1e-10, rtol=0)
