"""The calibration set: no record a member trained on, and clear errors otherwise."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from uq_helpers import POOL, MakeRun

from matxfer.errors import MatxferError
from matxfer.training.inputs import DataSpec
from matxfer.training.rundir import read_run_info, write_run_info
from matxfer.uncertainty.calset import (
    FILE,
    UNSEEN,
    UNSEEN_AND_VALIDATION,
    automatic_calibration_set,
    file_calibration_set,
    member_splits,
)


def _used(run_dirs: list[Path], *parts: str) -> set[str]:
    return {r.id for d in run_dirs for p in parts for r in member_splits(d)[0].parts()[p]}


def test_trial_members_calibrate_on_records_none_of_them_saw(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    runs = [
        make_run(tmp_path / f"t{trial}", DataSpec(str(dataset), trial=trial, size=20))
        for trial in (1, 2)
    ]
    chosen = automatic_calibration_set(runs)
    ids = {r.id for r in chosen.records}
    assert chosen.method == UNSEEN
    assert ids == {str(i) for i in range(30, POOL)}  # trials hold records 0-29
    assert not ids & _used(runs, "train", "val", "test")


def test_members_sharing_a_split_fall_back_to_its_validation_records(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    # Trial subsets of 50 of the 60 pool records: 0-9 / 50-59 are validated by one and
    # trained on by the other, so only the shared split's unseen + validation records
    # remain. Two members of one split, as `--ensemble K` trains them.
    spec = DataSpec(str(dataset), trial=1, size=50)
    runs = [make_run(tmp_path / f"member-{k}", spec, val_fraction=0.4) for k in (0, 1)]
    chosen = automatic_calibration_set(runs)
    assert chosen.method == UNSEEN_AND_VALIDATION
    ids = {r.id for r in chosen.records}
    assert ids == {str(i) for i in range(50, POOL)} | _used(runs[:1], "val")
    assert not ids & _used(runs, "train")


def test_too_few_free_records_ask_for_a_calibration_file(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    runs = [
        make_run(tmp_path / f"t{trial}", DataSpec(str(dataset), trial=trial, size=50))
        for trial in (1, 2)
    ]  # together they train on almost all 60 pool records
    with pytest.raises(MatxferError, match=r"only \d+ records .*--calibration FILE"):
        automatic_calibration_set(runs)


def test_unknown_or_changed_member_records_are_errors(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", DataSpec(str(dataset), trial=1, size=20))
    info = read_run_info(run)
    write_run_info(run, {**info, "split_hashes": {**info["split_hashes"], "train": "0" * 64}})
    with pytest.raises(MatxferError, match=r"train records re-derived .*differ"):
        automatic_calibration_set([run])
    write_run_info(run, {})
    with pytest.raises(MatxferError, match=r"no data_spec .*--calibration FILE"):
        automatic_calibration_set([run])


def test_calibration_file_loses_the_records_a_member_trained_on(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    run = make_run(tmp_path / "run", DataSpec(str(dataset), trial=1, size=20))
    file = tmp_path / "cal.json"
    with gzip.open(dataset / "pool.json.gz", "rt") as handle:
        file.write_text(handle.read())
    chosen = file_calibration_set(file, [run], ["target"])
    trained = _used([run], "train")
    assert chosen.method == FILE and chosen.checked
    assert chosen.dropped == len(trained) == 18
    assert not {r.id for r in chosen.records} & trained
    write_run_info(run, {})  # members of unknown records: nothing can be checked
    unchecked = file_calibration_set(file, [run], ["target"])
    assert not unchecked.checked and len(unchecked.records) == POOL
    entries = json.loads(file.read_text())
    assert len(entries) == POOL
