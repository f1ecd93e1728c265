"""Mixed ops: one edge of a cell, holding every candidate op and mixing them by architecture weights.

A :class:`MixedOp` owns the candidate modules but not the architecture parameters: the supernet
passes the edge's row ``alpha`` (one logit per candidate) to :meth:`MixedOp.forward`. Strategies
(``nas-reid/space`` YAML ``sampling.strategy``):

- ``softmax``: the DARTS continuous relaxation, ``sum_i softmax(alpha)_i * op_i(x)``;
- ``gumbel``: GDAS's hard Gumbel-softmax with a straight-through gradient; in training only the
  sampled candidate k runs and the output is ``h_k * op_k(x) + (sum_{i != k} h_i) * x``, exactly
  ``op_k(x)`` in value (the cell input stands in for the candidates that did not run);
- ``uniform``: SPOS (Guo et al., "Single Path One-Shot Neural Architecture Search with Uniform
  Sampling", ECCV 2020): one candidate drawn uniformly, alpha not trained;
- ``zero_cost``: no training step at all; a training-mode forward draws as ``uniform`` does.

In eval mode ``gumbel`` and ``uniform`` run ``k = argmax alpha``. :attr:`MixedOp.fixed`, when
set to an index, runs that candidate alone whatever alpha. A ``zero`` candidate is never run.
Each strategy in detail, and why the cell input is the stand-in: docs/internals.md, section
`nas_reid.space.mixed`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

STRATEGIES = ("softmax", "gumbel", "uniform", "zero_cost")
_MAX_DRAWS = 100


def gumbel_hard_sample(alpha: torch.Tensor, tau: float | torch.Tensor,
                       generator: torch.Generator | None = None) -> tuple[int, torch.Tensor]:
    """Draw one candidate from ``Categorical(softmax(alpha))``; returns ``(k, h)``.

    ``h`` is the straight-through one-hot weight vector: exactly one-hot in value, with the
    gradient of ``softmax((log_softmax(alpha) + g) / tau)``. A draw giving a non-finite value (a Gumbel
    noise of inf, vanishingly rare) is drawn again, as GDAS does.
    """
    logp = F.log_softmax(alpha, dim=-1)
    for _ in range(_MAX_DRAWS):
        u = torch.rand(logp.shape, generator=generator, device=logp.device, dtype=logp.dtype)
        gumbel = -torch.log(-torch.log(u))
        probs = F.softmax((logp + gumbel) / tau, dim=-1)
        if bool(torch.isfinite(probs).all()):
            break
    else:  # pragma: no cover - needs 100 non-finite draws in a row
        raise FloatingPointError("Gumbel sampling kept giving non-finite values; check alpha and tau")
    k = int(probs.argmax())
    hard = torch.zeros_like(probs)
    hard[k] = 1.0
    return k, hard + (probs - probs.detach())


class MixedOp(nn.Module):
    """One edge: ``candidates[i]`` is op ``names[i]``; mixes them by the row ``alpha``."""

    def __init__(self, candidates: Sequence[nn.Module], names: Sequence[str],
                 strategy: str = "softmax") -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown sampling strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        if len(candidates) != len(names) or not candidates:
            raise ValueError("MixedOp needs one name per candidate and at least one candidate")
        self.candidates = nn.ModuleList(candidates)
        self.names = list(names)
        self.strategy = strategy
        self.last_choice: int | None = None
        """Index of the candidate run by the last gumbel / uniform forward (None for softmax)."""
        self.fixed: int | None = None
        """Run this candidate alone, whatever alpha (one sub-network); None: the strategy's rule."""

    def extra_repr(self) -> str:
        return f"strategy={self.strategy!r}, names={self.names}"

    def _is_zero(self, i: int) -> bool:
        return self.names[i] == "zero"

    def forward(self, x: torch.Tensor, alpha: torch.Tensor,
                tau: float | torch.Tensor = 1.0) -> torch.Tensor:
        if alpha.shape != (len(self.candidates),):
            raise ValueError(f"alpha must have shape ({len(self.candidates)},), got {tuple(alpha.shape)}")
        if self.fixed is not None:
            return self._run(self.fixed, x)
        if self.strategy == "softmax":
            return self._softmax(x, alpha)
        if not self.training:
            return self._run(int(alpha.argmax()), x)
        if self.strategy in ("uniform", "zero_cost"):  # zero_cost trains nothing: never reached
            return self._run(int(torch.randint(len(self.candidates), ())), x)
        k, hard = gumbel_hard_sample(alpha, tau)
        self.last_choice = k
        h = hard.to(x.dtype)
        chosen = torch.zeros_like(x) if self._is_zero(k) else self.candidates[k](x)
        not_run = h.sum() - h[k]  # exactly 0 in value; the input stands in for these candidates
        return h[k] * chosen + not_run * x

    def _run(self, k: int, x: torch.Tensor) -> torch.Tensor:
        self.last_choice = k
        return torch.zeros_like(x) if self._is_zero(k) else self.candidates[k](x)

    def _softmax(self, x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        self.last_choice = None
        weights = F.softmax(alpha, dim=-1).to(x.dtype)
        out = None
        for i, op in enumerate(self.candidates):
            if self._is_zero(i):
                continue
            term = weights[i] * op(x)
            out = term if out is None else out + term
        return torch.zeros_like(x) * weights.sum() if out is None else out
