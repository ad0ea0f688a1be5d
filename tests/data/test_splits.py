"""Tests of test/train/validation splits and the study's trial subsets."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure

from matxfer.data import splits
from matxfer.data.records import Record
from matxfer.errors import ConfigError, DataError, MatxferError

_STRUCTURE = Structure(Lattice.cubic(3.0), ["Na"], [[0, 0, 0]])


def make_records(n: int, start: int = 0) -> list[Record]:
    """``n`` one-target records with ids ``str(start) ... str(start + n - 1)``."""
    return [
        Record(str(i), _STRUCTURE, {"target": float(i)}, "pool.json", i - start)
        for i in range(start, start + n)
    ]


def ids(records: list[Record]) -> list[str]:
    return [r.id for r in records]


@pytest.mark.parametrize(("n", "n_val"), [(800, 80), (500, 50), (100, 10), (10, 1), (2, 1)])
def test_train_val_split_sizes_match_the_study(n: int, n_val: int) -> None:
    records = make_records(n)
    train, val = splits.train_val_split(records, val_fraction=0.1, seed=3)
    assert (len(train), len(val)) == (n - n_val, n_val)
    assert set(ids(train)).isdisjoint(ids(val))
    assert set(ids(train)) | set(ids(val)) == set(ids(records))
    # Both parts keep pool order.
    assert ids(train) == sorted(ids(train), key=int)
    assert ids(val) == sorted(ids(val), key=int)


def test_split_count_rounds_half_up_and_keeps_both_sides() -> None:
    assert splits.split_count(25, 0.1) == 3
    assert splits.split_count(15, 0.1) == 2
    assert splits.split_count(3, 0.01) == 1
    assert splits.split_count(3, 0.99) == 2


@pytest.mark.parametrize("split", [splits.train_val_split, splits.test_split])
def test_splits_are_reproducible_and_seed_dependent(split) -> None:
    records = make_records(200)
    first = split(records, 0.2, seed=7)
    again = split(records, 0.2, seed=7)
    other = split(records, 0.2, seed=8)
    assert ids(first[1]) == ids(again[1])
    assert ids(first[1]) != ids(other[1])
    assert len(first[1]) == 40


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_bad_fraction_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        splits.test_split(make_records(10), fraction)


def test_too_few_records_to_split() -> None:
    with pytest.raises(DataError, match="need at least 2"):
        splits.train_val_split(make_records(1))


def test_duplicate_ids_are_refused() -> None:
    records = make_records(5) + make_records(2)
    with pytest.raises(DataError, match="2 record id") as info:
        splits.train_val_split(records)
    assert [p.record_id for p in info.value.problems] == ["0", "1"]


def test_remove_test_records_and_overlap_check() -> None:
    pool = make_records(20)
    test = make_records(5, start=15) + make_records(3, start=100)
    with pytest.raises(DataError, match="5 training record") as info:
        splits.check_no_overlap(pool, test)
    assert sorted(p.record_id for p in info.value.problems) == ["15", "16", "17", "18", "19"]
    rest = splits.remove_test_records(pool, test)
    assert ids(rest) == [str(i) for i in range(15)]
    splits.check_no_overlap(rest, test)
    assert ids(splits.remove_test_records(pool, ["3", "4"])) == ids(pool[:3] + pool[5:])


def write_trials(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "trials.json"
    path.write_text(json.dumps(content))
    return path


def test_trial_subset_follows_trial_order(tmp_path: Path) -> None:
    path = write_trials(tmp_path, {"1": {"3": [7, 2, 5]}, "2": {"3": ["1", "0", "9"]}})
    trials = splits.load_trials(path)
    assert trials["1"]["3"] == ["7", "2", "5"]
    pool = make_records(10)
    assert ids(splits.trial_subset(pool, trials, 1, 3)) == ["7", "2", "5"]
    assert ids(splits.trial_subset(pool, trials, "2", "3")) == ["1", "0", "9"]


def test_trial_subset_errors_list_what_is_available(tmp_path: Path) -> None:
    trials = splits.load_trials(write_trials(tmp_path, {"1": {"10": [1], "100": [2]}}))
    pool = make_records(3)
    with pytest.raises(MatxferError, match=r"available trials: \['1'\]"):
        splits.trial_subset(pool, trials, 4, 10)
    with pytest.raises(MatxferError, match=r"available sizes: \['10', '100'\]"):
        splits.trial_subset(pool, trials, 1, 800)
    trials["1"]["10"] = ["1", "50", "51"]
    with pytest.raises(DataError, match="2 of 3 ids") as info:
        splits.trial_subset(pool, trials, 1, 10)
    assert [p.record_id for p in info.value.problems] == ["50", "51"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), ("{oops", "cannot read"), ([1, 2], "top level"), ({"1": [3]}, "trial")],
)
def test_load_trials_rejects_bad_files(tmp_path: Path, content: object, message: str) -> None:
    path = tmp_path / "trials.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=message):
        splits.load_trials(path)


@pytest.mark.shared_data
def test_real_ph_trials_come_from_the_pool(shared_datasets: Path) -> None:
    def load(name: str) -> list[Record]:
        with gzip.open(shared_datasets / "ph" / name, "rt") as f:
            rows = json.load(f)
        return [
            Record(str(row["jid"]), _STRUCTURE, {"target": row["target"]}, name, i)
            for i, row in enumerate(rows)
        ]

    pool, test = load("pool.json.gz"), load("test.json.gz")
    splits.check_no_overlap(pool, test, "pool", "test")
    trials = splits.load_trials(shared_datasets / "ph" / "trials.json")
    assert sorted(trials) == ["1", "2", "3", "4", "5"]
    for trial, sizes in trials.items():
        for size, trial_ids in sizes.items():
            subset = splits.trial_subset(pool, trials, trial, size)
            assert ids(subset) == trial_ids
            assert len(subset) == int(size)
    train, val = splits.train_val_split(splits.trial_subset(pool, trials, 1, 800), 0.1, seed=0)
    assert (len(train), len(val)) == (720, 80)
