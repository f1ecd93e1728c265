"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), vectorised and memory-bounded.

Reproduces the original algorithm (person-re-ranking / BoT semantics, not torchreid's
double-squared variant), on the N = Q + G items of query + gallery:

1. base distance d = squared Euclidean distance of the given features, each row divided by
   its maximum over all N items;
2. R(i, k1): members of i's top-(k1+1) list (self included) whose own top-(k1+1) list
   contains i;
3. expansion: for each c in R(i, k1), R(c, round(k1/2)) is added when more than 2/3 of it
   lies in R(i, k1) (Python's round: half to even, as numpy's ``around``);
4. V[i, j] = exp(-d(i, j)) over the expanded set, normalised to sum to 1;
5. local query expansion (k2 != 1): V[i] = mean of V over i's top-k2 list (self included);
6. Jaccard distance of the query rows: 1 - m / (2 - m), m = sum_k min(V[i, k], V[j, k]);
7. final = (1 - lambda) * Jaccard + lambda * d, on the query x gallery block.

No N x N matrix is formed. Ties in the kNN lists are broken by ``topk``; on CUDA the sums run
in a nondeterministic order (differences at rounding level).
How it is computed: docs/evaluation.md, section `nas_reid.evaluation.k_reciprocal`.
"""

from __future__ import annotations

import numpy as np
import torch

from nas_reid.errors import EvaluationError
from nas_reid.evaluation.distance import _features

__all__ = ["rerank"]

# Work budget per block, in elements (distance rows, comparison tensors, gathered entries).
_BLOCK_ELEMENTS = 1 << 22
# Gathered sparse entries per block of the query expansion and of the Jaccard join (~80 bytes
# each at peak: int64 indices, keys, values).
_ENTRY_BLOCK = 1 << 19


def _int_param(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EvaluationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def rerank(query_features, gallery_features, k1: int = 20, k2: int = 6,
           lambda_: float = 0.3) -> torch.Tensor:
    """Re-ranked (Q, G) distance matrix, on the query features' device and dtype.

    Args:
        query_features, gallery_features: (Q, D) and (G, D) numpy arrays or tensors (CPU or
            CUDA). The base distance is their squared Euclidean distance: pass L2-normalised
            features to get BoT's setting.
        k1, k2, lambda_: the original parameters (defaults 20, 6, 0.3). ``k2=1`` skips the
            local query expansion; ``lambda_=1`` returns the row-normalised base distance.

    Memory (N = Q + G), no N x N matrix is ever allocated: the output Q x G (which holds the
    query x gallery distances meanwhile), the kNN lists (N x (k1+1) indices and distances),
    the sparse V (~20 entries per row) and its query expansion (~90 per row at k2=6), 20
    bytes per entry, plus work blocks of ~4M elements / ~0.5M gathered entries (~100-200 MB).
    Measured at Market-1501 size (N = 19,281, 256-d): ~400 MB above the inputs, 204 MB of it
    the output.
    """
    k1 = _int_param(k1, "k1", 1)
    k2 = _int_param(k2, "k2", 1)
    lam = float(lambda_)
    if not 0.0 <= lam <= 1.0:
        raise EvaluationError(f"lambda_ must be in [0, 1], got {lambda_!r}")
    qf = _features(query_features, "query_features")
    gf = _features(gallery_features, "gallery_features").to(device=qf.device, dtype=qf.dtype)
    if qf.shape[1] != gf.shape[1]:
        raise EvaluationError(
            f"feature dimensions differ: query has {qf.shape[1]}, gallery has {gf.shape[1]}"
        )
    Q, G = qf.shape[0], gf.shape[0]
    if Q == 0 or G == 0:
        return torch.zeros((Q, G), dtype=qf.dtype, device=qf.device)
    with torch.no_grad():
        x = torch.cat([qf, gf], dim=0)
        if not bool(torch.isfinite(x).all()):
            raise EvaluationError("features contain NaN or infinite values")
        return _rerank(x, Q, k1, k2, lam)


def _sqdist(a, aa, b, bb):
    """Squared Euclidean distance block, (aa_i + bb_j) - 2 a_i.b_j (aa, bb: squared norms)."""
    d = torch.addmm(bb[None, :], a, b.T, beta=1.0, alpha=-2.0)
    d += aa[:, None]
    return d


def _rerank(x, Q, k1, k2, lam):
    N = x.shape[0]
    dev, dt = x.device, x.dtype
    sq = (x * x).sum(dim=1)
    half = int(round(k1 / 2))
    kf = min(k1 + 1, N)  # top-(k1+1) list length
    kh = min(half + 1, N)  # top-(round(k1/2)+1) list length
    kq = min(k2, N)  # local query expansion list length
    kk = max(kf, kq)

    # 1. kNN lists (indices and distances) and row maxima, by blocks of rows; the query x
    #    gallery block of the (not yet normalised) distance is kept in the output buffer
    nbr = torch.empty((N, kk), dtype=torch.int64, device=dev)
    nbr_d = torch.empty((N, kk), dtype=dt, device=dev)
    rowmax = torch.empty(N, dtype=dt, device=dev)
    out = torch.empty((Q, N - Q), dtype=dt, device=dev)
    step = max(1, _BLOCK_ELEMENTS // N)
    for s in range(0, N, step):
        e = min(N, s + step)
        d = _sqdist(x[s:e], sq[s:e], x, sq)
        rowmax[s:e] = d.max(dim=1).values
        top = d.topk(kk, dim=1, largest=False, sorted=True)
        nbr[s:e], nbr_d[s:e] = top.indices, top.values
        if s < Q:
            out[s:min(e, Q)] = d[: min(e, Q) - s, Q:]
        del d, top

    # 2-4. k-reciprocal sets, expansion, V as sparse rows
    rows, cols, vals = _build_v(x, sq, rowmax, nbr, nbr_d, kf, kh)
    del nbr_d
    crow = _row_pointers(rows, N)

    # 5. local query expansion
    if kq > 1:
        rows, cols, vals = _query_expansion(crow, cols, vals, nbr[:, :kq], N)
        crow = _row_pointers(rows, N)
    del nbr, rows

    # 6-7. Jaccard of the query rows against the gallery rows, mixed with the base distance
    _jaccard_mix(out, rowmax, crow, cols, vals, Q, lam)
    return out


def _row_pointers(rows, N):
    """CSR row pointers of row-sorted COO row indices."""
    counts = torch.bincount(rows, minlength=N)
    crow = torch.zeros(N + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    return crow


def _reciprocal_mask(nbr, k, start, stop):
    """(B, k) bool: is nbr[i, s] (s < k) a k-reciprocal neighbour of i, for rows start:stop."""
    fwd = nbr[start:stop, :k]
    back = nbr[:, :k][fwd]  # (B, k, k): top-k lists of i's top-k
    me = torch.arange(start, stop, device=nbr.device)[:, None, None]
    return (back == me).any(dim=2)


def _build_v(x, sq, rowmax, nbr, nbr_d, kf, kh):
    """Sparse V (row-sorted COO): exp(-d) over the expanded k-reciprocal set, rows sum to 1."""
    N = x.shape[0]
    dev, dt = x.device, x.dtype
    # R(c, round(k1/2)) for every item, as a (N, kh) mask over nbr[:, :kh]
    mask_h = torch.empty((N, kh), dtype=torch.bool, device=dev)
    step = max(1, _BLOCK_ELEMENTS // (kh * kh))
    for s in range(0, N, step):
        mask_h[s:s + step] = _reciprocal_mask(nbr, kh, s, min(N, s + step))
    size_h = mask_h.sum(dim=1)
    nbr_h = nbr[:, :kh]

    out_rows, out_cols, out_vals = [], [], []
    step = max(1, _BLOCK_ELEMENTS // (kf * kf * kh))
    for s in range(0, N, step):
        e = min(N, s + step)
        B = e - s
        m1 = _reciprocal_mask(nbr, kf, s, e)  # (B, kf)
        r1 = torch.where(m1, nbr[s:e, :kf], -1)  # R(i, k1), -1 = not a member
        cand = nbr[s:e, :kf]  # candidates c (valid where m1)
        cand_h = nbr_h[cand]  # (B, kf, kh): top lists of the candidates
        cand_hm = mask_h[cand]  # (B, kf, kh): R(c, k1/2) membership
        inside = (cand_h[..., None] == r1[:, None, None, :]).any(dim=3) & cand_hm
        inter = inside.sum(dim=2)  # |R(c, k1/2) ∩ R(i, k1)|
        accept = m1 & (3 * inter > 2 * size_h[cand])  # > 2/3 of |R(c, k1/2)|
        members = torch.cat([
            torch.where(m1, nbr[s:e, :kf], N),
            torch.where(accept[..., None] & cand_hm, cand_h, N).reshape(B, kf * kh),
        ], dim=1)
        members, _ = torch.sort(members, dim=1)
        keep = members < N
        keep[:, 1:] &= members[:, 1:] != members[:, :-1]  # unique
        rr, slot = keep.nonzero(as_tuple=True)
        cc = members[rr, slot]
        rr += s
        # d(i, j): from i's kNN list when j is in it (~80% of the members), else per pair
        hit = nbr[rr] == cc[:, None]  # (P, kk)
        found = hit.any(dim=1)
        dist = nbr_d[rr, hit.to(torch.uint8).argmax(dim=1)]
        miss = (~found).nonzero().squeeze(1)
        pstep = max(1, _BLOCK_ELEMENTS // max(1, x.shape[1]))
        for p in range(0, miss.numel(), pstep):
            idx = miss[p:p + pstep]
            a, b = rr[idx], cc[idx]
            dist[idx] = (sq[a] + sq[b]) - 2.0 * (x[a] * x[b]).sum(dim=1)
        w = torch.exp(-(dist / rowmax[rr]))
        total = torch.zeros(N, dtype=dt, device=dev).index_add_(0, rr, w)
        out_rows.append(rr)
        out_cols.append(cc)
        out_vals.append(w / total[rr])
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _segments(crow, seg_rows):
    """Entry positions of the CSR rows ``seg_rows`` (flattened), and which segment each is."""
    start = crow[seg_rows]
    length = crow[seg_rows + 1] - start
    seg = torch.repeat_interleave(torch.arange(seg_rows.numel(), device=crow.device), length)
    first = torch.cumsum(length, 0) - length
    pos = start[seg] + (torch.arange(seg.numel(), device=crow.device) - first[seg])
    return pos, seg


def _query_expansion(crow, cols, vals, knn, N):
    """V_qe[i] = mean of V over the rows knn[i] (sparse, row-sorted COO)."""
    dev = cols.device
    k = knn.shape[1]
    nnz_per_row = (crow[knn + 1] - crow[knn]).sum(dim=1)  # entries gathered per output row
    out_rows, out_cols, out_vals = [], [], []
    bounds = _split_by_cost(nnz_per_row, _ENTRY_BLOCK)
    for s, e in bounds:
        pos, seg = _segments(crow, knn[s:e].reshape(-1))
        r = seg // k + s
        key = r * N + cols[pos]
        uniq, inv = torch.unique(key, sorted=True, return_inverse=True)
        summed = torch.zeros(uniq.numel(), dtype=vals.dtype, device=dev)
        summed.index_add_(0, inv, vals[pos])
        out_rows.append(uniq // N)
        out_cols.append(uniq % N)
        out_vals.append(summed / k)
    return torch.cat(out_rows), torch.cat(out_cols), torch.cat(out_vals)


def _split_by_cost(cost, budget):
    """Consecutive [start, stop) row ranges whose summed cost stays under ``budget``."""
    total = torch.cumsum(cost, 0).cpu().numpy()
    bounds, start, base = [], 0, 0
    n = len(total)
    while start < n:
        stop = int(np.searchsorted(total, base + budget, side="right"))
        stop = max(stop, start + 1)
        bounds.append((start, stop))
        base = int(total[stop - 1])
        start = stop
    return bounds


def _jaccard_mix(out, rowmax, crow, cols, vals, Q, lam):
    """In place: out = (1 - lam) * (1 - m/(2-m)) + lam * out / rowmax, in query chunks.

    ``out`` holds the query x gallery squared distances on entry.
    """
    G = out.shape[1]
    N = Q + G
    dev = out.device
    # inverted index of the gallery rows: for every column, its gallery entries
    nnz_rows = torch.repeat_interleave(torch.arange(N, device=dev), crow[1:] - crow[:-1])
    gsel = nnz_rows >= Q
    g_rows, g_cols, g_vals = nnz_rows[gsel] - Q, cols[gsel], vals[gsel]
    order = torch.argsort(g_cols, stable=True)
    g_rows, g_vals = g_rows[order], g_vals[order]
    ccol = _row_pointers(g_cols[order], N)  # column pointers
    col_count = ccol[1:] - ccol[:-1]
    del gsel, g_cols, order

    # pairs per query row = sum over its entries of the gallery entries sharing the column
    entry_cost = col_count[cols[: crow[Q]]]
    q_rows = nnz_rows[: crow[Q]]
    cost = torch.zeros(Q, dtype=torch.int64, device=dev).index_add_(0, q_rows, entry_cost)
    del nnz_rows, entry_cost, q_rows
    row_step = max(1, _BLOCK_ELEMENTS // max(1, G))
    for s, e in _split_by_cost(cost, _ENTRY_BLOCK):
        for s2 in range(s, e, row_step):  # also bound the (B x G) temporaries
            e2 = min(e, s2 + row_step)
            m = _sum_of_minima(crow, cols, vals, ccol, g_rows, g_vals, s2, e2, G)
            jac = 1.0 - m / (2.0 - m)
            block = out[s2:e2]
            block /= rowmax[s2:e2, None]
            block *= lam
            block += (1.0 - lam) * jac


def _sum_of_minima(crow, cols, vals, ccol, g_rows, g_vals, start, stop, G):
    """(B, G) sum_k min(V[i, k], V[j, k]) for query rows start:stop, by a join on k."""
    dev = vals.device
    B = stop - start
    a = torch.arange(int(crow[start]), int(crow[stop]), device=dev)  # the query rows' entries
    a_rows = torch.repeat_interleave(torch.arange(B, device=dev), crow[start + 1:stop + 1]
                                     - crow[start:stop])
    a_cols = cols[a]
    pos, seg = _segments(ccol, a_cols)  # every gallery entry sharing the column
    mins = torch.minimum(vals[a][seg], g_vals[pos])
    m = torch.zeros(B * G, dtype=vals.dtype, device=dev)
    m.index_add_(0, a_rows[seg] * G + g_rows[pos], mins)
    return m.view(B, G)
