"""Transferability scores: LogME against the evidence maximised directly, ridge/kNN probes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import null_space
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from matxfer.errors import MatxferError
from matxfer.transfer.ranking.scores import (
    _ridge_fit_predict,
    fold_ids,
    knn_cv_r2,
    logme,
    r2_score,
    ridge_cv_r2,
)


def linear_problem(
    n: int = 200, dim: int = 16, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, dim))
    return features, features @ rng.normal(size=dim) + noise * rng.normal(size=n)


def direct_evidence(features: np.ndarray, target: np.ndarray) -> float:
    """max over alpha, beta of log N(y; 0, F F^T / alpha + I / beta) / (n - 1), by
    Nelder-Mead on the dense covariance, in the n - 1 dimensions centring leaves."""
    n = len(target)
    basis = null_space(np.ones((1, n)))  # orthonormal, orthogonal to the all-ones vector
    f = basis.T @ features
    y = basis.T @ ((target - target.mean()) / target.std())

    def negative(log_params: np.ndarray) -> float:
        alpha, beta = np.exp(log_params)
        covariance = f @ f.T / alpha + np.eye(n - 1) / beta
        return -multivariate_normal(np.zeros(n - 1), covariance).logpdf(y)

    best = minimize(
        negative, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}
    )
    return -best.fun / (n - 1)


@pytest.mark.parametrize(("n", "dim", "noise"), [(60, 5, 0.5), (40, 8, 2.0), (30, 50, 0.1)])
def test_logme_is_the_maximised_evidence(n: int, dim: int, noise: float) -> None:
    features, target = linear_problem(n, dim, noise, seed=n)
    assert logme(features, target) == pytest.approx(direct_evidence(features, target), abs=1e-5)


def test_predictive_features_score_higher_than_noisier_and_random_ones() -> None:
    features, clean = linear_problem(noise=0.1)
    rng = np.random.default_rng(1)
    noisy = clean + 3 * rng.normal(size=len(clean))
    random_features = rng.normal(size=features.shape)
    scores = [logme(features, clean), logme(features, noisy), logme(random_features, clean)]
    assert scores[0] > scores[1] > scores[2]
    # Features without signal: the evidence of the target as pure noise, -(1 + log 2 pi)/2.
    assert scores[2] == pytest.approx(-(1 + np.log(2 * np.pi)) / 2, abs=0.05)


def test_logme_invariances() -> None:
    features, target = linear_problem(noise=1.0)
    base = logme(features, target)
    rotation, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(16, 16)))
    order = np.random.default_rng(3).permutation(len(target))
    assert logme(7.5 * features + 3.0, target) == pytest.approx(base, rel=1e-9)
    assert logme(features @ rotation, target) == pytest.approx(base, rel=1e-9)
    assert logme(features, -4.0 * target + 100.0) == pytest.approx(base, rel=1e-9)
    assert logme(features[order], target[order]) == pytest.approx(base, rel=1e-9)


def test_logme_is_finite_for_wide_constant_or_signal_free_features() -> None:
    rng = np.random.default_rng(4)
    target = rng.normal(size=30)
    wide = rng.normal(size=(30, 200))
    constant = np.ones((30, 4))
    for features in (wide, constant, np.column_stack([wide[:, :3], constant])):
        assert np.isfinite(logme(features, target))


def test_ridge_probe_and_gcv() -> None:
    features, target = linear_problem(noise=0.1)
    assert ridge_cv_r2(features, target) > 0.99
    random_features = np.random.default_rng(5).normal(size=features.shape)
    assert ridge_cv_r2(random_features, target) < 0.1
    # GCV: a penalty near zero for clean linear data, a strong one for pure noise.
    _, clean_alpha = _ridge_fit_predict(features, target, features, np.logspace(-3, 5, 33))
    _, noise_alpha = _ridge_fit_predict(random_features, target, features, np.logspace(-3, 5, 33))
    assert clean_alpha < 1 < 100 < noise_alpha
    assert ridge_cv_r2(features, target, seed=1) == ridge_cv_r2(features, target, seed=1)


def test_knn_probe_finds_nonlinear_neighbourhoods_ridge_cannot() -> None:
    rng = np.random.default_rng(6)
    features = rng.uniform(-3, 3, size=(400, 2))
    target = np.cos(2 * features[:, 0]) * np.cos(2 * features[:, 1])
    assert knn_cv_r2(features, target, neighbors=5) > 0.8
    assert ridge_cv_r2(features, target) < 0.1
    assert knn_cv_r2(rng.normal(size=(400, 2)), target) < 0.1


def test_folds_are_balanced_seeded_and_checked() -> None:
    ids = fold_ids(23, 5, seed=0)
    assert sorted(np.bincount(ids)) == [4, 4, 5, 5, 5]
    assert (ids == fold_ids(23, 5, seed=0)).all() and (ids != fold_ids(23, 5, seed=1)).any()
    with pytest.raises(MatxferError, match="too few for 5-fold"):
        fold_ids(9, 5)
    with pytest.raises(MatxferError, match="folds must be >= 2"):
        fold_ids(100, 1)


def test_bad_inputs_fail_with_a_message() -> None:
    features, target = linear_problem(n=20)
    with pytest.raises(MatxferError, match=r"\[n, D\]"):
        logme(features, target[:10])
    broken = features.copy()
    broken[0, 0] = np.nan
    with pytest.raises(MatxferError, match="NaN"):
        ridge_cv_r2(broken, target)
    with pytest.raises(MatxferError, match="neighbors must be >= 1"):
        knn_cv_r2(features, target, neighbors=0)
    assert np.isnan(r2_score(np.ones(4), np.zeros(4)))
