"""CUHK03 classic single-gallery-shot CMC (torchreid/fast-reid ``use_metric_cuhk03``).

Per query, after the usual junk removal (gallery items with the query's pid and camera), one
gallery image per gallery identity is drawn at random; the CMC is computed on that reduced
list (the query's own identity contributes exactly one positive); this is repeated
``num_repeats`` times and averaged, then averaged over the valid queries. Only the CMC is
reported: AP is not meaningful under this protocol.

Unlike torchreid (unseeded ``np.random.choice``), the draw is seeded: repeat ``r`` uses
``numpy.random.default_rng([seed, r])`` to give every (query, gallery item) a uniform key,
and the kept item with the smallest key represents its identity. The same ``seed`` gives the
same result whatever ``chunk_size`` or device. Ordering is the stable (distance, gallery
index) order of :func:`~nas_reid.evaluation.ranking.evaluate_ranking`.
"""

from __future__ import annotations

import numpy as np
import torch

from nas_reid.errors import EvaluationError
from nas_reid.evaluation.ranking import (
    _as_distmat,
    _check_chunk_size,
    _check_max_rank,
    _labels,
    _working_dtype,
)

__all__ = ["evaluate_cuhk03_classic"]


def evaluate_cuhk03_classic(distmat, q_pids, g_pids, q_camids, g_camids, max_rank: int = 50, *,
                            num_repeats: int = 10, seed: int = 0,
                            chunk_size: int | None = None) -> dict:
    """Single-gallery-shot CMC of a (num_query x num_gallery) distance matrix.

    Arguments as for :func:`~nas_reid.evaluation.ranking.evaluate_ranking` (the CMC is padded
    with its last value beyond the number of gallery identities), plus ``num_repeats`` draws
    (10, as torchreid) and their ``seed``.

    Returns a dict: ``cmc`` (float64 numpy array of length ``max_rank``),
    ``num_valid_queries``, ``num_skipped_queries``, ``num_repeats``.

    Memory per chunk: ~30 bytes x chunk_size x num_gallery (float64 keys, masks), default
    chunk ~4M elements.
    """
    max_rank = _check_max_rank(max_rank)
    if isinstance(num_repeats, bool) or not isinstance(num_repeats, (int, np.integer)) \
            or num_repeats < 1:
        raise EvaluationError(f"num_repeats must be a positive integer, got {num_repeats!r}")
    dist = _as_distmat(distmat)
    num_q, num_g = dist.shape
    device = dist.device
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g, device)
    step = _check_chunk_size(chunk_size, num_g, num_q)
    if num_q == 0 or num_g == 0:
        raise EvaluationError(f"no query has a valid match: distmat has shape {(num_q, num_g)}")
    _, gid = torch.unique(gp, return_inverse=True)  # gallery identity index 0..P-1
    num_ids = int(gid.max()) + 1
    rngs = [np.random.default_rng([int(seed), r]) for r in range(int(num_repeats))]
    hist = torch.zeros(max_rank + 1, dtype=torch.int64, device=device)
    num_valid = 0
    gall = torch.arange(num_g, device=device)
    with torch.no_grad():
        for s in range(0, num_q, step):
            d = _working_dtype(dist[s:s + step]).contiguous()
            B = d.shape[0]
            if torch.isnan(d).any():
                raise EvaluationError("distmat contains NaN")
            match = qp[s:s + step, None] == gp[None, :]
            kept = ~(match & (qc[s:s + step, None] == gc[None, :]))
            pos = match & kept
            valid = pos.any(dim=1)
            num_valid += int(valid.sum())
            groups = gid[None, :].expand(B, num_g)
            for rng in rngs:
                keys = torch.from_numpy(rng.random((B, num_g))).to(device)
                keys.masked_fill_(~kept, float("inf"))
                best = torch.full((B, num_ids), float("inf"), dtype=keys.dtype, device=device)
                best.scatter_reduce_(1, groups, keys, reduce="amin")
                chosen = (keys == best.gather(1, groups)) & kept
                # the chosen positive of each valid query (exactly one per valid row)
                chosen_pos = chosen & pos
                col = torch.where(chosen_pos, gall[None, :], num_g).min(dim=1).values
                col = col.clamp(max=num_g - 1)[:, None]
                pd = d.gather(1, col)
                before = (d < pd) | ((d == pd) & (gall[None, :] < col))
                rank = (before & chosen & ~match).sum(dim=1)
                hist += torch.bincount(rank[valid].clamp(max=max_rank), minlength=max_rank + 1)
    if num_valid == 0:
        raise EvaluationError(
            "no query has a valid match: every query's identity is absent from the gallery "
            "or appears there only under the query's own camera"
        )
    cmc = np.cumsum(hist[:max_rank].cpu().numpy()).astype(np.float64) / (num_valid * num_repeats)
    return {
        "cmc": cmc,
        "num_valid_queries": int(num_valid),
        "num_skipped_queries": int(num_q - num_valid),
        "num_repeats": int(num_repeats),
    }
