"""Plain numpy reference implementations, used by the benchmarks and by the tests.

Written straight from the algorithm descriptions, favouring obviousness over speed:

* :func:`evaluate_reference`: Market-1501 ranking metrics, one query at a time (stable
  argsort, drop same-pid-same-camera junk, cumulative sums).
* :func:`rerank_reference`: k-reciprocal re-ranking (Zhong et al., CVPR 2017) as in the
  original code: full N x N distance, full argsort, a Python loop over the rows, dense V,
  inverted-index Jaccard for the query rows.
"""

from __future__ import annotations

import numpy as np


def evaluate_reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50,
                       official_ap=False):
    """Per-query loop; returns the same dict keys as ``nas_reid.evaluation.evaluate_ranking``.

    The CMC is padded with its last value when a query keeps fewer than ``max_rank`` items.
    Raises ValueError when no query has a valid match.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q = distmat.shape[0]
    cmc_sum = np.zeros(max_rank)
    ap_sum = inp_sum = oap_sum = 0.0
    num_valid = 0
    for i in range(num_q):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        same_cam = g_camids[order] == q_camids[i]
        keep = ~(same_pid & same_cam)
        hits = same_pid[keep].astype(np.int64)  # 1 where the kept item is a positive
        if not hits.any():
            continue
        num_valid += 1
        cum = np.cumsum(hits)
        cmc = np.minimum(cum, 1)
        if len(cmc) >= max_rank:
            cmc = cmc[:max_rank]
        else:
            cmc = np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])])
        cmc_sum += cmc
        hit_ranks = np.flatnonzero(hits)  # 0-based ranks of the positives
        num_pos = len(hit_ranks)
        precision_at_hits = cum[hit_ranks] / (hit_ranks + 1.0)
        ap_sum += precision_at_hits.sum() / num_pos
        inp_sum += num_pos / (hit_ranks[-1] + 1.0)
        if official_ap:
            # trapezoid rule of the Market-1501 MATLAB compute_AP.m
            ap = 0.0
            for k, r in enumerate(hit_ranks):
                before = 1.0 if r == 0 else k / r
                ap += (before + (k + 1) / (r + 1)) / 2.0 / num_pos
            oap_sum += ap
    if num_valid == 0:
        raise ValueError("no query has a valid match")
    out = {
        "cmc": cmc_sum / num_valid,
        "mAP": ap_sum / num_valid,
        "mINP": inp_sum / num_valid,
        "num_valid_queries": num_valid,
        "num_skipped_queries": num_q - num_valid,
    }
    if official_ap:
        out["mAP_official"] = oap_sum / num_valid
    return out


def _k_reciprocal_neighbours(initial_rank, i, k):
    """Members of i's top-(k+1) list whose own top-(k+1) list contains i."""
    forward = initial_rank[i, : k + 1]
    backward = initial_rank[forward, : k + 1]
    return forward[np.any(backward == i, axis=1)]


def rerank_reference(query_features, gallery_features, k1=20, k2=6, lambda_=0.3):
    """Original k-reciprocal re-ranking; returns the (Q, G) final distance (float64).

    Memory is O(N^2) with N = Q + G: the distance matrix, its argsort, V (and V after query
    expansion) are all dense N x N.
    """
    qf = np.asarray(query_features, dtype=np.float64)
    gf = np.asarray(gallery_features, dtype=np.float64)
    num_q = qf.shape[0]
    feats = np.concatenate([qf, gf], axis=0)
    n = feats.shape[0]

    # 1. squared Euclidean distance over query + gallery, each row divided by its max
    sq = np.sum(feats ** 2, axis=1)
    dist = sq[:, None] + sq[None, :] - 2.0 * feats @ feats.T
    dist = dist / np.max(dist, axis=1, keepdims=True)
    initial_rank = np.argsort(dist, axis=1, kind="stable")

    # 2-4. k-reciprocal sets, expanded, encoded as exp(-d) weights summing to 1
    half = int(round(k1 / 2))
    V = np.zeros((n, n))
    for i in range(n):
        recip = _k_reciprocal_neighbours(initial_rank, i, k1)
        expansion = [recip]
        for c in recip:
            cand = _k_reciprocal_neighbours(initial_rank, c, half)
            if len(np.intersect1d(cand, recip)) > 2.0 / 3.0 * len(cand):
                expansion.append(cand)
        members = np.unique(np.concatenate(expansion))
        weight = np.exp(-dist[i, members])
        V[i, members] = weight / weight.sum()

    # 5. local query expansion over the top-k2 neighbours (self included)
    if k2 != 1:
        V_qe = np.zeros_like(V)
        for i in range(n):
            V_qe[i] = V[initial_rank[i, :k2]].mean(axis=0)
        V = V_qe

    # 6. Jaccard distance of the query rows through an inverted index over the columns
    inverted = [np.flatnonzero(V[:, col]) for col in range(n)]
    jaccard = np.zeros((num_q, n))
    for i in range(num_q):
        mins = np.zeros(n)
        for col in np.flatnonzero(V[i]):
            rows = inverted[col]
            mins[rows] += np.minimum(V[i, col], V[rows, col])
        jaccard[i] = 1.0 - mins / (2.0 - mins)

    # 7. mix with the normalised original distance, keep the query x gallery block
    final = (1.0 - lambda_) * jaccard + lambda_ * dist[:num_q]
    return final[:, num_q:]
