"""DukeMTMC-reID (Ristani et al. 2016; Zheng et al. 2017): ``DukeMTMC-reID/`` in the Market layout.

Names look like ``0001_c2_f0046182.jpg``; cameras c1..c8, no junk, no pid 0. The 408 gallery-only
ids are ordinary pids. Accepted roots: the dataset folder itself, or a parent holding
``DukeMTMC-reID`` or ``dukemtmc-reid/DukeMTMC-reID``.
"""

from __future__ import annotations

import os

from nas_reid.data.base import ReIDDataset
from nas_reid.data.market_style import load_market_style, market_root

NAME = "dukemtmc"
MAX_PID = 9999
"""The pid field has four digits; the official pids stay well below this bound."""
NUM_CAMERAS = 8
CANDIDATES = (".", "DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid")


def load_dukemtmc(root: str | os.PathLike) -> ReIDDataset:
    """Load DukeMTMC-reID from ``root`` (train pids relabelled to 0..701)."""
    folder = market_root(root, CANDIDATES, dataset="DukeMTMC-reID")
    return load_market_style(NAME, folder, max_pid=MAX_PID, num_cameras=NUM_CAMERAS)
