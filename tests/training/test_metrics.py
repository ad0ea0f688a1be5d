"""Regression metrics skip missing labels and match their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from matxfer.training.metrics import metrics_by_target, regression_metrics


def test_metrics_match_definitions() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=50)
    p = y + rng.normal(scale=0.3, size=50)
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert m["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))
    assert m["n"] == 50


def test_nan_labels_are_skipped() -> None:
    y = np.array([1.0, np.nan, 3.0, 5.0])
    p = np.array([1.5, 100.0, 3.0, 4.0])
    assert regression_metrics(y, p) == regression_metrics(y[[0, 2, 3]], p[[0, 2, 3]])
    assert regression_metrics(y, p)["n"] == 3


def test_no_labels_gives_nan_and_zero_count() -> None:
    m = regression_metrics(np.array([np.nan, np.nan]), np.array([1.0, 2.0]))
    assert m["n"] == 0 and math.isnan(m["mae"]) and math.isnan(m["r2"])


def test_per_target_columns() -> None:
    y = np.array([[1.0, np.nan], [2.0, 4.0], [3.0, 6.0]])
    p = np.array([[1.0, 0.0], [2.0, 4.0], [3.0, 7.0]])
    m = metrics_by_target(y, p, ["a", "b"])
    assert m["a"]["mae"] == 0.0 and m["a"]["r2"] == 1.0
    assert m["b"]["n"] == 2 and m["b"]["mae"] == pytest.approx(0.5)


def test_metrics_table_shows_target_names_verbatim() -> None:
    from rich.console import Console

    from matxfer.training.outputs import metrics_table

    stats = {"n": 3, "r2": 0.5, "mae": 0.1, "rmse": 0.2}
    metrics = {"test": {"[/gap]": {"original": stats}, "[red]bg": {"original": stats}}}
    console = Console(width=200, record=True)
    console.print(metrics_table(metrics, ("test",)))
    text = console.export_text()
    assert "[/gap]" in text
    assert "[red]bg" in text
