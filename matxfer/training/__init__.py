"""Training, evaluation and prediction with Lightning.

Public API:

* :func:`train` → :class:`TrainResult`: a run directory with ``best.ckpt``,
  ``last.ckpt``, ``config.yaml``, ``metrics.json``, predictions, plots and a
  model card; what it trains on is a :class:`DataSpec` (or its loose options).
* :func:`evaluate`, :func:`predict`: a trained model on a dataset.
* :func:`is_finished`: whether a run directory holds a finished run (``done.json``).
* :func:`load_predictor` → :class:`Predictor`: ``.predict(structures)`` on
  pymatgen ``Structure`` s or ASE ``Atoms``.
* :func:`load_model` / :func:`save_model`: checkpoints that rebuild the model
  strictly, without the training config.
* :class:`TrainConfig`, :data:`PROFILES` (``paper``, ``fast``),
  :func:`load_config`, :func:`resolve_config`, :func:`config_for_run`, :func:`save_config`.
* Building blocks: :class:`PropertyModule` (LightningModule),
  :class:`GraphDataModule`, :func:`resolve_loss`, :func:`regression_metrics`.

Names that need Lightning are imported on first use, so prediction and
evaluation do not pay for importing it (seconds).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from matxfer.training.checkpoint import LoadedModel, load_model, save_model
from matxfer.training.config import (
    PROFILES,
    ModelSettings,
    TrainConfig,
    load_config,
    resolve_config,
    save_config,
)
from matxfer.training.inputs import DataSpec
from matxfer.training.losses import resolve_loss
from matxfer.training.metrics import regression_metrics
from matxfer.training.predictor import Predictor, evaluate, load_predictor, predict
from matxfer.training.rundir import config_for_run, is_finished

if TYPE_CHECKING:
    from matxfer.training.datamodule import GraphDataModule
    from matxfer.training.module import PropertyModule
    from matxfer.training.run import TrainResult, train

#: Lightning-dependent names → the module defining them.
_LAZY = {
    "GraphDataModule": "matxfer.training.datamodule",
    "PropertyModule": "matxfer.training.module",
    "TrainResult": "matxfer.training.run",
    "train": "matxfer.training.run",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matxfer.training' has no attribute {name!r}")


__all__ = [
    "PROFILES",
    "DataSpec",
    "GraphDataModule",
    "LoadedModel",
    "ModelSettings",
    "Predictor",
    "PropertyModule",
    "TrainConfig",
    "TrainResult",
    "config_for_run",
    "evaluate",
    "is_finished",
    "load_config",
    "load_model",
    "load_predictor",
    "predict",
    "regression_metrics",
    "resolve_config",
    "resolve_loss",
    "save_config",
    "save_model",
    "train",
]
