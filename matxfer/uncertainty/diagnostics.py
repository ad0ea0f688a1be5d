r"""How trustworthy an ensemble's intervals and spread are, on labelled data.

* **Coverage** at nominal level :math:`p`: the share of structures whose label lies
  in its conformal interval; conformal calibration targets :math:`\ge p`.
* **Miscalibration area** (Tran et al., *Mach. Learn.: Sci. Technol.* 1, 025006,
  2020; Chung et al., uncertainty-toolbox, arXiv 2109.10254): the area between the
  observed-coverage curve :math:`c(p)` and the diagonal over the levels
  :data:`LEVELS` (0.05 … 0.95), by the trapezoid rule,
  :math:`\int |c(p) - p|\,dp`; 0 is perfect, the grid's span (0.9) the worst.
* **Spearman** rank correlation of :math:`|y - \bar y|` with the spread :math:`s`:
  whether the spread ranks the errors (the interval's *shape*), which coverage
  alone does not test.
* **Binned error vs spread** (Levi, Gispan, Giladi & Fetaya, *Sensors* 22, 5540,
  2022): structures in equal-count bins of :math:`s`; per bin the root mean spread
  against the RMSE. A calibrated spread puts the bins on the diagonal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from matxfer.study.ensemble import spearman
from matxfer.uncertainty.conformal import ConformalCalibration

#: Nominal coverage levels of the coverage curve and the miscalibration area.
LEVELS = np.round(np.arange(0.05, 0.951, 0.05), 2)
#: Structures per bin of the error-vs-spread curve (at most :data:`MAX_BINS` bins).
PER_BIN = 10
MAX_BINS = 10


def coverage(labels: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of the labelled structures with ``lower <= label <= upper`` (NaN if none)."""
    labelled = np.isfinite(labels)
    if not labelled.any():
        return float("nan")
    inside = (labels[labelled] >= lower[labelled]) & (labels[labelled] <= upper[labelled])
    return float(inside.mean())


def coverage_curve(
    calibration: ConformalCalibration,
    labels: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    levels: np.ndarray = LEVELS,
) -> np.ndarray:
    """Observed coverage at each nominal level of ``levels``."""
    return np.array([coverage(labels, *calibration.interval(mean, std, level)) for level in levels])


def miscalibration_area(levels: np.ndarray, observed: np.ndarray) -> float:
    """:math:`\\int |c(p) - p|\\,dp` over ``levels`` (trapezoid rule)."""
    gap = np.abs(np.asarray(observed) - np.asarray(levels))
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(levels)))


def binned_errors(abs_error: np.ndarray, std: np.ndarray) -> pd.DataFrame:
    """Equal-count bins of the spread: ``n``, ``rmv`` (root mean variance) and ``rmse``.

    About :data:`PER_BIN` structures per bin, at most :data:`MAX_BINS` bins, at least one.
    """
    finite = np.isfinite(abs_error) & np.isfinite(std)
    abs_error, std = abs_error[finite], std[finite]
    if not abs_error.size:
        return pd.DataFrame(columns=["n", "rmv", "rmse"])
    bins = int(np.clip(abs_error.size // PER_BIN, 1, MAX_BINS))
    order = np.argsort(std, kind="stable")
    rows = [
        {
            "n": int(part.size),
            "rmv": float(np.sqrt(np.mean(std[part] ** 2))),
            "rmse": float(np.sqrt(np.mean(abs_error[part] ** 2))),
        }
        for part in np.array_split(order, bins)
    ]
    return pd.DataFrame(rows)


def interval_metrics(
    calibration: ConformalCalibration,
    labels: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    level: float,
) -> dict[str, Any]:
    """Everything ``evaluate --interval`` reports for one target.

    Returns:
        ``{"level", "q", "n", "coverage", "mean_width", "median_width",
        "miscalibration_area", "spearman_std_abs_error", "curve": {"level",
        "observed"}, "bins": [{"n", "rmv", "rmse"}]}``, widths in the target's units.
    """
    labelled = np.isfinite(labels)
    lower, upper = calibration.interval(mean, std, level)
    width = (upper - lower)[labelled]
    observed = coverage_curve(calibration, labels, mean, std)
    abs_error = np.abs(labels - mean)
    return {
        "level": level,
        "q": calibration.quantile(level),
        "n": int(labelled.sum()),
        "coverage": coverage(labels, lower, upper),
        "mean_width": float(np.mean(width)) if width.size else float("nan"),
        "median_width": float(np.median(width)) if width.size else float("nan"),
        "miscalibration_area": miscalibration_area(LEVELS, observed),
        "spearman_std_abs_error": spearman(std, abs_error),
        "curve": {"level": LEVELS.tolist(), "observed": observed.tolist()},
        "bins": binned_errors(abs_error[labelled], std[labelled]).to_dict("records"),
    }
