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

from nas_reid.search.checkpoint import CheckpointError, load_checkpoint
from nas_reid.search.data import IdentitySplit, query_gallery_split, split_identities
from nas_reid.search.guards import CollapseWarning, check_collapse, collapse_report
from nas_reid.search.loop import SearchResult, default_space_path, search

__all__ = [
    "CheckpointError",
    "CollapseWarning",
    "IdentitySplit",
    "SearchResult",
    "check_collapse",
    "collapse_report",
    "default_space_path",
    "load_checkpoint",
    "query_gallery_split",
    "search",
    "split_identities",
]
