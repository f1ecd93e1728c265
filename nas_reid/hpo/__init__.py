"""Hyper-parameter tuning (Ray Tune + Optuna) of searches and retrains.

- :func:`load_tune_space` reads and validates ``search_spaces/tune/*.yaml`` into a
  :class:`TuneSpace`: the Optuna distributions of the tuned recipe or schedule fields, the
  metric to optimise and the overrides of one trial.
- :func:`run_study` tunes retrains with a plain Optuna study (no Ray) and returns a
  :class:`StudyResult`.
"""

from nas_reid.hpo.optuna_backend import StudyResult, run_study
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
    "StudyResult",
    "TuneSpace",
    "TuneSpaceError",
    "load_tune_space",
    "run_study",
    "target_fields",
]
