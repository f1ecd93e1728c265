"""Hyper-parameter tuning (Ray Tune + Optuna) of searches and retrains.

- :func:`load_tune_space` reads and validates ``search_spaces/tune/*.yaml`` into a
  :class:`TuneSpace`: the Optuna distributions of the tuned recipe or schedule fields, the
  metric to optimise and the overrides of one trial.
"""

from nas_reid.hpo.space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    MetricConfig,
    TuneSpace,
    TuneSpaceError,
    load_tune_space,
    target_fields,
)

__all__ = [
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "MetricConfig",
    "TuneSpace",
    "TuneSpaceError",
    "load_tune_space",
    "target_fields",
]
