"""The study report: Markdown, CSV tables and figures, also from thin or broken results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matxfer.errors import MatxferError
from matxfer.study.figures import FigureWriter, draw_heatmaps
from matxfer.study.report import write_report
from matxfer.study.store import write_result
from matxfer.study.tables import build_tables


def _names(paths: list[Path]) -> set[str]:
    return {path.name for path in paths}


def _with_predictions(results: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Give every scratch / fine-tuning run a run dir with ``predictions_test.csv``."""
    results = results.copy()
    rng = np.random.default_rng(0)
    for index in results.index[results["kind"] != "pretrain"]:
        run_dir = root / str(results.at[index, "job_id"])
        run_dir.mkdir(parents=True)
        true = rng.normal(size=20)
        frame = pd.DataFrame({"id": range(20), "target": true, "prediction": true + 0.1})
        frame.to_csv(run_dir / "predictions_test.csv", index=False)
        results.at[index, "run_dir"] = str(run_dir)
    return results


def test_full_report(results: pd.DataFrame, tmp_path: Path) -> None:
    results = _with_predictions(results, tmp_path / "runs")
    bigger_pt = results[results["job_id"].str.startswith("fe-")].assign(
        job_id=lambda f: f["job_id"] + "-pt5000", pt_size=5000.0
    )
    report = write_report(tmp_path / "study", results=pd.concat([results, bigger_pt]))
    assert report.markdown == tmp_path / "study" / "report" / "report.md"
    assert _names(report.csv) == {"summary.csv", "runs.csv", "pretrain.csv", "failed.csv"}
    names = _names(report.figures)
    for stem in [
        "heatmap_r2_size100",
        "heatmap_mae_size800",
        "ft_size_ph",
        "pt_size_ph",
        "strategies_ph",
        "parity_ph",
    ]:
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(path.stat().st_size > 0 for path in report.figures)
    text = report.markdown.read_text()
    assert "## FT target: ph" in text
    # fe → ph at size 100: R² 0.587 ± 0.081, study 0.616 ± 0.082, paired ΔR² +18.3 %.
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| fe → ph · all · reuse · PT 941 | 100 |")
    )
    assert "0.587 ± 0.081" in row and "0.616 ± 0.082" in row and "+18.3 %" in row
    assert "3 (+1 failed)" in row
    assert "`failed-1`" in text and "out of memory \\| in batch 3" in text
    assert "## Pre-training" in text and "| pt-fe | fe | 941 |" in text
    assert "![parity_ph](figures/parity_ph.png)" in text
    summary = pd.read_csv(tmp_path / "study" / "report" / "summary.csv")
    assert {"r2_mean", "d_r2_rel_mean", "study_r2_mean"} <= set(summary.columns)


@pytest.mark.parametrize(
    "case", ["one row", "all failed", "NaN metrics", "pretrain only", "no rows", "missing run dir"]
)
def test_thin_results_never_crash(results: pd.DataFrame, tmp_path: Path, case: str) -> None:
    frames = {
        "one row": results.iloc[[0]],
        "all failed": results.assign(status="failed", test_r2=np.nan, test_mae=np.nan),
        "NaN metrics": results.assign(test_r2=np.nan),
        "pretrain only": results[results["kind"] == "pretrain"],
        "no rows": results.iloc[0:0],
        "missing run dir": results,
    }
    report = write_report(tmp_path, tmp_path / "out", results=frames[case])
    text = report.markdown.read_text()
    assert text.startswith("# Study report")
    if case == "missing run dir":
        assert "## Notes" in text and "/nonexistent/run/predictions_test.csv is missing" in text
    if case in ("all failed", "no rows", "pretrain only"):
        assert not report.figures


def test_not_a_study_directory(tmp_path: Path) -> None:
    with pytest.raises(MatxferError, match="not a study directory"):
        write_report(tmp_path)


def test_report_of_a_study_folder(results: pd.DataFrame, tmp_path: Path) -> None:
    """Read through the results store, as ``matxfer study report`` does."""
    for row in results.to_dict("records"):
        write_result(tmp_path, {k: None if pd.isna(v) else v for k, v in row.items()})
    report = write_report(tmp_path)
    assert report.markdown == tmp_path / "report" / "report.md"
    text = report.markdown.read_text()
    assert "| fe → ph · all · reuse · PT 941 | 100 | 3 (+1 failed) | 0.587 ± 0.081 |" in text


def test_leave_one_out_sources_share_a_heatmap_row(results: pd.DataFrame, tmp_path: Path) -> None:
    tuned = results[results["job_id"].str.startswith("fe-")]
    loo = pd.concat(
        [
            tuned.assign(source="mpt-no-ph", job_id=tuned["job_id"] + "-loo"),
            tuned.assign(source="mpt-no-dc", target="dc", job_id=tuned["job_id"] + "-dc"),
        ]
    )
    summary = build_tables(pd.concat([results, loo])).summary
    writer = FigureWriter(tmp_path)
    captured: list[list[str]] = []
    writer.save = lambda figure, stem: captured.append(  # type: ignore[method-assign]
        [label.get_text() for label in figure.axes[0].get_yticklabels()]
    )
    draw_heatmaps(summary, writer)
    assert captured and all(rows == ["fe", "mpt-no-FT"] for rows in captured)
