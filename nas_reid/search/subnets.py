"""Every sub-network of a supernet scored, and the choice made from the scores.

The ``uniform`` strategy (single-path one-shot with uniform sampling, SPOS: Guo et al., ECCV
2020) trains the supernet's weights on random single paths and leaves the architecture to this
module, after the last epoch: with the trained weights inherited, every sub-network (one op per
cell position) is evaluated on the held-out identities, which the weights never saw.

Contract of :func:`score_subnets`:
- BatchNorm statistics are recalibrated for each sub-network (as SPOS does): the running
  statistics of the BNs that follow a choice are recomputed from ``calibration`` images (the
  weight share, test-time transform) as a cumulative average, BNs in training mode, every
  other module in eval mode (nothing random runs). The supernet's state is restored on exit.
- Returns per-query APs (query / gallery split by camera, cosine distance on ``feat_bn``, as
  the search's quick eval), so a choice's confidence is a bootstrap over held-out queries.

:meth:`SubnetScores.choose`: ``resamples`` bootstrap resamples of the queries (seeded); in each,
the sub-network with the best mean score; the frequency with which each op is at each position of
that best sub-network is the op's *probability*, and the pick is, at each position, the most
frequent op (the bootstrap's mode; with one clear winner, the sub-network of best held-out mAP).

:func:`score_at_init` is the ``zero_cost`` strategy's score: each sub-network's batch-hard triplet
loss at initialisation (no training step), per anchor of a few weight-share PK batches, BNs on
batch statistics, the random draws of the ops (DCS masks) seeded; lower is better, so the score
is its negative. How both share work along the network: docs/search.md, section
`nas_reid.search.subnets`.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from nas_reid.data.base import Item
from nas_reid.evaluation import evaluate_features
from nas_reid.losses import TripletLoss
from nas_reid.search.data import QueryGallery, plain_loader
from nas_reid.search.quality import arch_key


@dataclass
class SubnetScores:
    """The score of every sub-network: ``choices[i][p]`` is the op index at position
    ``positions[p]`` of sub-network ``i``; ``ap[i]`` its per-item scores, higher better: the
    per-query APs (fractions) of ``kind`` ``heldout``, the negated per-anchor triplet losses of
    ``kind`` ``init``."""

    positions: list[str]
    labels: list[str]
    choices: list[tuple[int, ...]]
    ap: np.ndarray
    r1: list[float] | None = None
    kind: str = "heldout"

    @property
    def mAP(self) -> np.ndarray:
        return self.ap.mean(axis=1)

    def key(self, i: int) -> str:
        """``"layer3=eca layer4=se"``, the ground-truth table's architecture key."""
        return arch_key({p: self.labels[k] for p, k in zip(self.positions, self.choices[i])})

    def choose(self, resamples: int, seed: int) -> tuple[tuple[int, ...], np.ndarray]:
        """The pick (op index per position) and ``(positions, ops)`` bootstrap frequencies."""
        rng = np.random.default_rng(seed)
        n = self.ap.shape[1]
        freq = np.zeros((len(self.positions), len(self.labels)))
        for start in range(0, resamples, 256):  # resamples in blocks: (block, queries) counts
            block = min(256, resamples - start)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=block)
            best = np.argmax(counts @ self.ap.T, axis=1)
            for b in best:
                for p, k in enumerate(self.choices[b]):
                    freq[p, k] += 1
        freq /= resamples
        return tuple(int(row.argmax()) for row in freq), freq

    @property
    def figure(self) -> str:
        """The ``subnets.csv`` column of the score: ``heldout_mAP`` or ``init_triplet``."""
        return "init_triplet" if self.kind == "init" else "heldout_mAP"

    def rows(self, pick: tuple[int, ...]) -> list[dict[str, Any]]:
        """One row per sub-network, best first (``subnets.csv``): held-out mAP and R1 in %, or
        the mean triplet loss at initialisation (``init_triplet``)."""
        order = np.argsort(-self.mAP, kind="stable")

        def figures(i: int) -> dict[str, float]:
            if self.kind == "init":
                return {"init_triplet": round(-float(self.mAP[i]), 6)}
            return {"heldout_mAP": round(100 * float(self.mAP[i]), 3),
                    "heldout_R1": round(100 * self.r1[i], 3)}

        return [{"rank": r + 1, "arch": self.key(i), **figures(i), "picked": self.choices[i] == pick}
                for r, i in enumerate(order)]


def _bns(modules: Sequence[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for module in modules for m in module.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def _scoring(net, training: bool) -> Iterator[None]:
    """``net`` in training or eval mode for the block; its state and mode restored on exit."""
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    was_training = net.training
    net.train(training)
    try:
        yield
    finally:
        net.load_state_dict(saved)
        net.train(was_training)


def _every_subnet(net, inputs: Any, segment: Callable[[str, Any], Any], score: Callable[[Any], Any],
                  progress: Callable[[int, int], None] | None) -> tuple[list[tuple[int, ...]], list]:
    """``score`` of every sub-network, sharing work along the network: at each position, for each
    op, ``segment(position, inputs)`` (run with that op fixed) turns the previous position's
    outputs into this one's; ``score`` takes the last position's. Returns the op choices (in
    ``itertools.product`` order) and their scores."""
    positions = list(net.cells)
    num_ops = len(net.space.labels)
    total = num_ops ** len(positions)
    results: dict[tuple[int, ...], Any] = {}

    def level(depth: int, prefix: tuple[int, ...], inputs: Any) -> None:
        position = positions[depth]
        for k in range(num_ops):
            with net.fixed({position: [k]}):
                outs = segment(position, inputs)
            choice = prefix + (k,)
            if depth == len(positions) - 1:
                results[choice] = score(outs)
                if progress is not None:
                    progress(len(results), total)
            else:
                level(depth + 1, choice, outs)

    level(0, (), inputs)
    choices = list(itertools.product(range(num_ops), repeat=len(positions)))
    return choices, [results[c] for c in choices]


@torch.no_grad()
def score_subnets(net, calibration: Sequence[Item], split: QueryGallery, device: torch.device, *,
                  batch_size: int = 128, num_workers: int = 0,
                  progress: Callable[[int, int], None] | None = None) -> SubnetScores:
    """Every sub-network of ``net`` (a :class:`~nas_reid.space.Supernet` with one-node cells and
    a fixed backbone) on ``split``; see the module doc. ``progress(done, total)`` is called after
    each sub-network."""
    size = net.space.input_size

    def first(items: Sequence[Item]) -> list[torch.Tensor]:
        loader = plain_loader(items, size, batch_size=batch_size, num_workers=num_workers)
        return [net.first_cell_input(imgs.to(device)) for imgs, *_ in loader]

    labels_of = {name: torch.tensor([item[j] for item in items]) for name, items, j in (
        ("qp", split.query, 1), ("gp", split.gallery, 1), ("qc", split.query, 2),
        ("gc", split.gallery, 2))}

    def segment(position: str, parts: tuple[list, list, list]) -> tuple[list, list, list]:
        cal = parts[0]
        bns = _bns(net.segment_modules(position))
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average over the calibration batches
            bn.train()
        for z in cal:
            if len(z) > 1:  # a BN in training mode needs two values per channel
                net.segment(position, z)
        for bn, momentum in zip(bns, momenta):
            bn.eval()
            bn.momentum = momentum
        return tuple([net.segment(position, z) for z in part] for part in parts)

    def score(parts: tuple[list, list, list]) -> tuple[np.ndarray, float]:
        qf = torch.cat([o["feat_bn"].float() for o in parts[1]])
        gf = torch.cat([o["feat_bn"].float() for o in parts[2]])
        r = evaluate_features(qf, gf, labels_of["qp"], labels_of["gp"], labels_of["qc"],
                              labels_of["gc"], metric="cosine", max_rank=1, per_query=True)
        return r["AP"], float(r["cmc"][0])

    with _scoring(net, training=False):
        parts = (first(calibration), first(split.query), first(split.gallery))
        choices, results = _every_subnet(net, parts, segment, score, progress)
    return SubnetScores(list(net.cells), list(net.space.labels), choices,
                        np.stack([ap for ap, _ in results]), [r1 for _, r1 in results])


@torch.no_grad()
def score_at_init(net, batches: Sequence[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
                  *, margin: float, seed: int,
                  progress: Callable[[int, int], None] | None = None) -> SubnetScores:
    """Every sub-network of ``net`` (one-node cells, fixed backbone) scored by the negated
    per-anchor batch-hard triplet loss (``margin``) of its pre-BN feature on ``batches`` of
    ``(images, identities)``, in training mode (BNs on batch statistics; their running
    statistics and everything else restored on exit), the random draws seeded by ``seed``."""
    triplet = TripletLoss(margin)
    pids = [b[1].to(device) for b in batches]

    def score(outs: list[dict[str, torch.Tensor]]) -> np.ndarray:
        return -torch.cat([triplet(o["feat"].float(), p, per_anchor=True)
                           for o, p in zip(outs, pids)]).cpu().numpy()

    with _scoring(net, training=True), \
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        inputs = [net.first_cell_input(b[0].to(device)) for b in batches]
        choices, results = _every_subnet(
            net, inputs, lambda position, zs: [net.segment(position, z) for z in zs], score,
            progress)
    return SubnetScores(list(net.cells), list(net.space.labels), choices, np.stack(results),
                        kind="init")
