"""Reading the synthetic benchmark back: the Market-style parser plus its own manifest.

``load_synthreid(None)`` uses the default benchmark from the cache (generating it on first
use); ``load_synthreid(DIR)`` reads a folder written by ``nas-reid data synth``. The per-split
counts in ``synthreid.json`` play the role of official counts: a folder whose files do not match
its manifest (a deleted or added image) is rejected.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import DatasetError
from .base import ReIDDataset
from .market_style import load_market_style
from .synthreid import INFO_FILE, SynthConfig, ensure_synthreid


def load_synthreid(root: str | os.PathLike | None = None) -> ReIDDataset:
    """The synthreid benchmark at ``root``, or the cached default one when ``root`` is None."""
    if root is None:
        root = ensure_synthreid(SynthConfig(), progress=sys.stderr.isatty())
    root = Path(root).expanduser()
    manifest = root / INFO_FILE
    if not root.is_dir():
        raise DatasetError(f"synthreid folder {root} does not exist")
    try:
        info = json.loads(manifest.read_text())
        config = info["config"]
        counts = info["counts"]
    except FileNotFoundError:
        raise DatasetError(f"{manifest} is missing: not a folder written by `nas-reid data synth`") from None
    except (ValueError, KeyError) as exc:
        raise DatasetError(f"{manifest} is not a valid synthreid manifest ({exc})") from None
    ds = load_market_style(
        "synthreid", root, max_pid=int(config["ids"]), num_cameras=int(config["cameras"]),
        extra={"synthreid": {"config_hash": info.get("config_hash"), "config": config}},
    )
    for split in ("train", "query", "gallery"):
        found, expected = len(ds.split(split)), counts[split]["images"]
        if found != expected:
            raise DatasetError(
                f"synthreid split {split!r} in {root} has {found} images, its manifest says "
                f"{expected}: the folder was modified; regenerate it"
            )
    return ds
