"""Market-1501 (Zheng et al., ICCV 2015): ``Market-1501-v15.09.15/`` in the Market layout.

pids 0..1501 (0 = distractor, -1 = junk, dropped), cameras c1..c6. Accepted roots: the dataset
folder itself, or a parent holding ``Market-1501-v15.09.15``, ``market1501/Market-1501-v15.09.15``
or the older flat ``market1501/``.
"""

from __future__ import annotations

import os

from nas_reid.data.base import ReIDDataset
from nas_reid.data.market_style import load_market_style, market_root

NAME = "market1501"
MAX_PID = 1501
NUM_CAMERAS = 6
CANDIDATES = (".", "Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501")


def load_market1501(root: str | os.PathLike) -> ReIDDataset:
    """Load Market-1501 from ``root`` (train pids relabelled to 0..750)."""
    folder = market_root(root, CANDIDATES, dataset="Market-1501")
    return load_market_style(NAME, folder, max_pid=MAX_PID, num_cameras=NUM_CAMERAS)
