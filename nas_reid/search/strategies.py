"""How a search chooses its architecture: one class per ``sampling.strategy``, apart from the loop.

The loop (:mod:`nas_reid.search.loop`) owns the run folder, the steps, the logs and the
checkpoints; it asks its strategy, built by :func:`strategy_for` from the space:

- :meth:`Strategy.arch_updates` whether the architecture step runs in a (0-based) epoch;
- :meth:`Strategy.temperature` whether the supernet's Gumbel temperature matters (then it
  follows ``sampling.tau`` and is logged as a schedule);
- :meth:`Strategy.end_epoch` after each epoch's quick eval and before the genotype is derived:
  it may set the architecture parameters, and returns what to log under ``subnets`` (or None);
- :meth:`Strategy.decisions` which choices of the epoch's genotype are settled;
- :meth:`Strategy.decided` whether the epoch's genotype is a choice at all (the collapse guard
  and the progress line skip one that is not).

How an edge mixes or samples its candidates in a forward pass is the mixed op's
(:class:`nas_reid.space.mixed.MixedOp`, by the same name). A new strategy is a subclass here
registered in :data:`STRATEGIES`, a name in ``SamplingConfig.strategy`` and, if it samples
differently, a branch in ``MixedOp.forward``; the loop does not change.
"""

from __future__ import annotations

import csv
import io
import random
import time
from typing import TYPE_CHECKING, Any, Sequence

import torch
from tqdm.auto import tqdm

from nas_reid.engine.runtime import broadcast_buffers
from nas_reid.fileio import atomic_write_text
from nas_reid.search.decisions import DecisionReport, bootstrap_report, decision_report
from nas_reid.search.subnets import score_subnets
from nas_reid.space.genotype import Genotype

if TYPE_CHECKING:
    from nas_reid.space import SearchSpace

SUBNETS_FILE = "subnets.csv"
CALIBRATION_IMAGES = 512
"""The ``uniform`` strategy recalibrates each sub-network's BatchNorms on this many weight-share
images (a seeded sample)."""


class Strategy:
    """``softmax`` (DARTS): the architecture step trains the parameters from the end of the
    warm-up; the genotype of every epoch is their argmax, judged over the epochs."""

    name = "softmax"

    def __init__(self, space: "SearchSpace") -> None:
        self.space = space

    def arch_updates(self, epoch: int) -> bool:
        return epoch >= self.space.schedule.warmup_epochs

    @property
    def temperature(self) -> bool:
        return False

    def end_epoch(self, run: Any, number: int) -> dict[str, Any] | None:
        return None

    def decided(self, scored: bool) -> bool:
        return True

    def decisions(self, history: Sequence[Genotype], scored: bool) -> DecisionReport | None:
        """``history``: the genotype of every epoch so far, this one last."""
        if not history:
            return None
        return decision_report(history, self.space.schedule.warmup_epochs)


class Gumbel(Strategy):
    """``gumbel`` (GDAS): as ``softmax``, one candidate sampled per edge and step, the
    temperature annealed over the architecture epochs."""

    name = "gumbel"

    @property
    def temperature(self) -> bool:
        return True


class Uniform(Strategy):
    """``uniform`` (SPOS): no architecture step; after the last epoch every sub-network is
    scored on the held-out identities (:mod:`nas_reid.search.subnets`), ``subnets.csv`` is
    written, and the architecture parameters become the log of the bootstrap frequencies, so
    the derived genotype is the bootstrap's choice and its probabilities those frequencies."""

    name = "uniform"

    def arch_updates(self, epoch: int) -> bool:
        return False

    def decided(self, scored: bool) -> bool:
        return scored  # before, the genotype is the argmax of untrained (zero) parameters

    def decisions(self, history: Sequence[Genotype], scored: bool) -> DecisionReport | None:
        return bootstrap_report(history[-1] if scored and history else None,
                                self.space.sampling.bootstrap)

    def end_epoch(self, run: Any, number: int) -> dict[str, Any] | None:
        """Scores every sub-network after the last epoch. ``run`` is the search
        (:class:`nas_reid.search.loop` ``_Search``): its supernet ``net``, identity ``split``
        and held-out ``eval_split``, ``device``, ``eval_batch``, ``num_workers``, ``seed``,
        ``world``, ``is_main``, ``progress`` and run folder ``out``."""
        if number != run.epochs:
            return None
        started = time.monotonic()
        net = run.net
        broadcast_buffers(net, run.world)
        pool = range(len(run.split.weight))
        chosen = sorted(random.Random(run.seed).sample(pool, min(CALIBRATION_IMAGES, len(pool))))
        bar = tqdm(total=self.space.num_subnets(), desc="scoring sub-networks", unit="net",
                   disable=not run.progress, leave=False, dynamic_ncols=True)
        try:
            scores = score_subnets(net, [run.split.weight[i] for i in chosen], run.eval_split,
                                   run.device, batch_size=run.eval_batch,
                                   num_workers=run.num_workers,
                                   progress=lambda done, total: bar.update(done - bar.n))
        finally:
            bar.close()
        resamples = self.space.sampling.bootstrap
        pick, freq = scores.choose(resamples, run.seed)
        with torch.no_grad():
            for p, position in enumerate(scores.positions):
                logits = torch.log(torch.from_numpy(freq[p]).clamp(min=0.5 / resamples))
                net.arch[position].copy_(logits.to(net.arch[position]).view(1, -1))
        rows = scores.rows(pick)
        if run.is_main:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            atomic_write_text(run.out / SUBNETS_FILE, text.getvalue())
        best, picked = rows[0], next(r for r in rows if r["picked"])
        return {"scored": len(rows), "resamples": resamples, "calibration_images": len(chosen),
                "best": best["arch"], "best_mAP": best["heldout_mAP"],
                "picked": picked["arch"], "picked_mAP": picked["heldout_mAP"],
                "picked_rank": picked["rank"], "seconds": round(time.monotonic() - started, 3)}


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Strategy, Gumbel, Uniform)}


def strategy_for(space: "SearchSpace") -> Strategy:
    return STRATEGIES[space.sampling.strategy](space)
