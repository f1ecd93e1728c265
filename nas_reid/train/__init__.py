"""Retraining a genotype: the recipe, the training loop, model checkpoints, export.

- :func:`retrain` trains the network of a genotype and writes a run folder
  (:mod:`nas_reid.train.loop`); :class:`TrainResult` is what it returns.
- :func:`load_recipe`, :class:`Recipe`: the validated training recipe (:mod:`nas_reid.train.recipe`).
- :func:`load_model` rebuilds a trained network from a model checkpoint
  (:mod:`nas_reid.train.checkpoint`).
- :func:`export_model` writes ONNX or TorchScript (:mod:`nas_reid.train.export`).
"""

from nas_reid.train.checkpoint import LoadedModel, ModelCheckpointError, load_model
from nas_reid.train.export import ExportError, ExportResult, export_model
from nas_reid.train.loop import TrainResult, retrain
from nas_reid.train.recipe import Recipe, RecipeError, load_recipe

__all__ = [
    "ExportError",
    "ExportResult",
    "LoadedModel",
    "ModelCheckpointError",
    "Recipe",
    "RecipeError",
    "TrainResult",
    "export_model",
    "load_model",
    "load_recipe",
    "retrain",
]
