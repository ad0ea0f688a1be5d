"""Ensembles of a study's runs: mean, std, members, metrics and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.errors import MatxferError
from matxfer.study.ensemble import evaluate_ensemble, predict_ensemble
from matxfer.training import evaluate, predict
from matxfer.training.metrics import regression_metrics

Study = tuple[Path, Path, pd.DataFrame]


def _members(study: Study) -> dict[str, np.ndarray]:
    """Each run's own predictions, through the single-run ``predict``."""
    _, data, results = study
    done = results[results["status"] == "done"]
    return {
        job: predict(run_dir, data)["prediction"].to_numpy()
        for job, run_dir in zip(done["job_id"], done["run_dir"], strict=True)
    }


def test_mean_std_and_member_columns(tiny_study: Study, tmp_path: Path) -> None:
    study, data, results = tiny_study
    out = tmp_path / "preds.csv"
    frame = predict_ensemble(study, data, "ft=ph,size=800", out, results=results)
    members = _members(tiny_study)
    assert sorted(members) == ["ft1", "ft2"]  # the failed ft3 is no member
    stacked = np.stack([members["ft1"], members["ft2"]])
    assert not np.allclose(stacked[0], stacked[1])
    np.testing.assert_allclose(frame["prediction_ft1"], members["ft1"], rtol=1e-6)
    np.testing.assert_allclose(frame["prediction"], stacked.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(frame["prediction_std"], stacked.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(frame["target"], 0.1 * np.arange(10))
    assert list(pd.read_csv(out).columns) == list(frame.columns)
    assert frame.attrs["members"] == ["ft1", "ft2"]


def test_evaluation_of_ensemble_and_members(tiny_study: Study) -> None:
    study, data, results = tiny_study
    result = evaluate_ensemble(study, data, "ft=ph,trial=1|2", results=results)
    members = _members(tiny_study)
    mean = (members["ft1"] + members["ft2"]) / 2
    labels = 0.1 * np.arange(10)
    stats = result["ensemble"]["target"]
    expected = regression_metrics(labels, mean)
    for key in ("r2", "mae", "rmse", "n"):
        assert stats[key] == pytest.approx(expected[key])
    spread = np.abs(members["ft1"] - members["ft2"]) / 2  # population std of two values
    rho = pd.Series(spread).corr(pd.Series(np.abs(mean - labels)), method="spearman")
    assert stats["spearman_std_abs_error"] == pytest.approx(rho)
    assert [m["job_id"] for m in result["members"]] == ["ft1", "ft2"]
    single = evaluate(results["run_dir"].iloc[0], data, out=study / "single.json")
    for units in ("original", "transformed"):
        member = result["members"][0]["metrics"]["target"][units]
        assert member == pytest.approx(single["metrics"]["target"][units])
    saved = Path(result["output"])
    assert saved == study / "ensembles" / "eval_ft-ph_trial-1_2_data.json"
    assert json.loads(saved.read_text())["ensemble"]["target"]["n"] == 10


def test_selections_that_cannot_make_an_ensemble(tiny_study: Study) -> None:
    study, data, results = tiny_study
    with pytest.raises(MatxferError, match=r"pt=bg.*available: ft: ph; pt: fe"):
        predict_ensemble(study, data, "pt=bg", results=results)
    two_targets = pd.concat([results, results.assign(target="dc", job_id="dc")])
    with pytest.raises(MatxferError, match=r"2 targets \(dc, ph\).*add ft="):
        predict_ensemble(study, data, "size=800", results=two_targets)
    no_run = results.assign(run_dir=str(study / "gone"))
    with pytest.raises(MatxferError, match=r"run ft1 of .*gone"):
        predict_ensemble(study, data, "ft=ph", results=no_run)


def test_command_line(tiny_study: Study, tmp_path: Path) -> None:
    study, data, results = tiny_study
    out = tmp_path / "preds.csv"
    runner = CliRunner()
    args = ["predict", str(study), str(data), "--select", "ft=ph,size=800", "--out", str(out)]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "10 ensemble predictions (2 members)" in shown.output
    assert {"prediction", "prediction_std", "prediction_ft1"} <= set(pd.read_csv(out).columns)
    report = tmp_path / "eval.json"
    shown = runner.invoke(app, ["evaluate", str(study), str(data), "--out", str(report)])
    assert shown.exit_code == 0, shown.output
    assert "ensemble" in shown.output and "ft2" in shown.output and "Spearman" in shown.output
    assert json.loads(report.read_text())["selection"] == ""
    # --select on a single run's directory: an error that says what a study folder is.
    shown = runner.invoke(
        app, ["evaluate", results["run_dir"].iloc[0], str(data), "--select", "ft=ph"]
    )
    assert isinstance(shown.exception, MatxferError)
    assert "is not a study directory" in str(shown.exception)


def test_a_member_with_its_own_inputs_gets_them(tiny_study: Study) -> None:
    from matxfer.study.ensemble import load_ensemble
    from matxfer.training.inputs import graphs_of, records_to_predict

    study, data, results = tiny_study
    ensemble = load_ensemble(study, "ft=ph,size=800", results)
    records, _, _ = records_to_predict(data, None, None, False)
    expected = ensemble.member_predictions(records)
    calls: list[int] = []
    second = ensemble.predictors[1].loaded

    def featurize(structures, progress=False, ids=None):  # e.g. CHGNet's own graphs
        calls.append(len(structures))
        return graphs_of(structures, second.graph_config, progress, ids)

    second.model.featurize = featurize
    np.testing.assert_allclose(ensemble.member_predictions(records), expected, rtol=1e-6)
    assert calls == [len(records)]  # built for that member, not shared from the first
