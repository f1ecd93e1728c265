"""The search strategy and its schedule: the half of a search-space YAML that is not hashed.

A search-space file (:mod:`nas_reid.space.config`) holds the architecture space (``input``,
``backbone``, ``cells``, ``ops``: what :meth:`~nas_reid.space.config.SearchSpace.canonical_hash`
covers) and, in this module's schema, how that space is searched: ``sampling``
(:class:`SamplingConfig`: the strategy, softmax / gumbel / uniform, its temperature, the
bootstrap behind ``uniform``'s choice) and ``schedule`` (:class:`ScheduleConfig`: epochs, PK
batches, the weights' and the architecture's optimizers, the loss, the cost term, precision,
seed). Nothing here changes the space's hash, so genotypes, ground-truth rows and caches keyed
by it stay valid whatever the schedule. What each strategy does in the loop is
:mod:`nas_reid.search.strategies`; the settings a retrain shares are :mod:`nas_reid.engine.schema`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from nas_reid.engine.precision import PrecisionConfig
from nas_reid.engine.schema import BatchConfig, LossConfig, OptimizerConfig, StrictModel, check_betas


class TauConfig(StrictModel):
    """Gumbel temperature over the search: ``start`` at progress 0, ``end`` at progress 1."""

    start: float = Field(default=10.0, gt=0)
    end: float = Field(default=0.1, gt=0)
    schedule: Literal["exponential", "linear", "constant"] = "linear"

    def at(self, progress: float) -> float:
        """Temperature at ``progress`` in [0, 1] (clipped); ``constant`` always gives ``start``."""
        p = min(max(float(progress), 0.0), 1.0)
        if self.schedule == "constant":
            return self.start
        if self.schedule == "linear":
            return self.start + (self.end - self.start) * p
        return self.start * (self.end / self.start) ** p

    def at_epoch(self, epoch: int, epochs: int, warmup: int = 0) -> float:
        """Temperature of 0-based ``epoch`` of ``epochs``: ``start`` up to the first
        architecture epoch (``warmup``), ``end`` in the last (``epochs - 1``; a single
        architecture epoch is the last), :meth:`at` the epoch's share of the way between."""
        span = epochs - 1 - warmup
        if epoch < warmup:
            return self.at(0.0)
        return self.at(1.0 if span <= 0 else (epoch - warmup) / span)


MAX_SCORED_SUBNETS = 1000
"""The ``uniform`` strategy scores every sub-network after training; at most this many."""


class SamplingConfig(StrictModel):
    """``softmax``: DARTS (all candidates, weighted; tau unused). ``gumbel``: GDAS (one sampled).
    ``uniform``: SPOS (one drawn uniformly, alpha untrained; every sub-network scored at the end
    on the held-out identities, :mod:`nas_reid.search.subnets`; tau and ``schedule.arch``
    unused). ``zero_cost``: no training; every sub-network scored at initialisation by its
    triplet loss on ``proxy_batches`` weight-share PK batches (:mod:`nas_reid.search.subnets`;
    ``schedule`` epochs, optimizers and losses but the triplet margin unused).
    ``bootstrap``: the resamples (of the held-out queries, of the anchors) behind ``uniform``'s
    and ``zero_cost``'s choice."""

    strategy: Literal["softmax", "gumbel", "uniform", "zero_cost"] = "gumbel"
    tau: TauConfig = Field(default_factory=TauConfig)
    bootstrap: int = Field(default=1000, ge=10, le=100000)
    proxy_batches: int = Field(default=8, ge=1, le=1000)


# ------------------------------------------------------------------------------ schedule


class WeightOptimizerConfig(OptimizerConfig):
    """The supernet weights' optimizer (SGD 0.035 by default) and its learning-rate schedule."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(default=0.035, gt=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    lr_min: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=5.0, gt=0)

    @property
    def kind(self) -> str:
        return self.optimizer


class ArchOptimizerConfig(StrictModel):
    """Adam on the architecture parameters; defaults from DARTS (3e-4, (0.5, 0.999), 1e-3)."""

    lr: float = Field(default=3e-4, gt=0)
    betas: list[float] = Field(default_factory=lambda: [0.5, 0.999], min_length=2, max_length=2)
    weight_decay: float = Field(default=1e-3, ge=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: list[float]) -> list[float]:
        return check_betas(betas)


class SearchLossConfig(LossConfig):
    """The search's weight loss (``schedule.loss``): :class:`LossConfig` with RIB on at 0.1 by
    default, since the search is where the RIB paper applies it (it shapes the supernet's
    weights; the architecture step never sees it)."""

    rib: float = Field(default=0.1, ge=0)


class LatencyConfig(StrictModel):
    """How ``metric: latency`` gets its latency lookup table (:mod:`nas_reid.search.latency`):
    the ``table`` file given, else measured when the search starts, on ``device`` (default the
    search's), each block ``warmup`` times untimed then ``repeats`` times, batch ``batch``.
    Measured latencies vary between runs; a fixed ``table`` makes the search reproducible."""

    batch: int = Field(default=1, ge=1, le=4096)
    warmup: int = Field(default=10, ge=0, le=10000)
    repeats: int = Field(default=30, ge=1, le=10000)
    table: str | None = None
    """A table measured earlier (``nas-reid latency-table``), e.g. on the deployment GPU;
    relative paths are taken from the YAML file's folder."""
    device: str | None = Field(default=None, pattern=r"^(cpu|cuda(:[0-9]+)?)$")
    """Measure on this device (``cpu``, ``cuda``, ``cuda:N``) instead of the search's."""


COST_UNITS = {"flops": "MFLOPs", "latency": "ms"}
"""The unit of the cost, ``unit`` and ``target`` for each metric."""


class CostConfig(StrictModel):
    """The cost-aware search loss (see :mod:`nas_reid.search.cost`): the cost of the derived
    network is its FLOPs (``metric: flops``, in MFLOPs) or its latency from a lookup table of
    measured per-block latencies (``metric: latency``, in ms; ``latency`` says how the table is
    made). ``multiplicative`` is FBNet's ``task * alpha * log(cost / unit) ** beta``;
    ``additive`` is ``task + weight * max(0, cost / target - 1)``. ``target`` (in the metric's
    unit) is needed by ``additive`` and logged by both."""

    form: Literal["none", "multiplicative", "additive"] = "none"
    metric: Literal["flops", "latency"] = "flops"
    alpha: float = Field(default=0.2, gt=0)
    beta: float = Field(default=0.6, gt=0)
    unit: float = Field(default=1.0, gt=0)
    """MFLOPs (or ms) per unit of the cost inside the multiplicative form's log (FBNet's log is
    of milliseconds; a small CPU space needs a smaller unit for log(cost) to stay above 1)."""
    weight: float = Field(default=1.0, gt=0)
    target: float | None = Field(default=None, gt=0)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)

    @model_validator(mode="after")
    def _target(self) -> "CostConfig":
        if self.form == "additive" and self.target is None:
            raise ValueError("schedule.cost.target: the additive form penalises the cost above a "
                             f"target; give the target in {self.unit_name}")
        return self

    @property
    def unit_name(self) -> str:
        """``MFLOPs`` or ``ms``: the unit of the cost, ``unit`` and ``target``."""
        return COST_UNITS[self.metric]


class ScheduleConfig(StrictModel):
    """How the search runs. Not part of the canonical hash."""

    epochs: int = Field(default=50, ge=1)
    warmup_epochs: int = Field(default=10, ge=0)
    """Epochs that train only the weights before architecture updates start."""
    batch: BatchConfig = Field(default_factory=BatchConfig)
    weights: WeightOptimizerConfig = Field(default_factory=WeightOptimizerConfig)
    arch: ArchOptimizerConfig = Field(default_factory=ArchOptimizerConfig)
    heldout_fraction: float = Field(default=0.5, gt=0, lt=1)
    """Share of the training identities held out for the architecture step."""
    loss: SearchLossConfig = Field(default_factory=SearchLossConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    """The cost-aware term of the architecture step (off by default)."""
    skip_cap: int | None = Field(default=None, ge=0)
    """At most this many identity edges per derived cell (None: no cap)."""
    precision: PrecisionConfig = Field(default_factory=PrecisionConfig)
    """bf16 autocast and channels_last (``auto``: on CUDA only; :mod:`nas_reid.engine.precision`)."""
    seed: int = 0

    @model_validator(mode="after")
    def _warmup(self) -> "ScheduleConfig":
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs: {self.warmup_epochs} leaves no architecture epoch "
                f"(schedule.epochs is {self.epochs})")
        return self
