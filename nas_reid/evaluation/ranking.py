"""Market-1501-style ranking metrics (CMC, mAP, mINP) without sorting the gallery.

Protocol (identical to torchreid / fast-reid ``eval_market1501``):

* For each query, gallery items with the **same pid and the same camera** are ignored (junk).
  Same pid from another camera = positive; any other pid (distractors included) = negative.
  Gallery pid -1 gets no special treatment: drop Market junk images at load time.
* The ranking is a **stable** ascending sort by distance: ties are broken by gallery index, so
  the results are deterministic (torchreid's quicksort orders ties arbitrarily).
* CMC@k = fraction of valid queries whose first positive is within the top k kept items.
  Step AP = mean over the positives of precision at each hit. INP = |positives| / (rank of the
  last positive + 1) (fast-reid). Queries without a positive are skipped; all means are over
  the valid queries only, and the number skipped is reported.
* ``official_ap`` adds the trapezoid AP of the Market-1501 MATLAB code (``compute_AP.m``): each
  hit adds (1/|positives|) * (precision before the hit + precision at the hit) / 2, with the
  precision before a hit at rank 0 taken as 1. It is never larger than the step AP.

How the ranks are found without a full sort: docs/evaluation.md, section
`nas_reid.evaluation.ranking`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nas_reid.errors import EvaluationError

__all__ = ["evaluate_ranking", "default_chunk_size"]

# Elements (queries x gallery) processed per chunk when ``chunk_size`` is None; the per-chunk
# peak is about 20 bytes per element (see ``default_chunk_size``).
_CHUNK_ELEMENTS = 1 << 22


def default_chunk_size(num_gallery: int, num_query: int | None = None) -> int:
    """Queries per chunk used when ``chunk_size=None``: about 4M distances per chunk.

    Peak extra memory of one chunk is at most about 20 bytes x chunk_size x num_gallery (bool
    masks, int32 buckets or the sparse path's comparisons), i.e. ~80 MB at this default
    (measured: 50-80 MB at Market-1501 size).
    """
    size = max(1, _CHUNK_ELEMENTS // max(1, int(num_gallery)))
    if num_query is not None:
        size = min(size, max(1, int(num_query)))
    return size


# --------------------------------------------------------------------------------------------
# input conversion


def _as_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Zero-copy view of a numpy array / tensor / sequence as a torch tensor."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise EvaluationError(f"{name} must be numeric, got dtype {arr.dtype}")
        if arr.dtype.byteorder not in "=|" or any(s < 0 for s in arr.strides):
            arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
        with warnings.catch_warnings():  # read-only arrays (memmaps): we never write into them
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(arr)
    if device is not None:
        t = t.to(device)
    return t


def _ids_to_tensors(q_ids: Any, g_ids: Any, name: str, device: torch.device):
    """Query / gallery ids as int64 tensors on ``device``.

    Integer ids are used as they are, integral floats are cast, strings (and other objects)
    are factorised; fractional or non-finite float ids are an error.
    """
    q = q_ids.detach().cpu().numpy() if isinstance(q_ids, torch.Tensor) else np.asarray(q_ids)
    g = g_ids.detach().cpu().numpy() if isinstance(g_ids, torch.Tensor) else np.asarray(g_ids)
    if q.ndim != 1 or g.ndim != 1:
        raise EvaluationError(
            f"q_{name} and g_{name} must be 1-D, got shapes {tuple(q.shape)} and {tuple(g.shape)}"
        )
    out = []
    if q.dtype.kind in "biuf" and g.dtype.kind in "biuf":
        for arr in (q, g):
            if arr.dtype.kind == "f":
                if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
                    raise EvaluationError(f"{name} must be integers, got non-integral values")
            out.append(torch.from_numpy(arr.astype(np.int64)))
    else:  # strings or objects: factorise jointly
        _, inverse = np.unique(np.concatenate([q.astype(str), g.astype(str)]), return_inverse=True)
        out = [torch.from_numpy(inverse[: len(q)].astype(np.int64)),
               torch.from_numpy(inverse[len(q):].astype(np.int64))]
    return out[0].to(device), out[1].to(device)


def _labels(q_pids, g_pids, q_camids, g_camids, num_query: int, num_gallery: int, device):
    qp, gp = _ids_to_tensors(q_pids, g_pids, "pids", device)
    qc, gc = _ids_to_tensors(q_camids, g_camids, "camids", device)
    for what, t, n in (("q_pids", qp, num_query), ("q_camids", qc, num_query),
                       ("g_pids", gp, num_gallery), ("g_camids", gc, num_gallery)):
        if t.numel() != n:
            side = "queries" if what.startswith("q") else "gallery items"
            raise EvaluationError(f"{what} has {t.numel()} entries but there are {n} {side}")
    return qp, gp, qc, gc


def _as_distmat(distmat: Any) -> torch.Tensor:
    """A (num_query, num_gallery) distance matrix as a tensor (detached, on its device)."""
    dist = distmat.detach() if isinstance(distmat, torch.Tensor) else _as_tensor(distmat, "distmat")
    if dist.ndim != 2:
        raise EvaluationError(f"distmat must be 2-D (num_query, num_gallery), got shape "
                              f"{tuple(dist.shape)}")
    return dist


def _check_max_rank(max_rank: Any) -> int:
    if isinstance(max_rank, bool) or not isinstance(max_rank, (int, np.integer)) or max_rank < 1:
        raise EvaluationError(f"max_rank must be a positive integer, got {max_rank!r}")
    return int(max_rank)


def _check_chunk_size(chunk_size: Any, num_gallery: int, num_query: int) -> int:
    if chunk_size is None:
        return default_chunk_size(num_gallery, num_query)
    if (isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer))
            or chunk_size < 1):
        raise EvaluationError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return int(chunk_size)


def _working_dtype(d: torch.Tensor) -> torch.Tensor:
    """float32/float64 stay; half types go to float32 and integers to float64 (order-exact)."""
    if d.dtype in (torch.float32, torch.float64):
        return d
    if d.dtype in (torch.float16, torch.bfloat16):
        return d.float()
    if d.dtype == torch.bool or d.is_complex():
        raise EvaluationError(f"distmat must be real-valued, got dtype {d.dtype}")
    return d.double()


# --------------------------------------------------------------------------------------------
# the per-chunk kernel (shared by evaluate_ranking, evaluate_features and the CUHK03 protocol)


def positive_ranks(d: torch.Tensor, qp: torch.Tensor, qc: torch.Tensor, gp: torch.Tensor,
                   gc: torch.Tensor, query_offset: int = 0):
    """Kept-list ranks of every positive, for one chunk of queries.

    Args: ``d`` (B, G) float distances; ``qp``/``qc`` (B,) and ``gp``/``gc`` (G,) int64 labels,
    all on one device. ``query_offset`` only serves error messages.

    Returns ``(ranks, npos)``: ``ranks`` (B, M) int64, where ``ranks[i, j]`` is the 0-based
    rank, after junk removal and a stable sort by (distance, gallery index), of query i's
    j-th positive in that order (valid for ``j < npos[i]``, arbitrary beyond); ``npos`` (B,).

    Only the K negatives not behind a query's last positive can change a rank. When K * M is
    small (K * M <= 2 * B * G) they are compared against the positive table directly (sparse
    path); otherwise every element is bucketed with one ``searchsorted`` (dense path). Both
    give identical results; exact distance ties are then resolved by gallery index.

    Memory: at most about 20 bytes per element of ``d``: bool masks and int32 buckets (dense
    path) or the K x M comparison table, K * M <= 2 * B * G (sparse path); plus O(K + B * M).
    """
    B, G = d.shape
    dev = d.device
    if B and G and bool(torch.isnan(d.sum())) and bool(torch.isnan(d).any()):
        bad = int(torch.isnan(d).any(dim=1).nonzero()[0]) + query_offset
        raise EvaluationError(f"distmat contains NaN (first in query row {bad})")
    d = d.contiguous()
    match = qp[:, None] == gp[None, :]  # same pid: positives and junk
    pos = match & (qc[:, None] != gc[None, :])
    npos = _count(pos, 1)
    M = int(npos.max()) if B else 0
    if M == 0:
        return torch.zeros((B, 0), dtype=torch.int64, device=dev), npos

    # positives, padded to (B, M), sorted by (distance, gallery index)
    rows, cols = pos.nonzero(as_tuple=True)  # row-major: columns ascending within a row
    del pos
    start = torch.cumsum(npos, 0) - npos
    slot = torch.arange(rows.numel(), device=dev) - start[rows]
    pd = torch.full((B, M), float("inf"), dtype=d.dtype, device=dev)
    pi = torch.full((B, M), G, dtype=torch.int64, device=dev)
    pd[rows, slot] = d[rows, cols]
    pi[rows, slot] = cols
    pd, perm = torch.sort(pd, dim=1, stable=True)  # stable: equal distances keep index order
    pi = pi.gather(1, perm)

    # negatives that may precede some positive: distance <= the row's last positive distance
    last = pd.gather(1, (npos - 1).clamp(min=0)[:, None])
    last.masked_fill_((npos == 0)[:, None], float("-inf"))
    cand = d <= last
    cand &= ~match
    del match
    num_cand = int(cand.count_nonzero())
    if num_cand * M <= _SPARSE_RATIO * B * G:
        counts = _bucket_sparse(d, cand, pd, pi)
    else:
        counts = _bucket_dense(d, cand, pd, pi)
    negatives_before = torch.cumsum(counts[:, :M], dim=1)
    ranks = torch.arange(M, device=dev)[None, :] + negatives_before
    return ranks, npos


def _count(mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Number of True along ``dim`` as int64 (summing bool directly makes an int64 copy)."""
    return mask.view(torch.uint8).sum(dim, dtype=torch.int32).long()


# sparse path when (number of candidate negatives) * M <= _SPARSE_RATIO * B * G
_SPARSE_RATIO = 2.0


def _bucket_sparse(d, cand, pd, pi):
    """Histogram (B, M+1) of the buckets of the candidate negatives (K x M comparisons)."""
    B, M = pd.shape
    rr, cc = cand.nonzero(as_tuple=True)
    del cand
    v = d[rr, cc]
    prow = pd[rr]
    bucket = _count(prow < v[:, None], 1)
    # exact ties with a positive: the positive at `bucket` has the same distance
    tie = prow.gather(1, bucket.clamp(max=M - 1)[:, None]).squeeze(1) == v
    del prow
    counts = torch.bincount(rr * (M + 1) + bucket, minlength=B * (M + 1)).view(B, M + 1)
    if bool(tie.any()):
        _fix_ties(counts, d, pd, pi, rr[tie], cc[tie], B * d.shape[1])
    return counts


def _bucket_dense(d, cand, pd, pi):
    """Histogram (B, M+1) of the buckets of the candidate negatives (one searchsorted)."""
    B, M = pd.shape
    G = d.shape[1]
    dev = d.device
    # bucket = number of positives with a strictly smaller distance
    flat = torch.searchsorted(pd, d, side="left", out_int32=True)  # (B, G) in [0, M]
    rr, cc = cand.nonzero(as_tuple=True)
    flat.masked_fill_(cand.logical_not_(), M)  # non-candidates go to the overflow bin
    del cand
    bucket = flat[rr, cc].long()
    flat += torch.arange(B, device=dev, dtype=torch.int32)[:, None] * (M + 1)
    counts = torch.bincount(flat.view(-1), minlength=B * (M + 1)).view(B, M + 1)
    del flat
    # exact ties with a positive: the positive at `bucket` has the same distance
    tie = pd[rr, bucket.clamp(max=M - 1)] == d[rr, cc]
    if bool(tie.any()):
        _fix_ties(counts, d, pd, pi, rr[tie], cc[tie], B * G)
    return counts


def _fix_ties(counts, d, pd, pi, tr, tc, budget):
    """Move tied negatives past the tied positives with a smaller gallery index."""
    M = pd.shape[1]
    step = max(1, budget // max(1, M))  # bound the (T x M) comparison by the chunk size
    for s in range(0, tr.numel(), step):
        r, c = tr[s:s + step], tc[s:s + step]
        v = d[r, c]
        left = (pd[r] < v[:, None]).sum(1)
        extra = ((pd[r] == v[:, None]) & (pi[r] < c[:, None])).sum(1)
        if bool((extra > 0).any()):
            sel = extra > 0
            r, left, extra = r[sel], left[sel], extra[sel]
            one = torch.ones_like(r, dtype=counts.dtype)
            counts.index_put_((r, left), -one, accumulate=True)
            counts.index_put_((r, left + extra), one, accumulate=True)


# --------------------------------------------------------------------------------------------
# accumulation of per-query metrics


@dataclass
class _Accumulator:
    max_rank: int
    official_ap: bool
    device: torch.device
    per_query: bool = False
    """Keep every valid query's AP (``result()["AP"]``, in query order)."""
    first_hit_hist: torch.Tensor = field(init=False)
    sums: torch.Tensor = field(init=False)  # AP, INP, official AP (float64)
    num_valid: int = 0
    num_skipped: int = 0

    def __post_init__(self):
        self.aps: list[torch.Tensor] = []
        self.first_hit_hist = torch.zeros(self.max_rank + 1, dtype=torch.int64, device=self.device)
        self.sums = torch.zeros(3, dtype=torch.float64, device=self.device)

    def add(self, ranks: torch.Tensor, npos: torch.Tensor) -> None:
        valid = npos > 0
        nvalid = int(valid.sum())
        self.num_valid += nvalid
        self.num_skipped += int(npos.numel()) - nvalid
        if nvalid == 0:
            return
        ranks, npos = ranks[valid], npos[valid]
        M = ranks.shape[1]
        j = torch.arange(M, device=ranks.device, dtype=torch.float64)[None, :]
        used = j < npos[:, None]
        r = ranks.double()
        n = npos.double()
        prec_at = (j + 1.0) / (r + 1.0)
        ap = torch.where(used, prec_at, 0.0).sum(1) / n
        last = ranks.gather(1, (npos - 1)[:, None]).squeeze(1).double()
        inp = n / (last + 1.0)
        self.sums[0] += ap.sum()
        if self.per_query:
            self.aps.append(ap.cpu())
        self.sums[1] += inp.sum()
        if self.official_ap:
            prec_before = torch.where(r > 0, j / r.clamp(min=1.0), 1.0)
            oap = torch.where(used, prec_at + prec_before, 0.0).sum(1) / (2.0 * n)
            self.sums[2] += oap.sum()
        first = ranks[:, 0].clamp(max=self.max_rank)
        self.first_hit_hist += torch.bincount(first, minlength=self.max_rank + 1)

    def result(self) -> dict:
        if self.num_valid == 0:
            raise EvaluationError(
                "no query has a valid match: every query's identity is absent from the gallery "
                "or appears there only under the query's own camera (same pid + same camid "
                "gallery items are ignored); give query and gallery the right camera ids"
            )
        hist = self.first_hit_hist[: self.max_rank].cpu().numpy()
        cmc = np.cumsum(hist).astype(np.float64) / self.num_valid
        sums = self.sums.cpu().numpy()
        out = {
            "cmc": cmc,
            "mAP": float(sums[0] / self.num_valid),
            "mINP": float(sums[1] / self.num_valid),
            "num_valid_queries": int(self.num_valid),
            "num_skipped_queries": int(self.num_skipped),
        }
        if self.official_ap:
            out["mAP_official"] = float(sums[2] / self.num_valid)
        if self.per_query:
            out["AP"] = torch.cat(self.aps).numpy()
        return out


# --------------------------------------------------------------------------------------------
# public entry point


def evaluate_ranking(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                     chunk_size: int | None = None, official_ap: bool = False) -> dict:
    """Market-1501 CMC / mAP / mINP of a (num_query x num_gallery) distance matrix.

    Args:
        distmat: numpy array or torch tensor (CPU or CUDA; computed on its device), smaller =
            more similar. float32/float64 are used as they are, half types as float32, integer
            types as float64. It is read chunk by chunk and never copied as a whole, so a
            ``np.memmap`` works.
        q_pids, g_pids, q_camids, g_camids: 1-D integer ids (numpy, torch or lists; strings
            are factorised).
        max_rank: CMC length. If it exceeds the gallery size, the CMC is padded with its last
            value (1.0: every valid query has its first hit within the gallery); torchreid
            would truncate instead.
        chunk_size: queries per chunk (None: about 4M distances per chunk, see
            :func:`default_chunk_size`). Results do not depend on it.
        official_ap: also return ``mAP_official``, the Market MATLAB trapezoid AP.

    Returns a dict: ``cmc`` (float64 numpy array of length ``max_rank``, fractions), ``mAP``,
    ``mINP`` (fractions, means over valid queries), ``num_valid_queries``,
    ``num_skipped_queries`` and, with ``official_ap``, ``mAP_official``.

    Raises :class:`EvaluationError` on shape/dtype mismatches, NaN distances, or when no query
    has a valid match.

    Memory: peak extra at most ~20 bytes x chunk_size x num_gallery (~80 MB with the default),
    plus a copy of one chunk when the input is not float32/float64 or not C-contiguous.
    """
    max_rank = _check_max_rank(max_rank)
    dist = _as_distmat(distmat)
    num_q, num_g = dist.shape
    device = dist.device
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g, device)
    step = _check_chunk_size(chunk_size, num_g, num_q)
    acc = _Accumulator(max_rank, official_ap, device)
    with torch.no_grad():
        for s in range(0, num_q, step):
            d = _working_dtype(dist[s:s + step])
            ranks, npos = positive_ranks(d, qp[s:s + step], qc[s:s + step], gp, gc, s)
            acc.add(ranks, npos)
    return acc.result()
