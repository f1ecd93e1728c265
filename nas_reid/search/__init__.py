"""The architecture search: the bilevel loop, its data, checkpoints, logs and collapse guard.

- :func:`search` runs (or resumes) a search and writes a run folder (``config.yaml``,
  ``metrics.jsonl``, ``genotype_history.jsonl``, TensorBoard events, ``checkpoints/last.pt``,
  and at the end ``genotype.json``, ``cells.png``, ``arch_probs.png``; with a latency cost,
  ``latency_table.json``); see :mod:`nas_reid.search.loop`.
- :mod:`nas_reid.search.cost` is the cost-aware loss (FLOPs or latency);
  :mod:`nas_reid.search.latency` the latency lookup table it reads for a latency.
- :class:`SearchResult` is what it returns; :func:`default_space_path` the packaged CPU space.
- :func:`split_identities`, :func:`query_gallery_split`: the identity-disjoint split and the
  held-out quick eval (:mod:`nas_reid.search.data`).
- :func:`load_checkpoint` reads a checkpoint without pickle (:mod:`nas_reid.search.checkpoint`).
- :func:`check_collapse`, :class:`CollapseWarning`: the identity-collapse guard.
"""

from importlib import import_module

_EXPORTS = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "IdentitySplit": "data", "query_gallery_split": "data", "split_identities": "data",
    "CollapseWarning": "guards", "check_collapse": "guards", "collapse_report": "guards",
    "SearchResult": "loop", "default_space_path": "loop", "search": "loop",
}
"""Loaded on first use, so that importing a light part (``nas_reid.search.decisions``, which the
reports read) does not load the loop, torch's optimizers and the progress bars."""

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nas_reid.search' has no attribute {name!r}")
    value = getattr(import_module(f"nas_reid.search.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
