"""Re-ID evaluation: Market-1501 ranking metrics, distances, re-ranking, CUHK03 classic CMC.

* :func:`evaluate_ranking` - CMC / mAP / mINP (and optionally the official Market trapezoid
  mAP) from a query x gallery distance matrix, chunked and without a full sort.
* :func:`evaluate_features` - the same metrics straight from features, one query chunk of
  distances at a time (peak memory bounded by the chunk size).
* :func:`pairwise_distance` - cosine (1 - cos) or squared Euclidean distance.
* :func:`rerank` - k-reciprocal re-ranking (Zhong et al. 2017), sparse and chunked.
* :func:`evaluate_cuhk03_classic` - CUHK03 classic single-gallery-shot CMC, seeded.
* :func:`evaluate_model` - a model on a dataset's query / gallery split: features (optionally
  flip-averaged), the metrics with and without re-ranking, ranked lists, ``results.json``.
* :func:`extract` - one model output per image, in order (flip, autocast, DDP shards).
"""

from nas_reid.evaluation.cuhk03 import evaluate_cuhk03_classic
from nas_reid.evaluation.distance import evaluate_features, pairwise_distance
from nas_reid.evaluation.ranking import default_chunk_size, evaluate_ranking
from nas_reid.evaluation.k_reciprocal import rerank
from nas_reid.evaluation.evaluate import EvaluationResult, evaluate_model, format_results, write_results
from nas_reid.evaluation.features import extract

__all__ = [
    "evaluate_ranking",
    "evaluate_features",
    "pairwise_distance",
    "rerank",
    "evaluate_cuhk03_classic",
    "default_chunk_size",
    "EvaluationResult",
    "evaluate_model",
    "format_results",
    "write_results",
    "extract",
]
