"""What a search writes while it runs: metrics.jsonl, genotype_history.jsonl, TensorBoard, progress.

``metrics.jsonl``: one JSON object per line, ``"kind": "epoch"`` once per epoch and, every
``log_every`` steps, ``"kind": "step"``. Numbers that are not finite are written as ``null``. An
epoch record has all its keys always (``null`` where a figure does not apply): ``kind``,
``epoch`` (1-based; ``epochs``: the total), ``step``, ``time``, ``lr``, ``tau``, ``arch_updates``,
``loss``, ``rib``, ``heldout``, ``arch_probs``, ``backbone_probs``, ``backbone``, ``cost``,
``genotype``, ``op_counts``, ``collapse``, ``decisions``, ``dcs_keep``, ``best``, ``ddp``,
``subnets``. A step record: ``kind: "step"``, ``epoch`` (1-based, in progress), ``step``,
``time``, ``lr``, ``tau``, ``loss`` (this step's values, this rank). ``genotype_history.jsonl``:
the genotype JSON (:meth:`nas_reid.space.genotype.Genotype.to_dict`) of every epoch, one per
line, in order. Both files are rewritten atomically at each flush, so they always hold whole
lines; TensorBoard events go to ``tensorboard/``. Only rank 0 writes anything.
Every key of the epoch record, a ``uniform`` search's records and the TensorBoard scalars:
docs/search.md, section `nas_reid.search.runlog`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nas_reid.engine.runlog import METRICS_FILE, TENSORBOARD_DIR, MetricsLog

HISTORY_FILE = "genotype_history.jsonl"
__all__ = ["HISTORY_FILE", "METRICS_FILE", "TENSORBOARD_DIR", "RunLog"]


class RunLog(MetricsLog):
    """The metrics and genotype-history files and the TensorBoard writer of one search run.

    ``enabled=False`` (DDP ranks other than 0) keeps the lines in memory and writes nothing.
    """

    def __init__(self, out_dir: Path, *, enabled: bool, metrics: list[str] | None = None,
                 history: list[str] | None = None, purge_step: int | None = None) -> None:
        self.history: list[str] = list(history or [])
        super().__init__(out_dir, enabled=enabled, metrics=metrics,
                         files={HISTORY_FILE: self.history}, purge_step=purge_step)

    def step(self, record: dict[str, Any]) -> None:
        """Add one step record and its scalars (written to the file at the next flush)."""
        record = {"kind": "step", **record}
        self.add(record, tb_keys=("loss", "lr", "tau"), step=record["step"], prefix="step/")

    def epoch(self, record: dict[str, Any], genotype: dict[str, Any], labels: list[str],
              edges: dict[str, list[tuple[int, int]]]) -> None:
        """Add one epoch record and the epoch's genotype, then flush both files."""
        record = self.add({"kind": "epoch", **record},
                          tb_keys=("loss", "lr", "heldout", "rib", "dcs_keep", "tau", "epoch"),
                          step=record["step"])
        self.history.append(json.dumps(genotype))
        tb = self.tensorboard
        if tb is not None:
            step = record["step"]
            tb.add_scalar("collapse/identity_fraction", record["collapse"]["identity_fraction"], step)
            decisions = record.get("decisions") or {}
            if decisions.get("total"):
                tb.add_scalar("decisions/settled", decisions["settled"] / decisions["total"], step)
            for op, n in record["op_counts"].items():
                tb.add_scalar(f"ops/{op}", n, step)
            for position, rows in record["arch_probs"].items():
                for (s, t), row in zip(edges[position], rows):
                    for label, p in zip(labels, row):
                        tb.add_scalar(f"prob/{position}/{s}-{t}/{label}", p, step)
            options = genotype.get("backbone_probabilities", {})
            for key, row in record["backbone_probs"].items():
                for option, p in zip(options.get(key, {}).get("options", []), row):
                    tb.add_scalar(f"prob/backbone/{key}/{option}", p, step)
            cost = record["cost"]
            if cost is not None:
                unit = cost.get("unit", "MFLOPs").lower()
                for key in ("expected", "achieved"):
                    tb.add_scalar(f"cost/{key}_{unit}", cost[key], step)
            tb.add_text("genotype", record["genotype"], step)
        self.flush()
