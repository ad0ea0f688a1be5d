"""Tests of seeded random, stratified and normal-target subsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matxfer.data.records import Record
from matxfer.data.sampling import STRATEGIES, resolve_strategy, sample, sample_described
from matxfer.errors import ConfigError, DataError

_STRUCTURE = Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]])


def make_records(values: np.ndarray, name: str = "target") -> list[Record]:
    return [
        Record(f"r{i}", _STRUCTURE, {name: float(v)}, "pool.json", i) for i, v in enumerate(values)
    ]


def lognormal_pool(n: int = 1000) -> list[Record]:
    """A right-skewed pool, like most property distributions (e.g. band gaps, moduli)."""
    return make_records(np.random.default_rng(1).lognormal(0.0, 0.75, size=n))


def targets(records: list[Record]) -> np.ndarray:
    return np.array([r.target for r in records])


def skewness(x: np.ndarray) -> float:
    return float(((x - x.mean()) ** 3).mean() / x.std() ** 3)


def ks_to_normal(x: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between ``x`` and the normal with its mean and std."""
    z = np.sort((x - x.mean()) / x.std())
    cdf = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])
    upper = np.arange(1, len(z) + 1) / len(z)
    return float(max((upper - cdf).max(), (cdf - (upper - 1 / len(z))).max()))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_subset_is_distinct_in_pool_order_and_reproducible(strategy: str) -> None:
    pool = lognormal_pool(300)
    subset = sample(pool, 40, strategy=strategy, seed=5)
    positions = [r.index for r in subset]
    assert len(subset) == 40
    assert positions == sorted(set(positions))
    assert [r.id for r in sample(pool, 40, strategy=strategy, seed=5)] == [r.id for r in subset]
    assert [r.id for r in sample(pool, 40, strategy=strategy, seed=6)] != [r.id for r in subset]


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_asking_for_the_whole_pool_returns_it_in_order(strategy: str) -> None:
    pool = lognormal_pool(20)
    assert sample(pool, 20, strategy=strategy) == pool
    assert sample(pool, 50, strategy=strategy) == pool


def test_described_sample_says_what_it_drew_and_warns_when_the_pool_is_short() -> None:
    pool = lognormal_pool(20)
    subset, source = sample_described(pool, 5, "random", 3, "p.json")
    assert len(subset) == 5 and source == "p.json (random sample of 5, seed 3)"
    assert sample_described(pool, 20, "random", 3, "p.json") == (pool, "p.json")
    with pytest.warns(UserWarning, match="size 50 asks for more than the 20 records"):
        subset, source = sample_described(pool, 50, "random", 3, "p.json")
    assert subset == pool and source == "p.json (all 20; size 50 asked)"


def test_bad_arguments_are_config_errors() -> None:
    pool = lognormal_pool(20)
    with pytest.raises(ConfigError, match=r"\['normal', 'random', 'stratified'\]"):
        sample(pool, 5, strategy="balanced")
    with pytest.raises(ConfigError, match="at least 1"):
        sample(pool, 0)
    assert resolve_strategy("Stratified") is STRATEGIES["stratified"]


def test_stratified_takes_equal_shares_of_each_pool_decile() -> None:
    pool = lognormal_pool(1000)
    values = targets(pool)
    edges = np.quantile(values, np.linspace(0, 1, 11))
    for seed in range(3):
        subset = targets(sample(pool, 100, strategy="stratified", seed=seed))
        per_decile = np.histogram(subset, bins=edges)[0]
        assert per_decile.tolist() == [10] * 10
        # Hence the subset's deciles sit within one pool decile of the pool's.
        sub_q = np.quantile(subset, np.linspace(0.1, 0.9, 9))
        assert np.all(sub_q >= edges[:-2]) and np.all(sub_q <= edges[2:])


def test_stratified_with_fewer_records_than_bins_spreads_over_the_range() -> None:
    pool = make_records(np.arange(100.0))
    subset = targets(sample(pool, 5, strategy="stratified", seed=0))
    # Five bins of twenty consecutive values, one record from each.
    assert (subset // 20).tolist() == [0, 1, 2, 3, 4]


def test_normal_subset_is_closer_to_normal_than_random() -> None:
    pool = lognormal_pool(1000)
    random_skew, normal_skew, random_ks, normal_ks = [], [], [], []
    for seed in range(5):
        rand = targets(sample(pool, 200, strategy="random", seed=seed))
        norm = targets(sample(pool, 200, strategy="normal", seed=seed))
        random_skew.append(abs(skewness(rand)))
        normal_skew.append(abs(skewness(norm)))
        random_ks.append(ks_to_normal(rand))
        normal_ks.append(ks_to_normal(norm))
    assert np.mean(normal_skew) < 0.5 * np.mean(random_skew)
    assert np.mean(normal_ks) < np.mean(random_ks)


def test_normal_sampling_of_a_constant_pool_is_uniform() -> None:
    pool = make_records(np.full(30, 2.5))
    assert len(sample(pool, 10, strategy="normal", seed=1)) == 10


def test_target_choice_for_multi_target_records() -> None:
    pool = [
        Record(f"r{i}", _STRUCTURE, {"bg": float(i), "fe": -float(i)}, "pool.json", i)
        for i in range(30)
    ]
    with pytest.raises(ConfigError, match=r"\['bg', 'fe'\]"):
        sample(pool, 10, strategy="stratified")
    with pytest.raises(ConfigError, match="'gv' not found"):
        sample(pool, 10, strategy="stratified", target="gv")
    by_bg = sample(pool, 10, strategy="stratified", target="bg", seed=0)
    assert sorted(int(r.targets["bg"]) // 3 for r in by_bg) == list(range(10))
    # Random sampling never reads targets.
    assert len(sample(pool, 10, strategy="random")) == 10


def test_missing_labels_are_refused_by_target_aware_strategies() -> None:
    pool = make_records(np.arange(10.0))
    pool[3].targets.clear()
    pool[3].targets["other"] = 1.0
    with pytest.raises(DataError, match="1 record") as info:
        sample(pool, 5, strategy="normal", target="target")
    assert info.value.problems[0].record_id == "r3"


def test_the_config_choices_are_the_strategies() -> None:
    from typing import get_args

    from matxfer.data.sampling import SamplingName

    assert sorted(get_args(SamplingName)) == sorted(STRATEGIES)
