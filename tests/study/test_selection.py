"""Choosing a study's runs with ``--select``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from matxfer.errors import ConfigError, MatxferError
from matxfer.study.selection import is_study_dir, parse_selection, select_runs


def test_parse_selection() -> None:
    assert parse_selection(" ft=ph, size=100|800 ,") == {"ft": ["ph"], "size": ["100", "800"]}
    assert parse_selection("") == {}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("target=ph", ["unknown key 'target'", "ft, pt, size, trial, seed"]),
        ("ft", ["not KEY=VALUE"]),
        ("ft=ph,ft=dc", ["given twice", "|"]),
    ],
)
def test_bad_selections(text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as error:
        parse_selection(text)
    for word in words:
        assert word in str(error.value)


def test_select_runs(results: pd.DataFrame) -> None:
    rows = select_runs(results, "ft=ph,pt=fe,size=100,strategy=all")
    # The failed trial-4 job has the same settings but is not selected.
    assert sorted(rows["job_id"]) == ["fe-100-1", "fe-100-2", "fe-100-3"]
    assert sorted(select_runs(results, "pt=scratch,size=800|100,trial=2")["job_id"]) == [
        "scratch-100-2",
        "scratch-800-2",
    ]
    assert list(select_runs(results, "kind=pretrain,pt_size=941")["job_id"]) == ["pt-fe"]


def test_empty_selection_lists_the_available_values(results: pd.DataFrame) -> None:
    with pytest.raises(MatxferError) as error:
        select_runs(results, "ft=ph,pt=bg")
    message = str(error.value)
    assert "pt=bg" in message
    assert "pt: fe, scratch" in message
    assert "size: 100, 800" in message
    with pytest.raises(ConfigError, match="size must be a number"):
        select_runs(results, "size=big")


def test_no_finished_runs(results: pd.DataFrame) -> None:
    with pytest.raises(MatxferError, match="no finished runs"):
        select_runs(results.assign(status="failed"), "ft=ph")


def test_study_dir_markers(tmp_path: Path) -> None:
    assert not is_study_dir(tmp_path)
    (tmp_path / "results").mkdir()
    assert not is_study_dir(tmp_path)
    (tmp_path / "results" / "abc.parquet").touch()
    assert is_study_dir(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "study.json").write_text("{}")
    assert is_study_dir(other)
    assert not is_study_dir(tmp_path / "results" / "abc.parquet")
