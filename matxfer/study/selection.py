"""Choosing runs of a study: ``--select 'ft=ph,pt=fe,size=800'``.

A study directory holds one results row per job (``STUDY/results/<job_id>.parquet``,
read by :func:`matxfer.study.store.read_results`). A selection names columns of
that table by short keys; each key takes one value or alternatives joined by
``|`` (``size=100|800``). Only finished jobs (``status == "done"``) are selected.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from matxfer.errors import ConfigError, MatxferError

#: Selection key → results-table column.
SELECT_KEYS = {
    "ft": "target",
    "pt": "source",
    "size": "size",
    "trial": "trial",
    "seed": "seed",
    "strategy": "strategy",
    "head": "head",
    "kind": "kind",
    "pt_size": "pt_size",
}
#: Columns compared as numbers (``size=800`` matches 800.0).
NUMERIC_COLUMNS = {"size", "trial", "seed", "pt_size"}
#: Files that mark a directory as a study (besides ``results/*.parquet``).
STUDY_MARKERS = ("study.json", "spec.yaml")


def is_study_dir(path: str | Path) -> bool:
    """Whether ``path`` is a study directory: a marker file or ``results/*.parquet``."""
    path = Path(path)
    if not path.is_dir():
        return False
    if any((path / marker).is_file() for marker in STUDY_MARKERS):
        return True
    return any((path / "results").glob("*.parquet"))


def study_table(study_dir: str | Path) -> pd.DataFrame:
    """The results table of a study directory (one row per job).

    Raises:
        MatxferError: ``study_dir`` is not a study directory.
    """
    if not is_study_dir(study_dir):
        raise MatxferError(
            f"{study_dir}: not a study directory (no {' or '.join(STUDY_MARKERS)} and no "
            "results/*.parquet); pass the folder `matxfer study run` wrote"
        )
    from matxfer.study.store import read_results

    return read_results(Path(study_dir))


def parse_selection(text: str) -> dict[str, list[str]]:
    """``'ft=ph,size=100|800'`` → ``{"ft": ["ph"], "size": ["100", "800"]}``.

    Raises:
        ConfigError: An item without ``=``, an unknown key (the message lists
            :data:`SELECT_KEYS`), or a key given twice.
    """
    selection: dict[str, list[str]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"--select: {item!r} is not KEY=VALUE (e.g. 'ft=ph,pt=fe,size=800')")
        if key not in SELECT_KEYS:
            raise ConfigError(
                f"--select: unknown key {key!r}; the keys are {', '.join(SELECT_KEYS)}"
            )
        if key in selection:
            raise ConfigError(f"--select: key {key!r} given twice; join values with '|'")
        selection[key] = [v.strip() for v in value.split("|")]
    return selection


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _matches(column: pd.Series, name: str, values: list[str]) -> pd.Series:
    """Rows whose ``column`` equals one of ``values`` (numbers compared as numbers)."""
    if name in NUMERIC_COLUMNS:
        wanted = []
        for value in values:
            try:
                wanted.append(float(value))
            except ValueError:
                raise ConfigError(f"--select: {name} must be a number, got {value!r}") from None
        return pd.to_numeric(column, errors="coerce").isin(wanted)
    return column.astype("string").isin(values).fillna(False).astype(bool)


def available_values(rows: pd.DataFrame) -> str:
    """``'ft: dc, ph; pt: fe, scratch; ...'``: the values each key takes in ``rows``."""
    parts = []
    for key, column in SELECT_KEYS.items():
        if column not in rows:
            continue
        values = {_format_value(v) for v in rows[column] if not _is_missing(v)}
        if values:
            parts.append(f"{key}: {', '.join(sorted(values, key=_sort_key))}")
    return "; ".join(parts) or "none"


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def select_runs(results: pd.DataFrame, selection: str | dict[str, list[str]]) -> pd.DataFrame:
    """The finished runs (``status == "done"``) of ``results`` that match ``selection``.

    Args:
        results: The study's results table.
        selection: ``'ft=ph,pt=fe,size=800'`` or its parsed form.

    Raises:
        ConfigError: Bad selection text.
        MatxferError: Nothing matches; the message names the key that emptied the
            selection and the values available at that point.
    """
    parsed = parse_selection(selection) if isinstance(selection, str) else selection
    rows = results[results["status"] == "done"] if "status" in results else results
    if rows.empty:
        raise MatxferError(
            f"the study has no finished runs ({len(results)} jobs, none with status 'done')"
        )
    for key, values in parsed.items():
        column = SELECT_KEYS[key]
        if column not in rows:
            raise MatxferError(f"--select: the results table has no column {column!r} ({key})")
        kept = rows[_matches(rows[column], column, values)]
        if kept.empty:
            raise MatxferError(
                f"--select: no finished run has {key}={'|'.join(values)} (after the keys "
                f"before it); available: {available_values(rows)}"
            )
        rows = kept
    return rows
