"""Hyper-parameter tuning (Ray Tune + Optuna) of searches and retrains.

- :func:`load_tune_space` reads and validates ``search_spaces/tune/*.yaml`` into a
  :class:`TuneSpace`: the Optuna distributions of the tuned recipe or search-space fields, the
  metric to optimise, the validation split and the early stopping.
- :class:`Objective` (:mod:`~nas_reid.hpo.objective`) is what one trial runs (a retrain, or a
  search and a retrain) and how it is scored: on a validation split of the training
  identities (:func:`validation_split`), never on the dataset's query / gallery.
- :func:`run_tune` (:mod:`~nas_reid.hpo.ray_backend`) schedules the trials with Ray Tune, on
  this machine or a Ray cluster; :func:`run_study` (:mod:`~nas_reid.hpo.optuna_backend`) runs
  the same study with Optuna alone. Both return a :class:`StudyResult` and write the same files
  (:mod:`~nas_reid.hpo.report`). ``run_tune`` imports Ray when first used.
"""

from nas_reid.hpo.objective import Objective, validation_split
from nas_reid.hpo.optuna_backend import run_study
from nas_reid.hpo.report import StudyResult
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
    "Objective",
    "StudyResult",
    "TuneSpace",
    "TuneSpaceError",
    "load_tune_space",
    "run_study",
    "run_tune",
    "target_fields",
    "validation_split",
]


def __getattr__(name: str):
    if name == "run_tune":
        from nas_reid.hpo.ray_backend import run_tune

        return run_tune
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
