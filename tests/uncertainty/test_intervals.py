"""``matxfer predict|evaluate ... --interval``: end to end on tiny runs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner
from uq_helpers import MakeRun

from matxfer.cli import app
from matxfer.errors import ConfigError, MatxferError
from matxfer.study.store import write_result
from matxfer.training.inputs import DataSpec
from matxfer.uncertainty import intervals
from matxfer.uncertainty.calset import UNSEEN, UNSEEN_AND_VALIDATION, member_splits


@pytest.fixture(scope="module")
def study(dataset: Path, make_run: MakeRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study folder whose results name two runs: trials 1 and 2 of size 20."""
    folder = tmp_path_factory.mktemp("study")
    for trial in (1, 2):
        spec = DataSpec(str(dataset), trial=trial, size=20)
        run = make_run(folder / "runs" / f"t{trial}", spec, seed=trial)
        row = {"job_id": f"t{trial}", "kind": "scratch", "status": "done", "target": "tiny",
               "source": "scratch", "size": 20.0, "trial": float(trial), "seed": 0,
               "run_dir": str(run)}  # fmt: skip
        write_result(folder, row)
    return folder


def _invoke(*args: str) -> str:
    shown = CliRunner().invoke(app, [str(a) for a in args])
    assert shown.exit_code == 0, (shown.output, shown.exception)
    return shown.output


def test_evaluate_and_predict_a_study_ensemble(
    study: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "uq" / "eval.json"
    test = dataset / "test.json.gz"
    shown = _invoke("evaluate", study, test, "--select", "ft=tiny", "--interval", "0.9",
                    "--out", report)  # fmt: skip
    assert "coverage" in shown and "calibrated on 30 records" in shown
    result = json.loads(report.read_text())
    stats = result["intervals"]["target"]
    assert stats["n"] == 12 and stats["n_calibration"] == 30 and 0 <= stats["coverage"] <= 1
    assert {"mean_width", "miscalibration_area", "spearman_std_abs_error"} <= set(stats)
    assert result["calibration"]["calibration"]["method"] == UNSEEN
    assert result["calibration"]["members"] == ["t1", "t2"]
    for suffix in ("png", "svg"):
        assert (report.parent / f"eval_calibration.{suffix}").stat().st_size > 0
    # predict reuses the stored calibration: computing another would fail here.
    monkeypatch.setattr(intervals, "compute_calibration", _no_recalibration)
    out = tmp_path / "uq" / "preds.csv"
    _invoke("predict", study, test, "--select", "ft=tiny", "--interval", "0.8", "--out", out)
    frame = pd.read_csv(out)
    head = ["id", "target", "prediction", "prediction_std", "prediction_lower", "prediction_upper"]
    assert list(frame.columns[:6]) == head
    assert (frame["prediction_lower"] <= frame["prediction"]).all()
    assert (frame["prediction"] <= frame["prediction_upper"]).all()
    saved = json.loads((tmp_path / "uq" / "preds.calibration.json").read_text())
    q = saved["targets"]["target"]["q"]
    beta = saved["targets"]["target"]["beta"]
    half = (frame["prediction_upper"] - frame["prediction_lower"]) / 2
    np.testing.assert_allclose(half, q * (frame["prediction_std"] + beta), rtol=1e-9)


def _no_recalibration(*args: object, **kwargs: object) -> None:
    raise AssertionError("the calibration was computed again instead of read from the cache")


def test_ensemble_directory_and_single_run(
    dataset: Path, make_run: MakeRun, tmp_path: Path
) -> None:
    spec = DataSpec(str(dataset), trial=1, size=50)
    folder = tmp_path / "ens"
    for k in (0, 1):  # one split, different weights: as `--ensemble K` trains them
        make_run(folder / f"member-{k}", spec, weights=k, val_fraction=0.4)
    test = dataset / "test.json.gz"
    result = intervals.evaluate_intervals(folder, test, 0.9)
    calibration = result["calibration"]
    assert calibration["members"] == ["member-0", "member-1"]
    assert calibration["calibration"]["method"] == UNSEEN_AND_VALIDATION
    assert calibration["targets"]["target"]["normalised"]
    assert Path(result["output"]) == folder / "eval_test.json"
    # One run: no spread, so plain residuals and intervals of constant width.
    frame = intervals.predict_intervals(folder / "member-0", test, tmp_path / "one.csv", 0.9)
    assert frame["prediction_std"].eq(0).all()
    width = frame["prediction_upper"] - frame["prediction_lower"]
    assert width.nunique() == 1 and width.iloc[0] > 0


def test_calibration_records_in_the_evaluated_data_are_dropped(
    study: Path, dataset: Path, tmp_path: Path
) -> None:
    pool = json.loads(gzip.decompress((dataset / "pool.json.gz").read_bytes()))
    calibration, evaluated = tmp_path / "cal.json", tmp_path / "eval.json"
    calibration.write_text(json.dumps(pool))
    evaluated.write_text(json.dumps(pool[40:50]))  # no trial holds records 30-59
    result = intervals.evaluate_intervals(
        study, evaluated, 0.9, tmp_path / "e.json", "ft=tiny", calibration
    )
    trained = {r.id for k in (1, 2) for r in member_splits(study / "runs" / f"t{k}")[0].train}
    assert result["calibration"]["calibration"]["dropped_trained_on"] == len(trained)
    stats = result["intervals"]["target"]
    assert stats["calibration_overlap_dropped"] == 10
    assert stats["n_calibration"] == 60 - len(trained) - 10
    evaluated.write_text(json.dumps(pool[30:]))  # would leave too few to calibrate on
    with pytest.raises(MatxferError, match=r"30 of the \d+ calibration records are among"):
        intervals.evaluate_intervals(
            study, evaluated, 0.9, tmp_path / "e.json", "ft=tiny", calibration
        )


def test_command_line_errors(study: Path, dataset: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    test = str(dataset / "test.json.gz")
    cases = [
        (["--interval", "1.5"], ConfigError, "strictly between 0 and 1"),
        (["--calibration", test], ConfigError, "add --interval"),
    ]
    for extra, kind, message in cases:
        shown = runner.invoke(app, ["evaluate", str(study), test, "--select", "ft=tiny", *extra])
        assert isinstance(shown.exception, kind), shown.output
        assert message in str(shown.exception)
    run = study / "runs" / "t1"
    shown = runner.invoke(app, ["evaluate", str(run), test, "--select", "ft=tiny",
                                "--interval", "0.9"])  # fmt: skip
    assert isinstance(shown.exception, MatxferError)
    assert "is not a study directory" in str(shown.exception)


def test_unfinished_members_are_refused(dataset: Path, make_run: MakeRun, tmp_path: Path) -> None:
    spec = DataSpec(str(dataset), trial=1, size=20)
    for k in (0, 1):
        make_run(tmp_path / "ens" / f"member-{k}", spec, weights=k)
    (tmp_path / "ens" / "member-1" / "done.json").unlink()  # killed while training
    with pytest.raises(MatxferError, match=r"member\(s\) member-1 did not finish .*--resume"):
        intervals.evaluate_intervals(tmp_path / "ens", dataset / "test.json.gz", 0.9)
