"""Coverage, miscalibration area and binned error vs spread."""

from __future__ import annotations

import numpy as np
import pytest

from matxfer.uncertainty.conformal import calibrate
from matxfer.uncertainty.diagnostics import (
    LEVELS,
    binned_errors,
    coverage,
    interval_metrics,
    miscalibration_area,
)


def test_coverage_counts_bounds_inclusive_and_skips_unlabelled() -> None:
    labels = np.array([0.0, 1.0, 2.0, np.nan])
    assert coverage(labels, np.array([0.0, 1.5, 1.0, 0]), np.array([1.0, 2.0, 2.0, 0])) == 2 / 3
    assert np.isnan(coverage(np.array([np.nan]), np.zeros(1), np.zeros(1)))


def test_miscalibration_area() -> None:
    assert miscalibration_area(LEVELS, LEVELS) == 0.0
    # Always covering everything: the area of the triangle above the diagonal.
    assert miscalibration_area(LEVELS, np.ones_like(LEVELS)) == pytest.approx(
        0.9 - (0.95**2 - 0.05**2) / 2
    )


def test_binned_errors_equal_count_bins() -> None:
    std = np.arange(1.0, 31.0)
    bins = binned_errors(2 * std, std)
    assert list(bins["n"]) == [10, 10, 10]
    np.testing.assert_allclose(bins["rmse"], 2 * bins["rmv"])
    assert len(binned_errors(np.ones(5), np.ones(5))) == 1


def test_interval_metrics_on_calibrated_gaussian_data() -> None:
    rng = np.random.default_rng(3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sigma = rng.uniform(0.2, 2.0, n)
        return sigma * rng.normal(size=n), np.zeros(n), sigma

    calibration = calibrate(*draw(2000), [str(i) for i in range(2000)])
    stats = interval_metrics(calibration, *draw(4000), 0.9)
    assert stats["coverage"] == pytest.approx(0.9, abs=0.02)
    assert stats["miscalibration_area"] < 0.02
    assert stats["spearman_std_abs_error"] > 0.2
    assert stats["n"] == 4000 and len(stats["bins"]) == 10
    assert stats["curve"]["level"][0] == 0.05 and len(stats["curve"]["observed"]) == 19
