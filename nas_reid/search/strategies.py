"""How a search chooses its architecture: one class per ``sampling.strategy``, apart from the loop.

The loop (:mod:`nas_reid.search.loop`) owns the run folder, the steps, the logs and the
checkpoints; it asks its strategy, built by :func:`strategy_for` from the space:

- :meth:`Strategy.epochs` how many epochs the search runs, :attr:`Strategy.trains_weights`
  whether they have weight steps at all;
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

import contextlib
import csv
import io
import itertools
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import torch
from tqdm.auto import tqdm

from nas_reid.data.streams import BatchStream
from nas_reid.engine.runtime import broadcast_buffers
from nas_reid.fileio import atomic_write_text
from nas_reid.search.decisions import (HELDOUT_QUERIES, INIT_ANCHORS, DecisionReport,
                                       bootstrap_report, decision_report)
from nas_reid.search.data import WEIGHT_STREAM
from nas_reid.search.subnets import SubnetScores, score_at_init, score_subnets
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

    trains_weights = True

    def __init__(self, space: "SearchSpace") -> None:
        self.space = space

    def epochs(self, configured: int) -> int:
        """The epochs the search runs, given ``schedule.epochs``."""
        return configured

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

    resampled = HELDOUT_QUERIES

    def decisions(self, history: Sequence[Genotype], scored: bool) -> DecisionReport | None:
        return bootstrap_report(history[-1] if scored and history else None,
                                self.space.sampling.bootstrap, self.resampled)

    def end_epoch(self, run: Any, number: int) -> dict[str, Any] | None:
        """Scores every sub-network after the last epoch. ``run`` is the search
        (:class:`nas_reid.search.loop` ``_Search``): its supernet ``net``, identity ``split``
        and held-out ``eval_split``, ``device``, ``eval_batch``, ``num_workers``, ``seed``,
        ``world``, ``is_main``, ``progress`` and run folder ``out``."""
        if number != run.epochs:
            return None
        started = time.monotonic()
        broadcast_buffers(run.net, run.world)
        pool = range(len(run.split.weight))
        chosen = sorted(random.Random(run.seed).sample(pool, min(CALIBRATION_IMAGES, len(pool))))
        with _bar(self.space, run) as progress:
            scores = score_subnets(run.net, [run.split.weight[i] for i in chosen], run.eval_split,
                                   run.device, batch_size=run.eval_batch,
                                   num_workers=run.num_workers, progress=progress)
        return self.adopt(run, scores, started, {"calibration_images": len(chosen)})

    def adopt(self, run: Any, scores: SubnetScores, started: float,
              extra: dict[str, Any]) -> dict[str, Any]:
        """The bootstrap choice of ``scores`` made the architecture parameters, ``subnets.csv``
        written (main rank), and what the epoch record logs under ``subnets``."""
        net = run.net
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
        figure = scores.figure
        short = SCORE_TEXT[figure].key
        return {"scored": len(rows), "resamples": resamples, **extra, "score": figure,
                "best": best["arch"], f"best_{short}": best[figure],
                "picked": picked["arch"], f"picked_{short}": picked[figure],
                "picked_rank": picked["rank"], "seconds": round(time.monotonic() - started, 3)}


class ZeroCost(Uniform):
    """``zero_cost``: no training at all. The supernet as built (the pretrained backbone, every
    candidate freshly initialised) scores every sub-network by its batch-hard triplet loss on
    ``sampling.proxy_batches`` weight-share PK batches (:func:`nas_reid.search.subnets.score_at_init`),
    one epoch without steps; the choice, its bootstrap (over the anchors) and ``subnets.csv``
    are as ``uniform``'s."""

    name = "zero_cost"
    trains_weights = False
    resampled = INIT_ANCHORS

    def epochs(self, configured: int) -> int:
        return 1

    def end_epoch(self, run: Any, number: int) -> dict[str, Any] | None:
        if number != run.epochs:
            return None
        started = time.monotonic()
        sched = self.space.schedule
        # every rank scores the same batches (num_replicas 1): the same choice everywhere
        stream = BatchStream(run.split.weight, self.space.input_size, p=sched.batch.p,
                             k=sched.batch.k, seed=run.seed, stream=WEIGHT_STREAM)
        batches = [(b[0], b[1]) for b in itertools.islice(stream.epoch_batches(0),
                                                           self.space.sampling.proxy_batches)]
        with _bar(self.space, run) as progress:
            scores = score_at_init(run.net, batches, run.device, margin=sched.loss.triplet_margin,
                                   seed=run.seed, progress=progress)
        return self.adopt(run, scores, started, {"batches": len(batches),
                                                 "anchors": int(scores.ap.shape[1])})


@dataclass(frozen=True)
class ScoreText:
    """How the search's lines speak of one kind of sub-network score (``subnets.csv``'s
    figure): the suffix of its record keys (``best_<key>``, ``picked_<key>``), the format of a
    value, how the sub-networks were scored, what a value is called, and why close ones leave a
    choice unsettled."""

    key: str
    fmt: str
    scored: str
    value: str
    too_close: str


SCORE_TEXT = {
    "heldout_mAP": ScoreText("mAP", "{:.1f}", "on the held-out identities (mAP)", "held-out mAP",
                             "held-out mAPs are too close for the held-out queries"),
    "init_triplet": ScoreText("triplet", "{:.4f}", "at initialisation (triplet loss, {anchors} "
                              "anchors)", "triplet loss at initialisation",
                              "triplet losses at initialisation are too close for the anchors"),
}


def score_text(subnets: dict[str, Any]) -> ScoreText:
    """The :class:`ScoreText` of a ``subnets`` record (held-out mAP in records without ``score``)."""
    return SCORE_TEXT[subnets.get("score", "heldout_mAP")]


def scored_line(subnets: dict[str, Any]) -> str:
    """The progress line of the epoch that scored every sub-network (its ``subnets`` record)."""
    text = score_text(subnets)
    value = {k: text.fmt.format(subnets[f"{k}_{text.key}"]) for k in ("best", "picked")}
    return (f"{subnets['scored']} sub-networks scored {text.scored.format(**subnets)} in "
            f"{subnets['seconds']:.0f} s: best {subnets['best']} ({value['best']}); picked "
            f"{subnets['picked']} ({value['picked']}); {SUBNETS_FILE}")


def picked_line(subnets: dict[str, Any]) -> str:
    """What the end of a search says of its picked sub-network's score."""
    text = score_text(subnets)
    return (f"{text.value} {text.fmt.format(subnets[f'picked_{text.key}'])} (the picked "
            f"sub-network, rank {subnets['picked_rank']} of {subnets['scored']})")


class NoSteps:
    """The batch stream of a search whose strategy trains no weights: every epoch is empty."""

    batch = 0

    def batches_in(self, epoch: int) -> int:
        return 0

    def epoch_batches(self, epoch: int, start: int = 0):
        return iter(())


@contextlib.contextmanager
def _bar(space: "SearchSpace", run: Any):
    """A progress bar over the sub-networks (shown with ``run.progress``); yields its callback."""
    bar = tqdm(total=space.num_subnets(), desc="scoring sub-networks", unit="net",
               disable=not run.progress, leave=False, dynamic_ncols=True)
    try:
        yield lambda done, total: bar.update(done - bar.n)
    finally:
        bar.close()


STRATEGIES: dict[str, type[Strategy]] = {s.name: s for s in (Strategy, Gumbel, Uniform, ZeroCost)}


def strategy_for(space: "SearchSpace") -> Strategy:
    return STRATEGIES[space.sampling.strategy](space)
