"""The study's real datasets (../shared/datasets) all pass ``data check``."""

from __future__ import annotations

from pathlib import Path

import pytest

from matxfer.data import check_dataset, resolve_named

pytestmark = pytest.mark.shared_data

SIZES = {"ph": (1138, 127), "dc": (950, 106), "pz": (847, 94)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_small_shared_datasets_are_valid(shared_datasets: Path, name: str) -> None:
    pool, test = check_dataset(name, data_dir=shared_datasets)
    assert (len(pool), len(test)) == SIZES[name]
    assert not pool.skipped and not test.skipped
    trials = resolve_named(name, data_dir=shared_datasets).trials
    assert trials is not None and sorted(trials) == ["1", "2", "3", "4", "5"]
    pool_ids = set(pool.ids)
    assert all(set(ids) <= pool_ids for sizes in trials.values() for ids in sizes.values())
    assert not pool_ids & set(test.ids)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fe", "bg", "gv", "ebg", "jarvis2d"])
def test_large_shared_datasets_are_valid(shared_datasets: Path, name: str) -> None:
    parts = check_dataset(name, data_dir=shared_datasets)
    assert all(len(part) > 0 and not part.skipped for part in parts)
