"""Evaluate a re-ID model on a dataset's query / gallery split (the Market-1501 protocol of
torchreid, KaiyangZhou/deep-person-reid ``torchreid/metrics/rank.py``, and fast-reid,
JDAI-CV/fast-reid ``fastreid/evaluation/rank.py``; re-ranking: Zhong, Zheng, Cao and Li,
"Re-ranking Person Re-identification with k-reciprocal Encoding", CVPR 2017).

:func:`evaluate_model` extracts the retrieval feature (``feat_bn`` by default) of every query
and gallery image and computes R1 / R5 / R10 / mAP / mINP, and when asked the same metrics after
k-reciprocal re-ranking. Protocol: gallery items with the query's pid **and** camera are ignored,
queries without a match under another camera are skipped, means are over the valid queries (step
AP; INP as fast-reid). Re-ranking's base distance is the squared Euclidean distance of the
L2-normalised features with ``metric="cosine"`` (BoT's setting, same ranking as cosine), of the
raw features with ``metric="euclidean"``. The :class:`EvaluationResult` keeps the features (on
the CPU, unless ``keep_features=False``) for :func:`ranked_lists`; ``keep_distances=True`` also
keeps the full plain (and re-ranked) matrices. :func:`format_results` prints a small table,
:func:`write_results` writes the JSON atomically.
How it is computed: docs/evaluation.md, section `nas_reid.evaluation.evaluate`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from nas_reid.data.base import Item, ReIDDataset
from nas_reid.errors import EvaluationError
from nas_reid.evaluation.distance import METRICS, evaluate_features, pairwise_distance
from nas_reid.evaluation.features import extract
from nas_reid.evaluation.k_reciprocal import rerank as _rerank
from nas_reid.evaluation.ranking import default_chunk_size, evaluate_ranking
from nas_reid.fileio import atomic_write_json

__all__ = [
    "EvaluationResult",
    "RankedList",
    "DEFAULT_RERANK",
    "METRIC_KEYS",
    "evaluate_model",
    "format_results",
    "write_results",
    "ranked_lists",
    "rank_gallery",
    "choose_queries",
]

DEFAULT_RERANK = {"k1": 20, "k2": 6, "lambda": 0.3}
"""k-reciprocal re-ranking parameters of the original paper (Zhong et al., CVPR 2017; its code,
zhunzhong07/person-re-ranking ``evaluation/Market_1501_evaluation.m``)."""

METRIC_KEYS = ("R1", "R5", "R10", "mAP", "mINP")


# --------------------------------------------------------------------------------------------
# results


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` returns; :meth:`to_dict` is the JSON report.

    Metric values (``plain``, ``reranked``) are fractions in [0, 1]. ``query_features`` /
    ``gallery_features`` are float32 CPU tensors (None with ``keep_features=False``);
    ``distances`` / ``reranked_distances`` the full (num_query, num_gallery) matrices, only
    with ``keep_distances=True``. ``query_items`` / ``gallery_items`` are the dataset's lists.
    """

    dataset_name: str
    dataset_root: str | None
    query_items: list[Item] = field(repr=False)
    gallery_items: list[Item] = field(repr=False)
    valid_queries: int
    metric: str
    feature: str
    flip: bool
    input_size: tuple[int, int]
    rerank_params: dict[str, Any] | None
    """The re-ranking parameters (``k1``, ``k2``, ``lambda``); None when not re-ranked."""
    plain: dict[str, float]
    reranked: dict[str, float] | None
    feature_dim: int
    seconds: dict[str, float]
    query_features: torch.Tensor | None = field(default=None, repr=False)
    gallery_features: torch.Tensor | None = field(default=None, repr=False)
    distances: torch.Tensor | None = field(default=None, repr=False)
    reranked_distances: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_query(self) -> int:
        return len(self.query_items)

    @property
    def num_gallery(self) -> int:
        return len(self.gallery_items)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report: dataset, protocol, plain / rerank metrics, feature_dim, seconds."""
        return {
            "dataset": {
                "name": self.dataset_name,
                "root": self.dataset_root,
                "queries": self.num_query,
                "gallery": self.num_gallery,
                "valid_queries": int(self.valid_queries),
            },
            "protocol": {
                "metric": self.metric,
                "feature": self.feature,
                "flip": bool(self.flip),
                "rerank": self.rerank_params is not None,
                "rerank_params": dict(self.rerank_params) if self.rerank_params else None,
                "input_size": [int(v) for v in self.input_size],
            },
            "plain": {k: float(self.plain[k]) for k in METRIC_KEYS},
            "rerank": ({k: float(self.reranked[k]) for k in METRIC_KEYS}
                       if self.reranked is not None else None),
            "feature_dim": int(self.feature_dim),
            "seconds": {k: round(float(v), 4) for k, v in self.seconds.items()},
        }


@dataclass(frozen=True)
class RankedList:
    """The top of one query's gallery ranking, ignored items (same pid and camera) removed.

    ``gallery_indices`` (int64), ``distances`` (float64) and ``matches`` (bool: same pid as
    the query, a true match) are aligned arrays in rank order; ``ignored`` is how many gallery
    items the protocol removed for this query.
    """

    query_index: int
    query: Item
    gallery_indices: np.ndarray
    distances: np.ndarray
    matches: np.ndarray
    ignored: int
    gallery: tuple[Item, ...]
    """The shown gallery items, in rank order."""


# --------------------------------------------------------------------------------------------
# argument checks


def _rerank_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(DEFAULT_RERANK)
    for key, value in dict(params or {}).items():
        name = "lambda" if key == "lambda_" else key
        if name not in out:
            raise EvaluationError(f"unknown re-ranking parameter {key!r}; expected k1, k2, lambda")
        out[name] = value
    for name in ("k1", "k2"):
        v = out[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise EvaluationError(f"re-ranking {name} must be an integer >= 1, got {v!r}")
        out[name] = int(v)
    lam = out["lambda"]
    if (isinstance(lam, bool) or not isinstance(lam, (int, float, np.floating, np.integer))
            or not 0.0 <= float(lam) <= 1.0):
        raise EvaluationError(f"re-ranking lambda must be a number in [0, 1], got {lam!r}")
    out["lambda"] = float(lam)
    return out


def _labels(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.fromiter((int(it[1]) for it in items), dtype=np.int64, count=len(items))
    cams = np.fromiter((int(it[2]) for it in items), dtype=np.int64, count=len(items))
    return pids, cams


def _valid_mask(query: Sequence[Item], gallery: Sequence[Item]) -> np.ndarray:
    """Per query: does the gallery hold its pid under another camera?"""
    cams: dict[int, set[int]] = {}
    for _, pid, cam in gallery:
        cams.setdefault(int(pid), set()).add(int(cam))
    return np.array([bool(cams.get(int(pid), set()) - {int(cam)}) for _, pid, cam in query],
                    dtype=bool)


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _metrics(out: dict) -> dict[str, float]:
    cmc = out["cmc"]
    return {"R1": float(cmc[0]), "R5": float(cmc[4]), "R10": float(cmc[9]),
            "mAP": float(out["mAP"]), "mINP": float(out["mINP"])}


# --------------------------------------------------------------------------------------------
# evaluation


def evaluate_model(model: torch.nn.Module, dataset: ReIDDataset, *,
                   device: str | torch.device | None = None,
                   input_size: tuple[int, int] | None = None, flip: bool = False,
                   rerank: bool = False, rerank_params: Mapping[str, Any] | None = None,
                   metric: str = "cosine", feature: str = "feat_bn", batch_size: int = 128,
                   num_workers: int = 0, autocast: torch.dtype | None = None,
                   channels_last: bool = False, keep_features: bool = True,
                   keep_distances: bool = False) -> EvaluationResult:
    """R1 / R5 / R10 / mAP / mINP of ``model`` on ``dataset.query`` against ``dataset.gallery``.

    Args:
        model: returns a dict holding ``feature`` in eval mode. It is switched to eval mode
            for the extraction and every submodule gets its previous mode back afterwards
            (also on error). It must already be on ``device``.
        device: where images go; None = the device of the model's parameters (CPU if none).
        input_size: (height, width) the images are resized to; default ``model.input_size``
            (or ``model.module.input_size`` for a DDP / compiled wrapper).
        flip: average each feature with that of the mirrored image.
        rerank: also report the metrics after k-reciprocal re-ranking, with ``rerank_params``
            (keys ``k1``, ``k2``, ``lambda``; defaults :data:`DEFAULT_RERANK`).
        metric: ``"cosine"`` or ``"euclidean"`` (squared; same ranking).
        feature: the output key used as retrieval feature (``feat_bn``: after the BNNeck).
        batch_size, num_workers, autocast, channels_last: passed to
            :func:`~nas_reid.evaluation.features.extract`.
        keep_features: keep the features in the result (CPU), for :func:`ranked_lists`.
        keep_distances: also keep the full plain (and re-ranked) distance matrices; Q x G
            floats each (3.8 GB on MSMT17), only for small datasets.

    Raises :class:`EvaluationError` (a ``UserError``) before any extraction when the query or
    gallery set is empty, no query has a match in the gallery under another camera, or an
    option is invalid.

    ``seconds`` holds ``features`` (extraction), ``ranking`` (plain metrics), ``rerank``
    (re-ranking plus its metrics, when asked) and ``total``.
    """
    start = time.perf_counter()
    if metric not in METRICS:
        raise EvaluationError(f"metric must be one of {METRICS}, got {metric!r}")
    params = _rerank_params(rerank_params) if rerank else None
    if rerank_params is not None and not rerank:
        _rerank_params(rerank_params)  # still reject nonsense early
    query, gallery = list(dataset.query), list(dataset.gallery)
    name = getattr(dataset, "name", "dataset")
    if not query:
        raise EvaluationError(f"{name}: the query set is empty; nothing to evaluate")
    if not gallery:
        raise EvaluationError(f"{name}: the gallery set is empty; nothing to evaluate")
    valid = _valid_mask(query, gallery)
    if not valid.any():
        raise EvaluationError(
            f"{name}: no query has a valid match: no query identity appears in the gallery "
            "under another camera (gallery images with the query's pid and camera are ignored)")
    if input_size is None:
        input_size = getattr(getattr(model, "module", model), "input_size", None)  # DDP too
        if input_size is None:
            raise EvaluationError("the model has no input_size attribute; pass input_size=(H, W)")
    input_size = (int(input_size[0]), int(input_size[1]))
    device = _model_device(model) if device is None else torch.device(device)

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        common = dict(batch_size=batch_size, num_workers=num_workers, flip=flip,
                      autocast=autocast, channels_last=channels_last)
        try:
            qf = extract(model, query, input_size, feature, device, **common)
            gf = extract(model, gallery, input_size, feature, device, **common)
        except KeyError as exc:
            if exc.args and exc.args[0] == feature:
                raise EvaluationError(f"the model's output has no {feature!r}") from None
            raise
    finally:
        for module, mode in modes:
            module.training = mode
    t_features = time.perf_counter()

    q_pids, q_cams = _labels(query)
    g_pids, g_cams = _labels(gallery)
    plain_out = evaluate_features(qf, gf, q_pids, g_pids, q_cams, g_cams, metric=metric,
                                  max_rank=10)
    t_ranking = time.perf_counter()
    seconds = {"features": t_features - start, "ranking": t_ranking - t_features}

    reranked = reranked_dist = None
    if params is not None:
        base_q, base_g = qf, gf
        if metric == "cosine":
            base_q = torch.nn.functional.normalize(qf, p=2, dim=1)
            base_g = torch.nn.functional.normalize(gf, p=2, dim=1)
        reranked_dist = _rerank(base_q, base_g, k1=params["k1"], k2=params["k2"],
                                lambda_=params["lambda"])
        del base_q, base_g
        reranked = _metrics(evaluate_ranking(reranked_dist, q_pids, g_pids, q_cams, g_cams,
                                             max_rank=10))
        seconds["rerank"] = time.perf_counter() - t_ranking
        if not keep_distances:
            reranked_dist = None
        else:
            reranked_dist = reranked_dist.cpu()

    distances = pairwise_distance(qf, gf, metric).cpu() if keep_distances else None
    seconds["total"] = time.perf_counter() - start
    root = getattr(dataset, "root", None)
    return EvaluationResult(
        dataset_name=str(name), dataset_root=None if root is None else str(root),
        query_items=query, gallery_items=gallery,
        valid_queries=int(plain_out["num_valid_queries"]), metric=metric, feature=feature,
        flip=bool(flip), input_size=input_size, rerank_params=params,
        plain=_metrics(plain_out), reranked=reranked, feature_dim=int(qf.shape[1]),
        seconds=seconds,
        query_features=qf.cpu() if keep_features else None,
        gallery_features=gf.cpu() if keep_features else None,
        distances=distances, reranked_distances=reranked_dist,
    )


# --------------------------------------------------------------------------------------------
# reporting


def format_results(result: EvaluationResult | Mapping[str, Any]) -> str:
    """A small table, percentages with one decimal: rows ``plain`` and ``re-ranked`` (when
    present), columns R1 R5 R10 mAP mINP. ``result`` is an :class:`EvaluationResult` or its
    :meth:`~EvaluationResult.to_dict` report (e.g. read back from ``results.json``)."""
    if isinstance(result, EvaluationResult):
        plain, reranked = result.plain, result.reranked
    else:
        plain, reranked = result["plain"], result.get("rerank")
    rows = [("plain", plain)]
    if reranked is not None:
        rows.append(("re-ranked", reranked))
    lines = [f"{'':<10}" + "".join(f"{k:>7}" for k in METRIC_KEYS)]
    for label, values in rows:
        lines.append(f"{label:<10}" + "".join(f"{100.0 * values[k]:>7.1f}" for k in METRIC_KEYS))
    return "\n".join(lines)


def write_results(result: EvaluationResult, path: str | os.PathLike,
                  extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``result.to_dict()`` plus the ``extra`` keys (e.g. checkpoint, genotype summary)
    as JSON (indent 2, trailing newline), atomically: a failure (e.g. a value that is not
    JSON-serialisable) leaves no file behind and any previous file untouched. An ``extra`` key
    that the report already has is a ``ValueError``. Returns the path."""
    report = result.to_dict()
    for key, value in dict(extra or {}).items():
        if key in report:
            raise ValueError(f"write_results: extra key {key!r} clashes with a report key")
        report[key] = value
    return atomic_write_json(path, report, indent=2)


# --------------------------------------------------------------------------------------------
# ranked lists (for pictures)


def choose_queries(query_items: Sequence[Item], gallery_items: Sequence[Item],
                   count: int = 8) -> list[int]:
    """``count`` query indices spread evenly (first and last included) over the queries that
    have a valid match (all queries if none has); deterministic."""
    if count < 1:
        raise EvaluationError(f"the number of queries to show must be >= 1, got {count}")
    valid = np.flatnonzero(_valid_mask(query_items, gallery_items))
    pool = valid if valid.size else np.arange(len(query_items))
    if pool.size <= count:
        return [int(i) for i in pool]
    if count == 1:
        return [int(pool[0])]
    return [int(pool[round(i * (pool.size - 1) / (count - 1))]) for i in range(count)]


def rank_gallery(distances, query_items: Sequence[Item], gallery_items: Sequence[Item],
                 query_indices: Sequence[int], *, topk: int = 10) -> list[RankedList]:
    """Top-``topk`` of each chosen query from its distance rows, ignored items removed.

    ``distances`` has one row per entry of ``query_indices`` (in that order) and one column
    per gallery item. Gallery items with the query's pid and camera are dropped (the protocol
    ignores them), then the rest is sorted stably by (distance, gallery index), as the metrics
    do.
    """
    if topk < 1:
        raise EvaluationError(f"topk must be >= 1, got {topk}")
    d = distances.detach().cpu() if isinstance(distances, torch.Tensor) else torch.as_tensor(
        np.asarray(distances))
    if d.ndim != 2 or d.shape[0] != len(query_indices) or d.shape[1] != len(gallery_items):
        raise EvaluationError(f"distances must be ({len(query_indices)}, {len(gallery_items)}),"
                              f" got {tuple(d.shape)}")
    g_pids, g_cams = (torch.from_numpy(a) for a in _labels(gallery_items))
    out = []
    for row, qi in enumerate(query_indices):
        item = query_items[int(qi)]
        qp, qc = int(item[1]), int(item[2])
        ignored = (g_pids == qp) & (g_cams == qc)
        kept = torch.nonzero(~ignored).squeeze(1)
        values = d[row, kept].double()
        order = torch.sort(values, stable=True).indices[:topk]
        idx = kept[order].numpy()
        out.append(RankedList(
            query_index=int(qi), query=item, gallery_indices=idx.astype(np.int64),
            distances=values[order].numpy(), matches=(g_pids[idx] == qp).numpy(),
            ignored=int(ignored.sum()), gallery=tuple(gallery_items[i] for i in idx)))
    return out


def ranked_lists(result: EvaluationResult, query_indices: Sequence[int] | None = None, *,
                 topk: int = 10, max_queries: int = 8,
                 reranked: bool = False) -> list[RankedList]:
    """Top-``topk`` gallery items of some queries, the protocol's ignored items removed.

    ``query_indices`` default: :func:`choose_queries` (``max_queries`` valid queries spread
    evenly). Plain distances come from ``result.distances`` when kept, else are computed from
    the kept features for the chosen queries only (a few rows, whatever the gallery size).
    ``reranked=True`` ranks by the re-ranked distances (needs ``rerank=True`` and
    ``keep_distances=True`` at evaluation).
    """
    if query_indices is None:
        query_indices = choose_queries(result.query_items, result.gallery_items, max_queries)
    query_indices = [int(i) for i in query_indices]
    for i in query_indices:
        if not 0 <= i < result.num_query:
            raise EvaluationError(f"query index {i} out of range (0..{result.num_query - 1})")
    if not query_indices:
        return []
    if reranked:
        if result.reranked_distances is None:
            raise EvaluationError("no re-ranked distances kept: evaluate with rerank=True and "
                                  "keep_distances=True")
        rows = result.reranked_distances[query_indices]
        return rank_gallery(rows, result.query_items, result.gallery_items, query_indices,
                            topk=topk)
    if result.distances is not None:
        rows = result.distances[query_indices]
        return rank_gallery(rows, result.query_items, result.gallery_items, query_indices,
                            topk=topk)
    if result.query_features is None or result.gallery_features is None:
        raise EvaluationError("the result kept neither features nor distances: evaluate with "
                              "keep_features=True (the default) or keep_distances=True")
    out: list[RankedList] = []
    step = default_chunk_size(result.num_gallery)
    for s in range(0, len(query_indices), step):
        chosen = query_indices[s:s + step]
        rows = pairwise_distance(result.query_features[chosen], result.gallery_features,
                                 result.metric)
        out += rank_gallery(rows, result.query_items, result.gallery_items, chosen, topk=topk)
    return out

