"""Run outputs: strict JSON (NaN as null, old NaN files still read), atomic plots and tables."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from rich.console import Console

from matxfer.training.outputs import (
    as_float,
    format_metric,
    metrics_table,
    plot_learning_curve,
    write_csv,
    write_json,
    write_model_card,
)


def strict_loads(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_nan_and_infinity_as_null(tmp_path: Path) -> None:
    data = {"r2": math.nan, "mae": np.float64(math.inf), "rows": [1.5, -math.inf], "n": 0}
    write_json(tmp_path / "metrics.json", data)
    assert strict_loads((tmp_path / "metrics.json").read_text()) == {
        "r2": None,
        "mae": None,
        "rows": [1.5, None],
        "n": 0,
    }


@pytest.mark.parametrize("value", [None, math.nan])  # new files (null) and old files (NaN)
def test_readers_take_null_and_old_nan(value: float | None, tmp_path: Path) -> None:
    assert math.isnan(as_float(value)) and format_metric(value, ".3f") == "n/a"
    stats = {"r2": value, "mae": 0.5, "rmse": value, "n": 1}
    metrics = {"targets": ["target"], "test": {"target": {"original": stats}}}
    console = Console(file=io.StringIO(), width=120)
    console.print(metrics_table(metrics, ("test",)))
    assert console.file.getvalue().count("n/a") == 2
    write_model_card(tmp_path / "MODEL_CARD.md", "seed: 0\n", metrics, {})
    assert (
        "| test | target | original | 1 | n/a | 0.5 | n/a |"
        in (tmp_path / "MODEL_CARD.md").read_text()
    )


def test_plots_and_tables_are_written_atomically(tmp_path: Path, monkeypatch) -> None:
    curve, table = tmp_path / "learning_curve.png", tmp_path / "predictions_test.csv"
    curve.write_bytes(b"previous plot")
    table.write_text("id,prediction\na,1\n")

    def killed(self: object, path: Path, *args: object, **kwargs: object) -> None:
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", killed)
    monkeypatch.setattr(pd.DataFrame, "to_csv", killed)
    log = pd.DataFrame({"epoch": [0, 1], "train_loss": [1.0, 0.5]})
    with pytest.raises(KeyboardInterrupt):
        plot_learning_curve(curve, log, best_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        write_csv(pd.DataFrame({"id": ["b"]}), table)
    assert curve.read_bytes() == b"previous plot"
    assert table.read_text() == "id,prediction\na,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [curve.name, table.name]
