r"""Transferability scores of frozen features for a regression target (numpy only).

Each score says how well a fixed feature matrix :math:`F \in \mathbb{R}^{n \times D}`
(one row per training structure: a pre-trained model's embedding) predicts the
target :math:`y \in \mathbb{R}^n` without training the model, so that candidate
pre-training sources can be ranked before any of them is fine-tuned:

* :func:`logme`: the log marginal evidence of Bayesian linear regression
  (You et al., ICML 2021);
* :func:`ridge_cv_r2`: R² of a ridge probe, out of fold (closed form, penalty
  by generalised cross-validation inside each training fold);
* :func:`knn_cv_r2`: R² of k-nearest-neighbour regression, out of fold.

Higher is better for all three. They compare features of *one* target; their
values are not comparable across targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from matxfer.errors import MatxferError

#: Ridge penalties tried (features and target standardised, so they are scale-free).
RIDGE_ALPHAS: tuple[float, ...] = tuple(np.logspace(-3, 5, 33))
#: Default folds of the cross-validated probes.
FOLDS = 5
#: Default neighbours of the kNN probe.
NEIGHBORS = 5
#: Relative size below which a singular value counts as zero.
_RANK_TOL = 1e-10


def _check(features: np.ndarray, target: np.ndarray, minimum: int = 2) -> None:
    if features.ndim != 2 or target.ndim != 1 or len(features) != len(target):
        raise MatxferError(
            f"features must be [n, D] and the target [n]; got {features.shape} and {target.shape}"
        )
    if len(target) < minimum:
        raise MatxferError(f"{len(target)} labelled structures; scoring needs at least {minimum}")
    if not (np.isfinite(features).all() and np.isfinite(target).all()):
        raise MatxferError("features or target hold NaN or infinity; they cannot be scored")


def _standardised(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    # A constant column carries no information: scaled by 1, it stays all zero.
    return (values - mean) / np.where(std > 0, std, 1.0)


def logme(
    features: np.ndarray, target: np.ndarray, tol: float = 1e-10, max_iter: int = 1000
) -> float:
    r"""LogME: the maximised log evidence per structure of Bayesian linear regression.

    K. You, Y. Liu, J. Wang & M. Long, "LogME: Practical Assessment of
    Pre-trained Models for Transfer Learning", ICML 2021, arXiv:2102.11005
    (Algorithm 1, regression). With weights :math:`w \sim \mathcal{N}(0,
    \alpha^{-1} I_D)` and noise precision :math:`\beta`, the evidence of
    :math:`y = F w + \varepsilon` is

    .. math::
        \log p(y \mid F, \alpha, \beta) = \tfrac{n}{2}\log\beta + \tfrac{D}{2}\log\alpha
            - \tfrac{n}{2}\log 2\pi - \tfrac{\beta}{2}\lVert F m - y\rVert^2
            - \tfrac{\alpha}{2} m^\top m - \tfrac{1}{2}\log\lvert A\rvert,

    :math:`A = \alpha I + \beta F^\top F`, :math:`m = \beta A^{-1} F^\top y`. It is
    maximised by the fixed point :math:`\gamma = \sum_i \beta\sigma_i/(\alpha + \beta\sigma_i)`,
    :math:`\alpha = \gamma / m^\top m`, :math:`\beta = (n - \gamma)/\lVert F m - y\rVert^2`,
    where :math:`\sigma_i = s_i^2` are the eigenvalues of :math:`F^\top F`. One SVD
    :math:`F = U S V^\top` makes every iteration :math:`O(\min(n, D))`: with
    :math:`z = U^\top y`, :math:`m^\top m = \sum_i \beta^2\sigma_i z_i^2/(\alpha+\beta\sigma_i)^2`
    and :math:`\lVert F m - y\rVert^2 = \sum_i \alpha^2 z_i^2/(\alpha+\beta\sigma_i)^2
    + \lVert y\rVert^2 - \lVert z\rVert^2`.

    Features and target are centred (a free intercept, so :math:`n` counts the
    :math:`n - 1` dimensions left) and the target scaled to unit variance, so the
    score does not depend on the target's units; a global scale or a rotation of the
    features leaves it unchanged (``alpha`` absorbs the scale). The iteration runs on
    :math:`t = \alpha/\beta`, which alone fixes :math:`m`; features without signal
    send :math:`t \to \infty`, where the score tends to that of :math:`y` as noise.

    Args:
        features: ``[n, D]`` frozen features.
        target: ``[n]`` labels.
        tol: Relative change of ``alpha / beta`` that ends the iteration.
        max_iter: Iteration limit (the fixed point converges in tens).

    Returns:
        :math:`\log p(y \mid F, \alpha^*, \beta^*) / n` (:math:`n` = structures - 1).
    """
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check(features, target, 3)
    # Centring removes the direction of the all-ones vector: the data live in n - 1
    # dimensions (without this, a perfect fit when n <= D would send beta to infinity).
    n = len(target) - 1
    f = features - features.mean(axis=0)
    y = _standardised(target, target.mean(), target.std())
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > _RANK_TOL * max(float(s.max(initial=0.0)), 1e-300)
    sigma = s[keep] ** 2
    z2 = (u[:, keep].T @ y) ** 2
    outside = max(float(y @ y - z2.sum()), 0.0)  # the part of y no feature direction reaches
    t_max = 1e12 * max(float(sigma.max(initial=0.0)), 1.0)
    t = 1.0
    for _ in range(max_iter):
        gamma = float((sigma / (sigma + t)).sum())
        m2 = float((sigma * z2 / (sigma + t) ** 2).sum())
        residual = float((t**2 * z2 / (sigma + t) ** 2).sum()) + outside
        if m2 <= 0 or residual <= 0:
            break
        new_t = min(gamma * residual / (max(n - gamma, 1e-12) * m2), t_max)
        converged = abs(new_t - t) <= tol * t
        t = new_t
        if converged or t >= t_max:
            break
    gamma = float((sigma / (sigma + t)).sum())
    m2 = float((sigma * z2 / (sigma + t) ** 2).sum())
    residual = float((t**2 * z2 / (sigma + t) ** 2).sum()) + outside
    beta = max(n - gamma, 1e-12) / max(residual, np.finfo(np.float64).tiny)
    alpha = beta * t
    # D/2 log(alpha) - log|A|/2 = -1/2 sum_i log(1 + sigma_i / t): the D - rank
    # directions without features cancel, and nothing overflows as t grows.
    evidence = (
        n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - float(np.log1p(sigma / t).sum()) / 2
    )
    return float(evidence / n)


def fold_ids(n: int, folds: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Fold number ``0..folds-1`` of each of ``n`` structures (seeded, balanced sizes).

    Raises:
        MatxferError: Fewer than 2 folds, or fewer structures than twice the folds.
    """
    if folds < 2:
        raise MatxferError(f"folds must be >= 2, got {folds}")
    if n < 2 * folds:
        raise MatxferError(
            f"{n} labelled structures are too few for {folds}-fold cross-validation "
            f"(needs {2 * folds}); use fewer folds or more structures"
        )
    return np.random.default_rng(seed).permutation(n) % folds


def r2_score(target: np.ndarray, predicted: np.ndarray) -> float:
    """Coefficient of determination ``1 - SSE / SST`` (SST around the mean of ``target``)."""
    total = float(((target - target.mean()) ** 2).sum())
    error = float(((target - predicted) ** 2).sum())
    return 1.0 - error / total if total > 0 else float("nan")


def _ridge_fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, alphas: Sequence[float]
) -> tuple[np.ndarray, float]:
    """Ridge predictions for ``test_x`` with the penalty of least GCV on the training data.

    GCV (Golub, Heath & Wahba, Technometrics 21, 215 (1979)) of penalty
    :math:`\\lambda`: :math:`n \\lVert y - H y\\rVert^2 / (n - \\mathrm{tr} H - 1)^2`,
    :math:`H = X (X^\\top X + \\lambda I)^{-1} X^\\top` (the 1: the intercept).
    """
    x_mean, x_std = train_x.mean(axis=0), train_x.std(axis=0)
    y_mean, y_std = train_y.mean(), train_y.std() or 1.0
    x = _standardised(train_x, x_mean, x_std)
    y = (train_y - y_mean) / y_std
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    uy = u.T @ y
    outside = max(float(y @ y - uy @ uy), 0.0)
    n = len(y)
    best_alpha, best_gcv = alphas[0], np.inf
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        residual = float((((1 - shrink) * uy) ** 2).sum()) + outside
        dof = n - float(shrink.sum()) - 1
        gcv = n * residual / dof**2 if dof > 0 else np.inf
        if gcv < best_gcv:
            best_alpha, best_gcv = alpha, gcv
    weights = vt.T @ (s / (s**2 + best_alpha) * uy)
    predicted = _standardised(test_x, x_mean, x_std) @ weights
    return predicted * y_std + y_mean, float(best_alpha)


def ridge_cv_r2(
    features: np.ndarray,
    target: np.ndarray,
    folds: int = FOLDS,
    seed: int = 0,
    alphas: Sequence[float] = RIDGE_ALPHAS,
) -> float:
    """Out-of-fold R² of a ridge probe on the frozen features.

    Per fold, features and target are standardised with the training fold's
    statistics and the penalty chosen by GCV among ``alphas`` on that fold alone,
    so no held-out label steers the fit. The R² is of all out-of-fold predictions
    together.

    Args:
        features: ``[n, D]``.
        target: ``[n]``.
        folds: Cross-validation folds.
        seed: Seed of the fold assignment.
        alphas: Penalties to choose from.
    """
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check(features, target)
    assignment = fold_ids(len(target), folds, seed)
    predicted = np.empty_like(target)
    for fold in range(folds):
        held = assignment == fold
        predicted[held], _ = _ridge_fit_predict(
            features[~held], target[~held], features[held], alphas
        )
    return r2_score(target, predicted)


def knn_cv_r2(
    features: np.ndarray,
    target: np.ndarray,
    folds: int = FOLDS,
    seed: int = 0,
    neighbors: int = NEIGHBORS,
) -> float:
    """Out-of-fold R² of k-nearest-neighbour regression on the standardised features.

    Each held-out structure is predicted by the mean label of its ``neighbors``
    nearest training-fold structures (Euclidean distance after standardising with
    the training fold's statistics): a probe of whether structures near in the
    embedding have similar targets, without assuming linearity.
    """
    features = np.asarray(features, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    _check(features, target)
    if neighbors < 1:
        raise MatxferError(f"neighbors must be >= 1, got {neighbors}")
    assignment = fold_ids(len(target), folds, seed)
    predicted = np.empty_like(target)
    for fold in range(folds):
        held = assignment == fold
        train_x, train_y = features[~held], target[~held]
        mean, std = train_x.mean(axis=0), train_x.std(axis=0)
        train_x = _standardised(train_x, mean, std)
        test_x = _standardised(features[held], mean, std)
        distances = (
            (test_x**2).sum(axis=1)[:, None] - 2 * test_x @ train_x.T + (train_x**2).sum(axis=1)
        )
        k = min(neighbors, len(train_y))
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        predicted[held] = train_y[nearest].mean(axis=1)
    return r2_score(target, predicted)
