"""Seeded subsampling of a record pool to a fixed fine-tuning size.

Three strategies, chosen by name in :func:`sample`:

* ``random``: uniform, without replacement.
* ``stratified``: splits the pool into target-quantile bins
  (``min(10, n)`` bins of equal count) and draws from each bin in proportion
  to its size, so the subset's target distribution follows the pool's.
* ``normal``: draws without replacement with weight
  :math:`w_i = \\mathcal{N}(y_i; \\mu, \\sigma) / \\hat p(y_i)`, where
  :math:`\\mu, \\sigma` are the pool's target mean and standard deviation and
  :math:`\\hat p` its histogram density, so the subset's target histogram
  moves towards a normal distribution (the study found distribution-aware
  sampling better than random sampling at capped sizes; Devi, Butler &
  Sai Gautam, arXiv 2406.13142).

All draws come from ``numpy.random.default_rng(seed)``: the same seed gives
the same ids. The returned records keep their pool order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from matxfer.data.records import Record, target_names, target_values
from matxfer.errors import ConfigError, DataError, Problem

#: A strategy maps (target values [N], subset size n < N, generator) to n distinct indices.
Strategy = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
#: The strategies a config may name (the keys of :data:`STRATEGIES`).
SamplingName = Literal["random", "stratified", "normal"]

#: Number of target-quantile bins of the ``stratified`` strategy (fewer when n is smaller).
STRATIFIED_BINS = 10
#: Most histogram bins used to estimate the pool density for the ``normal`` strategy.
NORMAL_MAX_HIST_BINS = 50
#: Smallest sampling weight relative to the largest, so far outliers stay drawable.
_MIN_RELATIVE_WEIGHT = 1e-12


def _random(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(len(values), size=n, replace=False)


def _largest_remainder(quotas: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts summing to ``n`` that follow real ``quotas`` (Hamilton's method).

    Ties between equal remainders are broken at random so no bin is favoured.
    """
    counts = np.floor(quotas).astype(int)
    remainders = quotas - counts
    order = np.lexsort((rng.random(len(quotas)), -remainders))
    counts[order[: n - counts.sum()]] += 1
    return counts


def _stratified(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    n_bins = min(STRATIFIED_BINS, n)
    # Bins by rank, not by value, so ties and skew still give equal-count bins.
    ranks = np.empty(len(values), dtype=int)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    bins = ranks * n_bins // len(values)
    bin_sizes = np.bincount(bins, minlength=n_bins)
    counts = _largest_remainder(bin_sizes * n / len(values), n, rng)
    chosen = [
        rng.choice(np.flatnonzero(bins == b), size=count, replace=False)
        for b, count in enumerate(counts)
    ]
    return np.concatenate(chosen)


def _normal_weights(values: np.ndarray) -> np.ndarray:
    """Weights N(y; mean, std) / histogram density of the pool, in (0, 1]."""
    std = values.std()
    if std == 0.0:
        return np.ones(len(values))
    n_hist_bins = min(NORMAL_MAX_HIST_BINS, max(1, math.isqrt(len(values))))
    counts, edges = np.histogram(values, bins=n_hist_bins)
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_hist_bins - 1)
    # log N(y) - log p(y); every record's own bin has count >= 1 and the constants cancel.
    log_weight = -0.5 * ((values - values.mean()) / std) ** 2 - np.log(counts[which])
    weight = np.exp(log_weight - log_weight.max())
    return np.maximum(weight, _MIN_RELATIVE_WEIGHT)


def _normal(values: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    weight = _normal_weights(values)
    return rng.choice(len(values), size=n, replace=False, p=weight / weight.sum())


#: Strategy name → implementation; the one place names are resolved.
STRATEGIES: dict[SamplingName, Strategy] = {
    "random": _random,
    "stratified": _stratified,
    "normal": _normal,
}

#: Strategies that read target values.
_TARGET_AWARE = {"stratified", "normal"}


def resolve_strategy(name: str) -> Strategy:
    """The sampling strategy called ``name``.

    Args:
        name: One of ``random``, ``stratified``, ``normal`` (case-insensitive).

    Raises:
        ConfigError: Unknown name; the message lists the choices.
    """
    try:
        return STRATEGIES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown sampling strategy {name!r}; choose one of {sorted(STRATEGIES)}"
        ) from None


def _target_array(records: Sequence[Record], target: str | None) -> np.ndarray:
    """Values of one target for every record, refusing missing labels."""
    names = target_names(records)
    if target is None:
        if len(names) != 1:
            raise ConfigError(f"records carry targets {names}; name the one to sample by")
        target = names[0]
    elif target not in names:
        raise ConfigError(f"target {target!r} not found; the records carry {names}")
    values = np.asarray(target_values(records, target), dtype=float)
    unlabelled = [r for r, v in zip(records, values, strict=True) if not np.isfinite(v)]
    if unlabelled:
        raise DataError(
            f"{len(unlabelled)} record(s) lack a finite value of target {target!r}; "
            "distribution-aware sampling needs one per record: drop them or sample 'random'",
            [Problem(r.source, r.index, r.id, f"no value of {target!r}") for r in unlabelled[:5]],
        )
    return values


def sample(
    records: Sequence[Record],
    n: int,
    strategy: str = "random",
    seed: int = 0,
    target: str | None = None,
) -> list[Record]:
    """A seeded subset of ``n`` records.

    Args:
        records: The pool (test set already removed).
        n: Subset size; when ``n >= len(records)`` every record is returned,
            in pool order, whatever the strategy.
        strategy: ``random``, ``stratified`` or ``normal`` (default: ``random``).
        seed: Seed of the draw; the same seed gives the same subset.
        target: Target to sample by for ``stratified``/``normal`` (default:
            the records' only target). Ignored by ``random``.

    Returns:
        The chosen records in pool order.

    Raises:
        ConfigError: ``n < 1``, an unknown strategy, or an ambiguous/unknown target.
        DataError: A distribution-aware strategy meets records without the target.
    """
    draw = resolve_strategy(strategy)
    if n < 1:
        raise ConfigError(f"subset size must be at least 1, got {n}")
    if n >= len(records):
        return list(records)
    if strategy.lower() in _TARGET_AWARE:
        values = _target_array(records, target)
    else:
        values = np.zeros(len(records))
    chosen = np.sort(draw(values, n, np.random.default_rng(seed)))
    return [records[i] for i in chosen]


def sample_described(
    records: Sequence[Record], n: int, strategy: str, seed: int, source: str
) -> tuple[list[Record], str]:
    """:func:`sample` plus ``source`` extended by what was drawn, for run records.

    A size above the pool keeps the whole pool and warns, so a run never claims a
    size it did not train on.
    """
    if n > len(records):
        warnings.warn(
            f"{source}: size {n} asks for more than the {len(records)} records left after "
            "the test set; all of them are used",
            UserWarning,
            stacklevel=2,
        )
        return list(records), f"{source} (all {len(records)}; size {n} asked)"
    if n == len(records):
        return list(records), source
    chosen = sample(records, n, strategy, seed=seed)
    return chosen, f"{source} ({strategy} sample of {n}, seed {seed})"
