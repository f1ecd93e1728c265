"""Query-gallery distances, and ranking metrics computed straight from features.

``metric="cosine"``: 1 - cos on L2-normalised features (fast-reid's default).
``metric="euclidean"``: the **squared** Euclidean distance, as torchreid and fast-reid compute
it. Squaring is monotone, so the ranking (and every CMC / mAP / mINP value) is the same as with
the plain Euclidean distance; only re-ranking weights would differ.
"""

from __future__ import annotations

from typing import Any

import torch

from nas_reid.errors import EvaluationError
from nas_reid.evaluation.ranking import (
    _Accumulator,
    _as_tensor,
    _check_chunk_size,
    _check_max_rank,
    _labels,
    positive_ranks,
)

__all__ = ["pairwise_distance", "evaluate_features", "METRICS"]

METRICS = ("cosine", "euclidean")


def _features(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    t = x.detach() if isinstance(x, torch.Tensor) else _as_tensor(x, name)
    if device is not None:
        t = t.to(device)
    if t.ndim != 2:
        raise EvaluationError(f"{name} must be 2-D (num_items, dim), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()  # integers and half types: computed in float32
    return t


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def _prepare(x: torch.Tensor, metric: str):
    """Per-row quantities reused for every block: normalised rows, or rows + squared norms."""
    if metric == "cosine":
        return (torch.nn.functional.normalize(x, p=2, dim=1),)
    return x, (x * x).sum(dim=1)


def _block(xp, yp, metric: str) -> torch.Tensor:
    """Distance block between two prepared sets (rows of x against rows of y)."""
    if metric == "cosine":
        return (xp[0] @ yp[0].T).neg_().add_(1.0)
    x, xx = xp
    y, yy = yp
    d = torch.addmm(yy[None, :], x, y.T, beta=1.0, alpha=-2.0)
    d += xx[:, None]
    return d.clamp_(min=0.0)


def _feature_pair(x, y, x_name: str, y_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two feature matrices of the same width, ``y`` on ``x``'s device and dtype."""
    xt = _features(x, f"{x_name}_features")
    yt = _features(y, f"{y_name}_features", xt.device)
    if xt.shape[1] != yt.shape[1]:
        raise EvaluationError(
            f"feature dimensions differ: {x_name} has {xt.shape[1]}, {y_name} has {yt.shape[1]}"
        )
    return xt, yt.to(xt.dtype)


def pairwise_distance(x, y, metric: str = "cosine") -> torch.Tensor:
    """(len(x), len(y)) distance matrix as a torch tensor on ``x``'s device.

    ``x``/``y``: 2-D numpy arrays or tensors with the same feature dimension, computed in
    float64 if ``x`` is float64, else float32. ``cosine`` = 1 - cos of the
    L2-normalised rows; ``euclidean`` = squared Euclidean distance, clamped at 0 (same
    ranking as the plain Euclidean distance).

    Memory: the output (len(x) x len(y)), plus a normalised copy of both inputs for cosine.
    """
    metric = _check_metric(metric)
    xt, yt = _feature_pair(x, y, "x", "y")
    with torch.no_grad():
        return _block(_prepare(xt, metric), _prepare(yt, metric), metric)


def evaluate_features(query_features, gallery_features, q_pids, g_pids, q_camids, g_camids, *,
                      metric: str = "cosine", max_rank: int = 50, chunk_size: int | None = None,
                      official_ap: bool = False, per_query: bool = False) -> dict:
    """Market-1501 metrics straight from features, without ever holding the full distmat.

    Distances are computed one chunk of queries at a time (:func:`pairwise_distance`
    semantics, on the query features' device) and fed to the same per-chunk ranking code as
    :func:`~nas_reid.evaluation.ranking.evaluate_ranking`, so the results are those of
    ``evaluate_ranking(pairwise_distance(qf, gf, metric), ...)``. Arguments and returned dict
    are as for ``evaluate_ranking``; ``per_query=True`` adds ``"AP"``, every valid query's
    average precision in query order (a numpy float64 array, for bootstraps over queries).

    Memory: the features (plus a normalised copy for cosine), and per chunk the (chunk_size x
    num_gallery) distance block (4 bytes per element in float32) plus the ranking temporaries
    (at most ~20 bytes per element): ~100 MB at the default chunk size (about 4M distances),
    whatever the number of queries; MSMT17 (11,659 x 82,161) never holds its 3.8 GB matrix.
    """
    metric = _check_metric(metric)
    max_rank = _check_max_rank(max_rank)
    qf, gf = _feature_pair(query_features, gallery_features, "query", "gallery")
    num_q, num_g = qf.shape[0], gf.shape[0]
    device = qf.device
    qp, gp, qc, gc = _labels(q_pids, g_pids, q_camids, g_camids, num_q, num_g, device)
    step = _check_chunk_size(chunk_size, num_g, num_q)
    acc = _Accumulator(max_rank, official_ap, device, per_query)
    with torch.no_grad():
        gprep = _prepare(gf, metric)
        for s in range(0, num_q, step):
            d = _block(_prepare(qf[s:s + step], metric), gprep, metric)
            ranks, npos = positive_ranks(d, qp[s:s + step], qc[s:s + step], gp, gc, s)
            del d
            acc.add(ranks, npos)
    return acc.result()
