"""Occluded-Duke (Miao et al., ICCV 2019): a re-split of DukeMTMC-reID in the same Market layout.

Built by the authors' ``convert_duke_to_occduke.py``; all queries are occluded. Cameras c1..c8.
Accepted roots: the dataset folder itself, or a parent holding ``Occluded_Duke`` or
``occluded_duke/Occluded_Duke``.
"""

from __future__ import annotations

import os

from nas_reid.data.base import ReIDDataset
from nas_reid.data.dukemtmc import MAX_PID, NUM_CAMERAS
from nas_reid.data.market_style import load_market_style, market_root

NAME = "occluded_duke"
CANDIDATES = (".", "Occluded_Duke", "occluded_duke/Occluded_Duke", "occluded_duke")


def load_occluded_duke(root: str | os.PathLike) -> ReIDDataset:
    """Load Occluded-Duke from ``root`` (train pids relabelled to 0..701)."""
    folder = market_root(root, CANDIDATES, dataset="Occluded-Duke")
    return load_market_style(NAME, folder, max_pid=MAX_PID, num_cameras=NUM_CAMERAS)
