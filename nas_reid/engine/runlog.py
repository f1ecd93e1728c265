"""The metrics a run writes: ``metrics.jsonl`` and TensorBoard events, shared by search and retrain.

``metrics.jsonl`` holds one JSON object per line (numbers that are not finite are written as
``null``, tuples as lists: :func:`clean`). :class:`MetricsLog` keeps the lines in memory (and
in the run's checkpoint) and rewrites the file atomically at each flush.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nas_reid.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None, tuples lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def scalars(prefix: str, value: Any) -> list[tuple[str, float]]:
    """Flatten nested dicts of numbers into ``prefix/key/...`` scalars (None and text skipped)."""
    if isinstance(value, bool):
        return [(prefix, float(value))]
    if isinstance(value, (int, float)):
        return [(prefix, float(value))] if math.isfinite(value) else []
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += scalars(f"{prefix}/{k}" if prefix else str(k), v)
        return out
    return []


class MetricsLog:
    """``metrics.jsonl`` (plus any other JSON-lines files named in ``files``) and the TensorBoard
    writer of one run folder. ``enabled=False`` (DDP ranks other than 0) keeps the lines in
    memory and writes nothing. Every flush rewrites the files atomically from memory, so they
    always hold whole lines, and a resumed run (given its checkpoint's lines) drops what was
    written after that checkpoint; ``purge_step`` does the same for the TensorBoard events."""

    def __init__(self, out_dir: Path, *, enabled: bool, metrics: list[str] | None = None,
                 files: dict[str, list[str]] | None = None, purge_step: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.metrics: list[str] = list(metrics or [])
        self.files: dict[str, list[str]] = {METRICS_FILE: self.metrics, **(files or {})}
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / TENSORBOARD_DIR), purge_step=purge_step)
            self.flush()

    @property
    def tensorboard(self):
        """The ``SummaryWriter`` (None when disabled)."""
        return self._tb

    def add(self, record: dict[str, Any], *, tb_keys: tuple[str, ...] = (), step: int | None = None,
            prefix: str = "") -> dict[str, Any]:
        """Append one record (cleaned; returned) to metrics.jsonl and its ``tb_keys`` values as
        TensorBoard scalars ``<prefix><key>/...`` at ``step`` (written at the next flush)."""
        record = clean(record)
        self.metrics.append(json.dumps(record))
        if self._tb is not None and step is not None:
            for tag, v in scalars("", {k: record.get(k) for k in tb_keys}):
                self._tb.add_scalar(prefix + tag, v, step)
        return record

    def flush(self) -> None:
        if not self.enabled:
            return
        for name, lines in self.files.items():
            atomic_write_text(self.out_dir / name, "".join(line + "\n" for line in lines))
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
