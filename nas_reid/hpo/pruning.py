"""Early stopping of tuning trials: one rule, applied alike by the Optuna and the Ray backend.

A trial reports its validation metric after every epoch. :class:`StoppingRule` decides, from
the value a trial reports at an epoch and the values the other trials reported at that same
epoch before it, whether the trial stops there: ``asha`` (asynchronous successive halving, at
the rungs ``grace_period * reduction_factor ** k``), ``median`` (the median stopping rule, from
``grace_period`` on) or ``none``. A trial is never stopped at its last epoch.
:func:`optuna_pruner` wraps the rule as an Optuna pruner,
:class:`nas_reid.hpo.ray_backend.RuleScheduler` as a Ray Tune scheduler, so the same reported
values give the same decisions in both backends. :func:`default_grace_period`: the recipe's
learning-rate warm-up plus a quarter of the epochs (at least one).
The rules in detail: docs/tuning.md, section `nas_reid.hpo.pruning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

RULES = ("asha", "median", "none")


def default_grace_period(warmup_epochs: int, epochs: int) -> int:
    """The warm-up plus a quarter of ``epochs`` (at least one epoch), at most ``epochs``."""
    return min(int(epochs), int(warmup_epochs) + max(1, math.ceil(epochs / 4)))


@dataclass(frozen=True)
class StoppingRule:
    """Which trial stops at which epoch (see the module doc)."""

    rule: str
    grace_period: int
    reduction_factor: int
    max_epochs: int
    mode: str = "max"

    def rungs(self) -> list[int]:
        """``asha``: the epochs at which trials are compared (below ``max_epochs``)."""
        out, rung = [], self.grace_period
        while rung < self.max_epochs:
            out.append(rung)
            rung *= self.reduction_factor
        return out

    def stops(self, epoch: int, value: float, others: Sequence[float]) -> bool:
        """Whether a trial that reports ``value`` at ``epoch`` stops, ``others`` being what the
        other trials reported at that epoch before it."""
        if epoch >= self.max_epochs or self.rule == "none" or value is None or not \
                math.isfinite(value):
            return False
        sign = 1.0 if self.mode == "max" else -1.0
        mine, theirs = sign * value, sorted((sign * v for v in others), reverse=True)
        if self.rule == "asha":
            if epoch not in self.rungs():
                return False
            ranked = sorted([mine, *theirs], reverse=True)
            keep = max(1, len(ranked) // self.reduction_factor)
            return mine < ranked[keep - 1]
        if self.rule == "median":
            if epoch < self.grace_period or len(theirs) < 2:
                return False
            middle = len(theirs) // 2
            median = (theirs[middle] if len(theirs) % 2
                      else (theirs[middle - 1] + theirs[middle]) / 2)
            return mine < median
        raise ValueError(f"unknown early-stopping rule {self.rule!r} (choose from {', '.join(RULES)})")


def optuna_pruner(rule: StoppingRule) -> Any:
    """An ``optuna.pruners.BasePruner`` deciding by ``rule`` on the trial's last reported epoch
    and the other trials' intermediate values at that epoch (those of the trial it continues,
    ``user_attrs["continues"]``, left out)."""
    import optuna

    class _Pruner(optuna.pruners.BasePruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            epoch = trial.last_step
            if epoch is None:
                return False
            skip = {trial.number, trial.user_attrs.get("continues")}
            others = [t.intermediate_values[epoch] for t in study.get_trials(deepcopy=False)
                      if t.number not in skip and epoch in t.intermediate_values]
            return rule.stops(epoch, trial.intermediate_values[epoch], others)

    return _Pruner()
