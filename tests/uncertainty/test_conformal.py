"""Split-conformal quantiles and intervals on synthetic data with known noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matxfer.errors import ConfigError, MatxferError
from matxfer.uncertainty.conformal import calibrate, conformal_quantile


def test_finite_sample_quantile_rank() -> None:
    scores = np.arange(1.0, 21.0)  # n = 20
    assert conformal_quantile(scores, 0.9) == 19.0  # k = ceil(21 * 0.9) = 19
    assert conformal_quantile(scores, 0.5) == 11.0  # k = ceil(10.5) = 11
    assert conformal_quantile(scores[::-1], 0.8) == 17.0  # k = ceil(16.8); order irrelevant
    assert conformal_quantile(scores, 0.99) == math.inf  # k = 21 > n: no finite bound
    assert conformal_quantile(np.r_[scores, np.nan], 0.9) == 19.0  # NaN scores ignored


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 90.0, math.nan])
def test_levels_outside_0_1_are_refused(level: float) -> None:
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        conformal_quantile(np.arange(30.0), level)


def _heteroscedastic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """Labels with Gaussian noise whose scale the (imperfect) spread tracks."""
    mean = rng.normal(size=n)
    sigma = rng.uniform(0.1, 2.0, size=n)
    labels = mean + sigma * rng.normal(size=n)
    std = sigma * rng.uniform(0.3, 0.6, size=n)  # overconfident members, as in practice
    return labels, mean, std


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95])
def test_coverage_is_nominal_on_gaussian_data(level: float) -> None:
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(40):  # average over calibration draws: the guarantee is marginal
        labels, mean, std = _heteroscedastic(rng, 200)
        calibration = calibrate(labels, mean, std, [str(i) for i in range(200)])
        assert calibration.normalised
        test_labels, test_mean, test_std = _heteroscedastic(rng, 2000)
        lower, upper = calibration.interval(test_mean, test_std, level)
        covered.append(np.mean((test_labels >= lower) & (test_labels <= upper)))
    # 1 - alpha <= E[coverage] <= 1 - alpha + 1/(n + 1), plus Monte Carlo error (~0.003).
    assert level - 0.01 <= np.mean(covered) <= level + 1 / 201 + 0.01
    # The raw spread alone (q = 1.645 for a Gaussian 90 %) would cover far less.
    labels, mean, std = _heteroscedastic(rng, 20000)
    assert np.mean(np.abs(labels - mean) <= 1.645 * std) < 0.75


def test_normalised_intervals_follow_the_spread() -> None:
    rng = np.random.default_rng(1)
    labels, mean, std = _heteroscedastic(rng, 500)
    calibration = calibrate(labels, mean, std, [str(i) for i in range(500)])
    half = calibration.half_width(np.array([0.1, 1.0]), 0.9)
    q = calibration.quantile(0.9)
    np.testing.assert_allclose(half, q * (np.array([0.1, 1.0]) + calibration.beta))
    assert calibration.beta == pytest.approx(0.01 * np.median(std))


def test_one_member_gives_constant_width_from_plain_residuals() -> None:
    rng = np.random.default_rng(2)
    labels = rng.normal(size=100)
    mean = labels + rng.normal(scale=0.5, size=100)
    calibration = calibrate(labels, mean, np.zeros(100), [str(i) for i in range(100)])
    assert not calibration.normalised and calibration.beta == 0.0
    expected = np.sort(np.abs(labels - mean))[math.ceil(101 * 0.9) - 1]
    lower, upper = calibration.interval(np.array([0.0, 3.0]), np.array([0.0, 7.0]), 0.9)
    np.testing.assert_allclose(upper - lower, [2 * expected] * 2)


def test_unlabelled_records_are_left_out_and_too_few_refused() -> None:
    ids = [str(i) for i in range(30)]
    labels = np.r_[np.ones(20), np.full(10, np.nan)]
    calibration = calibrate(labels, np.zeros(30), np.ones(30), ids)
    assert calibration.n == 20 and calibration.ids == ids[:20]
    with pytest.raises(MatxferError, match=r"only 19 labelled .*--calibration FILE"):
        calibrate(labels[1:], np.zeros(29), np.ones(29), ids[1:])


def test_without_drops_records_and_round_trips() -> None:
    ids = [str(i) for i in range(25)]
    calibration = calibrate(np.arange(25.0), np.zeros(25), np.ones(25), ids)
    kept = calibration.without({"0", "24"})
    assert kept.n == 23 and "24" not in kept.ids
    again = type(calibration).from_dict(calibration.to_dict())
    np.testing.assert_array_equal(again.scores, calibration.scores)
    assert (again.ids, again.normalised, again.beta) == (ids, True, calibration.beta)
