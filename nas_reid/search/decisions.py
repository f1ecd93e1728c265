"""How firmly a search made each of its choices: the margin over the runner-up, and how long the
choice has held.

From the genotype of every epoch (``genotype_history.jsonl``) this module says which choices of
the final genotype the search had settled on and which it had not. :func:`decision_values` lists
a genotype's decisions, each with a key, a value, the probability behind the value and the
runner-up: the op of each kept edge (``layer3 0->1``), which incoming edges a node keeps
(``layer3 node 2 inputs``), each choice of a searchable backbone (``backbone s2_width``). Only
epochs that updated the architecture count (after ``warmup_epochs``). A decision is **settled**
when its value was the same over the last :data:`SETTLE_EPOCHS` such epochs **and** its final
margin is more than :data:`NOISE_MULTIPLE` times the margin's own epoch-to-epoch movement. For
the ``uniform`` strategy :func:`bootstrap_report` judges the bootstrap frequencies instead: a
choice is settled when its op was the best sub-network's in at least :data:`SETTLE_FREQUENCY` of
the resamples.
The decisions, the rule and its reasons in detail: docs/search.md, section
`nas_reid.search.decisions`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

from nas_reid.space.genotype import Genotype

SETTLE_EPOCHS = 3
"""A decision is settled when it held over the last this many architecture-updating epochs..."""

NOISE_MULTIPLE = 2.0
"""... and its final margin exceeds this many times its mean epoch-to-epoch movement."""

HELDOUT_QUERIES, INIT_ANCHORS = "the held-out queries", "the anchors at initialisation"
"""What the bootstrap of a ``uniform`` / a ``zero_cost`` search resamples."""

SETTLE_FREQUENCY = 0.95
"""A ``uniform`` search's choice is settled when its op was that of the best sub-network in at
least this share of the bootstrap resamples of the held-out queries."""


@dataclass(frozen=True)
class DecisionValue:
    """One decision in one genotype."""

    value: str
    probability: float | None
    runner_up: str | None
    runner_up_probability: float | None
    capped: bool = False


@dataclass(frozen=True)
class Decision:
    """One decision of the final genotype, over the search's architecture epochs."""

    key: str
    choice: str
    probability: float | None
    runner_up: str | None
    runner_up_probability: float | None
    held_since: int | None
    """First epoch of the final run of equal values (None: no architecture epoch)."""
    held_epochs: int
    changes: int
    settled: bool
    capped: bool = False
    """The skip cap replaced this (``identity``) choice in the exported genotype."""
    movement: float | None = None
    """Mean absolute epoch-to-epoch change of the choice's signed margin over the last
    ``window`` architecture epochs (None: no probabilities, or fewer than two such epochs)."""
    basis: str = "history"
    """``history``: judged over the epochs; ``bootstrap``: the probabilities are bootstrap
    frequencies (:func:`bootstrap_report`)."""

    @property
    def confidence(self) -> float | None:
        """The final margin in units of its movement (inf: it did not move)."""
        if self.margin is None or self.movement is None:
            return None
        return math.inf if self.movement == 0 else self.margin / self.movement

    @property
    def margin(self) -> float | None:
        if self.probability is None or self.runner_up_probability is None:
            return None
        return self.probability - self.runner_up_probability

    def describe(self) -> str:
        """``layer3 0->1: eca p 0.150 vs rga_s 0.149 (held since epoch 12, changed 6 times)``."""
        if self.basis == "bootstrap":
            vs = (f" vs {self.runner_up} {self.runner_up_probability:.0%}"
                  if self.runner_up is not None and self.runner_up_probability is not None else "")
            return (f"{self.key}: {self.choice} in {self.probability:.0%} of the bootstrap "
                    f"resamples{vs}")
        p = f" p {self.probability:.3f}" if self.probability is not None else ""
        vs = (f" vs {self.runner_up} {self.runner_up_probability:.3f}"
              if self.runner_up is not None and self.runner_up_probability is not None else "")
        held = (f"held since epoch {self.held_since}" if self.held_since is not None
                else "no architecture epoch")
        changed = f"changed {self.changes} time{'s' if self.changes != 1 else ''}"
        cap = "; replaced by the skip cap" if self.capped else ""
        conf = self.confidence
        moved = ("" if conf is None else "; margin steady" if math.isinf(conf)
                 else f"; margin {conf:.1f}x its epoch-to-epoch movement")
        return f"{self.key}: {self.choice}{p}{vs} ({held}, {changed}{moved}{cap})"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["margin"] = None if self.margin is None else round(self.margin, 6)
        d["movement"] = None if self.movement is None else round(self.movement, 6)
        conf = self.confidence
        d["confidence"] = None if conf is None else (None if math.isinf(conf) else round(conf, 3))
        if self.basis == "history":
            del d["basis"]
        return d


@dataclass(frozen=True)
class DecisionReport:
    """Every decision of the final genotype (:func:`decision_report`)."""

    decisions: list[Decision]
    window: int
    arch_epochs: list[int] = field(default_factory=list)
    """The epochs (1-based) that updated the architecture, in order."""
    resamples: int | None = None
    """Set for a :func:`bootstrap_report`: the number of resamples behind its frequencies."""
    resampled: str = HELDOUT_QUERIES
    """What a :func:`bootstrap_report`'s resamples draw from."""

    @property
    def settled(self) -> list[Decision]:
        return [d for d in self.decisions if d.settled]

    @property
    def unsettled(self) -> list[Decision]:
        return [d for d in self.decisions if not d.settled]

    def summary(self) -> str:
        """``2 of 3 settled (unchanged over the last 3 architecture epochs, margin above 2x its
        movement)``."""
        n = len(self.decisions)
        if self.resamples is not None:
            if not n:
                return "every sub-network is scored at the end"
            return (f"{len(self.settled)} of {n} settled (the op of the best sub-network in at "
                    f"least {SETTLE_FREQUENCY:.0%} of {self.resamples} bootstrap resamples of "
                    f"{self.resampled})")
        if not n:
            return "none to make"
        if len(self.arch_epochs) < self.window:
            k = len(self.arch_epochs)
            return (f"0 of {n} settled: the search updated the architecture in {k} epoch"
                    f"{'s' if k != 1 else ''}, fewer than the {self.window} a choice must hold for")
        return (f"{len(self.settled)} of {n} settled (unchanged over the last {self.window} "
                f"architecture epochs, margin above {NOISE_MULTIPLE:g}x its movement)")

    def as_dict(self) -> dict[str, Any]:
        """The metrics record's ``decisions``."""
        out = {"settled": len(self.settled), "total": len(self.decisions), "window": self.window,
               "arch_epochs": len(self.arch_epochs),
               "decisions": [d.as_dict() for d in self.decisions]}
        if self.resamples is not None:
            out["resamples"] = self.resamples
            out["resampled"] = self.resampled
        return out


# ------------------------------------------------------------------------------------- values


def _top_two(row: Sequence[float], allowed: Iterable[int]) -> tuple[int | None, int | None]:
    """Indices of the largest and second largest ``row`` values among ``allowed`` (ties: the
    lower index first, as :func:`nas_reid.space.genotype.derive_genotype` breaks them)."""
    order = sorted(allowed, key=lambda k: (-row[k], k))
    return (order[0] if order else None), (order[1] if len(order) > 1 else None)


def decision_values(genotype: Genotype, keys: Iterable[str] | None = None) -> dict[str, DecisionValue]:
    """The decisions of ``genotype`` (see the module doc), from its recorded probabilities.

    ``keys``: the decisions to compute (those of another genotype of the same space); default
    the genotype's own: the ops of its kept edges, the inputs of nodes that drop edges, and the
    backbone's choices. A genotype without probabilities (hand-written) has no decisions.
    """
    values: dict[str, DecisionValue] = {}
    wanted = None if keys is None else set(keys)
    for cell in genotype.cells:
        probs = genotype.probabilities.get(cell.position)
        if probs is None:
            continue
        labels = list(probs.ops)
        nonzero = [k for k, name in enumerate(labels) if name != "zero"]
        edges = [tuple(e) for e in probs.edges]
        tops = [_top_two(row, nonzero) for row in probs.values]
        strength = {e: row[best] if best is not None else 0.0
                    for e, row, (best, _) in zip(edges, probs.values, tops)}
        kept = {(e.source, e.target): e.op for e in cell.edges}
        for (s, t), row, (best, second) in zip(edges, probs.values, tops):
            key = f"{cell.position} {s}->{t}"
            if (wanted is None and (s, t) not in kept) or (wanted is not None and key not in wanted):
                continue
            if best is None:
                continue
            capped = (labels[best] == "identity" and (s, t) in kept
                      and kept[(s, t)] != "identity")
            values[key] = DecisionValue(
                labels[best], row[best], labels[second] if second is not None else None,
                row[second] if second is not None else None, capped)
        for target in sorted({t for _, t in edges}):
            key = f"{cell.position} node {target} inputs"
            incoming = [e for e in edges if e[1] == target]
            chosen = sorted(s for (s, t) in kept if t == target)
            if wanted is not None and key not in wanted:
                continue
            if len(incoming) <= len(chosen) or not chosen:
                continue
            dropped = [e for e in incoming if e[0] not in chosen]
            weakest = min(strength[(s, target)] for s in chosen)
            strongest = max(dropped, key=lambda e: (strength[e], -e[0]))
            values[key] = DecisionValue(
                ",".join(map(str, chosen)), weakest, f"{strongest[0]}->{target}",
                strength[strongest])
    for key, choice in genotype.backbone_probabilities.items():
        name = f"backbone {key}"
        if wanted is not None and name not in wanted:
            continue
        best, second = _top_two(choice.values, range(len(choice.values)))
        values[name] = DecisionValue(
            str(choice.options[best]), choice.values[best],
            str(choice.options[second]) if second is not None else None,
            choice.values[second] if second is not None else None)
    return values


# ------------------------------------------------------------------------------------- report


def _signed_margin(v: DecisionValue, choice: str) -> float | None:
    """How far ``choice`` led (positive) or trailed (negative) in one epoch: its probability
    minus the best other candidate's; where it was neither first nor second, minus the gap
    between those two (it trailed by at least that much)."""
    if v.probability is None or v.runner_up_probability is None:
        return None
    gap = v.probability - v.runner_up_probability
    return gap if v.value == choice else -gap


def decision_report(history: Sequence[Genotype], warmup_epochs: int,
                    window: int = SETTLE_EPOCHS) -> DecisionReport:
    """The decisions of the last genotype of ``history`` (one genotype per epoch, in order), over
    the epochs after ``warmup_epochs`` (each genotype's ``provenance.epoch``; where it is
    missing, its 1-based place in ``history``)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not history:
        return DecisionReport([], window)
    final = history[-1]
    current = decision_values(final)
    numbered = [(g.provenance.epoch if g.provenance.epoch is not None else i + 1, g)
                for i, g in enumerate(history)]
    arch = [(n, g) for n, g in numbered if n > warmup_epochs]
    series = [(n, decision_values(g, current)) for n, g in arch]
    decisions = []
    for key, now in current.items():
        seen = [(n, v[key].value) for n, v in series if key in v]
        changes = sum(a[1] != b[1] for a, b in zip(seen, seen[1:]))
        held_since, held = None, 0
        for n, value in reversed(seen):
            if value != now.value:
                break
            held_since, held = n, held + 1
        margins = [m for m in (_signed_margin(v[key], now.value) for _, v in series if key in v)
                   if m is not None][-window:]
        movement = (sum(abs(b - a) for a, b in zip(margins, margins[1:])) / (len(margins) - 1)
                    if len(margins) > 1 else None)
        margin = (None if now.probability is None or now.runner_up_probability is None
                  else now.probability - now.runner_up_probability)
        steady = margin is None or margin > NOISE_MULTIPLE * (movement or 0.0)
        settled = len(seen) >= window and held >= window and steady
        decisions.append(Decision(key, now.value, now.probability, now.runner_up,
                                  now.runner_up_probability, held_since, held, changes, settled,
                                  now.capped, movement))
    return DecisionReport(decisions, window, [n for n, _ in arch])


def bootstrap_report(genotype: Genotype | None, resamples: int,
                     resampled: str = HELDOUT_QUERIES) -> DecisionReport:
    """The decisions of a ``uniform`` or ``zero_cost`` search's genotype, whose probabilities
    are the frequencies of ``resamples`` bootstrap resamples of ``resampled`` (``None``: not
    scored yet, no decisions)."""
    if genotype is None:
        return DecisionReport([], 0, resamples=resamples, resampled=resampled)
    decisions = [Decision(key, v.value, v.probability, v.runner_up, v.runner_up_probability,
                          None, 0, 0, v.probability is not None
                          and v.probability >= SETTLE_FREQUENCY - 1e-9, v.capped,
                          basis="bootstrap")
                 for key, v in decision_values(genotype).items()]
    return DecisionReport(decisions, 0, resamples=resamples, resampled=resampled)
