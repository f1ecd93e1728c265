"""What a search writes while it runs: metrics.jsonl, genotype_history.jsonl, TensorBoard, progress.

``metrics.jsonl``: one JSON object per line, ``"kind": "epoch"`` once per epoch and, every
``log_every`` steps, ``"kind": "step"``. Numbers that are not finite are written as ``null``.

Epoch record (all keys always present; ``null`` where a figure does not apply)::

    kind         "epoch"
    epoch        1-based number of the epoch just finished; epochs: the total
    step         optimisation steps done so far (weight steps; each may carry an arch step)
    time         seconds of search so far (over resumed sessions)
    lr           {"weights": lr of this epoch, "arch": Adam lr}
    tau          Gumbel temperature of this epoch
    arch_updates whether this epoch updated the architecture (false during warm-up)
    loss         {"weights": {"total", "id", "triplet", "rib"}, "arch": {"triplet", "total"}
                 | null}: means over the epoch's steps (over all ranks under DDP); the arch
                 "total" includes the cost term
    rib          {"weight", "I_XF", "I_FY", "IB"} (nats) from the epoch's start | null
    heldout      {"mAP", "R1", "R5", "queries", "gallery"} quick eval on held-out ids | null
    arch_probs   {position: [[p per op] per edge]}: softmax(alpha); rows follow
                 genotype_history's "probabilities" edges, columns the space's op labels
    backbone_probs {choice: [p per option]}: softmax of a searchable backbone's choices ({})
    backbone     the derived genotype's backbone in one line (``mobilenetv2: s1 16 k3 ...``)
    cost         {"form", "metric", "unit", "target", "expected", "achieved"[, "device"]}:
                 the cost in "unit" ("MFLOPs" for metric flops, "ms" for latency, then with
                 the lookup table's "device"), expected under the probabilities, achieved by
                 the derived genotype | null (no cost model: a fixed backbone with
                 ``schedule.cost.form: none``)
    genotype     one-line summary of the derived genotype (skip cap applied)
    op_counts    {op: live edges using it} in that genotype
    collapse     {"identity_edges", "live_edges", "identity_fraction", "identity_cells",
                 "warning"} of the genotype derived *without* the skip cap
    decisions    {"settled", "total", "window", "arch_epochs", "decisions": [{"key", "choice",
                 "probability", "runner_up", "runner_up_probability", "margin", "held_since",
                 "held_epochs", "changes", "settled", "capped", "movement", "confidence"}]}:
                 which choices of this epoch's genotype have held over the last "window"
                 architecture epochs with a margin beyond its movement (:mod:`nas_reid.search.decisions`)
    dcs_keep     {module: mean kept-channel fraction of the last training forward}
    best         {"mAP", "R1", "epoch"}: best held-out mAP so far
    ddp          {"world_size", "genotypes_agree"}: every rank derived the same genotype
    subnets      ``uniform`` strategy, last epoch: {"scored", "resamples", "calibration_images",
                 "best", "best_mAP", "picked", "picked_mAP", "picked_rank", "seconds"} (held-out
                 mAP in percent; every sub-network in ``subnets.csv``) | null

A ``uniform`` search trains no architecture parameters: until its last epoch they stay at 0
(``arch_probs`` uniform, ``decisions`` empty, ``arch_updates`` false); after it, they are the
log of the bootstrap frequencies of :mod:`nas_reid.search.subnets`, and ``decisions`` has
``"resamples"`` and each decision ``"basis": "bootstrap"``.

Step record: ``kind: "step"``, ``epoch`` (1-based, in progress), ``step``, ``time``, ``lr``,
``tau``, ``loss`` (this step's values, this rank).

``genotype_history.jsonl``: the genotype JSON (:meth:`nas_reid.space.genotype.Genotype.to_dict`) of
every epoch, one per line, in order.

Both files are kept in memory (and in the checkpoint) and rewritten atomically at each flush, so
they always hold whole lines; a resumed search rewrites them from its checkpoint. TensorBoard
events go to ``tensorboard/`` (scalars ``loss/*``, ``lr/*``, ``tau``, ``heldout/*``,
``rib/*``, ``prob/<position>/<edge>/<op>``, ``prob/backbone/<choice>/<option>``,
``decisions/settled`` (the settled fraction of the choices),
``cost/*_mflops`` or ``cost/*_ms``, ``ops/<op>``, ``collapse/identity_fraction``,
``dcs_keep/*``, and the genotype as text); a resumed search purges the events written after its
checkpoint (``purge_step``). Only rank 0 writes anything.
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
