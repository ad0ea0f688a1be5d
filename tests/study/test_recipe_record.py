"""The record of benchmark runs (benchmarks/recipe_runs.py): tables outlive the run cache."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from builders import benchmark_script, printed_lines, recipe_run


@pytest.fixture
def runs() -> ModuleType:
    benchmark_script("accuracy_matrix")  # puts benchmarks/ on sys.path
    import recipe_runs

    return recipe_runs


def test_record_keeps_finished_runs_and_a_rerun_replaces_its_line(
    runs: ModuleType, tmp_path: Path
) -> None:
    cache, record = tmp_path / "cache", tmp_path / "results" / "record.csv"
    split = runs.Split("ph", 800)
    recipe_run(cache / "ph800" / "scratch" / "s0", 0.95, 60.0)
    recipe_run(cache / "ph800" / "ftmpt7" / "s3", 0.97, 120.0)
    (cache / "ph800" / "ftmpt7" / "s4").mkdir()  # unfinished: not recorded
    assert runs.write_record(record, split, runs.cached_runs(cache, split)) == 2
    # Another split in the same file is kept apart.
    recipe_run(cache / "dc800" / "scratch" / "s0", 0.50, 60.0)
    runs.write_record(record, runs.Split("dc", 800), runs.cached_runs(cache, runs.Split("dc", 800)))
    frame = pd.read_csv(record)
    assert list(frame.columns) == list(runs.COLUMNS) and len(frame) == 3
    assert not list(record.parent.glob(".*lock"))  # the lock is given back

    recorded = runs.recorded_runs(record, split)
    assert recorded["ftmpt7"][3] == pytest.approx(
        {"r2": 0.97, "mae": 0.03, "epochs": 2, "minutes": 2.0}
    )
    assert set(recorded) == {"scratch", "ftmpt7"} and set(recorded["scratch"]) == {0}
    assert runs.recorded_runs(record, runs.Split("ph", 800, trial=2)) == {}
    assert runs.recorded_runs(tmp_path / "absent.csv", split) == {}

    # Seed 0 run again with another result: its line is replaced, not doubled.
    replaced = {"scratch": {0: {"r2": 0.9, "mae": 0.1, "epochs": 3, "minutes": math.nan}}}
    runs.write_record(record, split, replaced)
    recorded = runs.recorded_runs(record, split)
    assert recorded["scratch"][0]["r2"] == pytest.approx(0.9)
    assert math.isnan(recorded["scratch"][0]["minutes"])
    assert len(pd.read_csv(record)) == 3


def test_the_cache_wins_over_the_record(runs: ModuleType, tmp_path: Path) -> None:
    record, split = tmp_path / "record.csv", runs.Split("ph", 100)
    old = {"scratch": {0: {"r2": 0.1, "mae": 0.9, "epochs": 2, "minutes": 1.0}}}
    runs.write_record(record, split, {**old, "ftfe": {1: dict(old["scratch"][0])}})
    cached = {"scratch": {0: {"r2": 0.5, "mae": 0.5, "epochs": 2, "minutes": 1.0}}}
    merged = runs.merged_runs(record, split, cached)
    assert merged["scratch"][0]["r2"] == 0.5 and merged["ftfe"][1]["r2"] == pytest.approx(0.1)
    assert runs.merged_runs(None, split, cached) == cached


def test_tables_are_printed_from_the_record_after_the_cache_is_gone(tmp_path: Path) -> None:
    cache, record = tmp_path / "cache", tmp_path / "record.csv"
    for seed, (scratch, tuned) in enumerate([(0.95, 0.99), (0.97, 0.99)]):
        recipe_run(cache / "ph800" / "scratch" / f"s{seed}", scratch, 60.0)
        recipe_run(cache / "ph800" / "ftmpt7" / f"s{seed}", tuned, 120.0)
    recipes = benchmark_script("transfer_recipes")
    argv = ["--out", str(cache), "--data", "ph", "--size", "800", "--table-only"]
    argv += ["--record", str(record)]
    first = printed_lines(recipes.main, [*argv, "--seeds", "0,1"])
    assert first[0] == f"recorded 4 finished runs in {record}"
    assert any(line.startswith("ensemble of the seeds") for line in first)

    # A new machine: the cache holds only a new seed; the recorded seeds still count.
    shutil.rmtree(cache)
    recipe_run(cache / "ph800" / "scratch" / "s2", 0.96, 60.0)
    recipe_run(cache / "ph800" / "ftmpt7" / "s2", 0.98, 120.0)
    lines = printed_lines(recipes.main, [*argv, "--seeds", "0,1,2"])
    ftmpt7 = next(line for line in lines if line.startswith("ftmpt7 "))
    # Three seeds, paired with scratch at each: +0.04, +0.02, +0.02.
    assert ftmpt7.split()[1] == "3" and "+0.027" in ftmpt7
    assert len(pd.read_csv(record)) == 6
    # Ensembles need predictions: only cached runs, here one seed each, so none.
    assert not any(line.startswith("ensemble") for line in lines)

    matrix = benchmark_script("accuracy_matrix")
    printed = printed_lines(
        matrix.main, ["--recipes", str(cache), "--record", str(record), "--size", "800"]
    )
    assert any(line.startswith("ph: scratch R² 0.960 ± 0.010") for line in printed)
    assert any("n=3" in line for line in printed if line.startswith("ph: scratch"))
    cache_only = printed_lines(
        matrix.main, ["--recipes", str(cache), "--no-record", "--size", "800"]
    )
    assert any("n=1" in line for line in cache_only if line.startswith("ph: scratch"))
