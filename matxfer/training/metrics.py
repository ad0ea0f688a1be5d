"""Regression metrics that skip missing labels (NaN).

For each target column with labels :math:`y_i` and predictions :math:`\\hat y_i`
over the :math:`n` labelled records:

.. math::
    \\mathrm{MAE} = \\frac{1}{n}\\sum_i |y_i - \\hat y_i|, \\qquad
    \\mathrm{RMSE} = \\sqrt{\\frac{1}{n}\\sum_i (y_i - \\hat y_i)^2}, \\qquad
    R^2 = 1 - \\frac{\\sum_i (y_i - \\hat y_i)^2}{\\sum_i (y_i - \\bar y)^2}.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R², MAE, RMSE and the label count of one target column.

    Args:
        y_true: Labels ``[N]``; NaN marks a missing label (skipped).
        y_pred: Predictions ``[N]``.

    Returns:
        ``{"r2", "mae", "rmse", "n"}``; NaN metrics when no label is present,
        R² NaN when the labels have no spread.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"labels {y_true.shape} and predictions {y_pred.shape} differ in shape")
    labelled = ~np.isnan(y_true)
    n = int(labelled.sum())
    if n == 0:
        return {"r2": math.nan, "mae": math.nan, "rmse": math.nan, "n": 0}
    error = y_pred[labelled] - y_true[labelled]
    total = float(((y_true[labelled] - y_true[labelled].mean()) ** 2).sum())
    r2 = 1.0 - float((error**2).sum()) / total if total > 0 else math.nan
    return {
        "r2": r2,
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "n": n,
    }


def metrics_by_target(
    y_true: np.ndarray, y_pred: np.ndarray, names: list[str]
) -> dict[str, dict[str, float]]:
    """:func:`regression_metrics` for every column of ``[N, P]`` arrays, keyed by target name.

    Args:
        y_true: Labels ``[N, P]`` (NaN = missing).
        y_pred: Predictions ``[N, P]``.
        names: The P target names.
    """
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    return {name: regression_metrics(y_true[:, k], y_pred[:, k]) for k, name in enumerate(names)}


def mean_std_se(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation and standard error (std / √n) of ``values``.

    Used for figures over seeds or trials; std and SE are NaN for a single value.
    """
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan, math.nan
    std = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return float(array.mean()), std, std / math.sqrt(array.size)
