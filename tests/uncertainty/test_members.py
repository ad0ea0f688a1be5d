"""``matxfer train --ensemble K``: members share one split, seeds differ; then intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from builders import TINY_MODEL
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.errors import ConfigError
from matxfer.training import resolve_config, save_config
from matxfer.training.inputs import DataSpec
from matxfer.training.rundir import read_config
from matxfer.uncertainty.calset import UNSEEN_AND_VALIDATION, member_splits
from matxfer.uncertainty.members import train_ensemble


@pytest.fixture(scope="module")
def ensemble_dir(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 3-epoch tiny members, trained through the command line (seed 7)."""
    values = {"model": TINY_MODEL, "epochs": 3, "batch_size": 8, "val_fraction": 0.4,
              "early_stopping_patience": None, "target_transform": "standardize"}  # fmt: skip
    config = tmp_path_factory.mktemp("config") / "tiny.yaml"
    save_config(resolve_config("fast", values), config)
    out = tmp_path_factory.mktemp("runs") / "ens"
    args = ["train", str(dataset), "--trial", "1", "--size", "50", "--config", str(config),
            "--seed", "7", "--ensemble", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "2 members in" in shown.output
    return out


def test_members_share_the_split_and_differ_in_seed(ensemble_dir: Path) -> None:
    members = [ensemble_dir / "member-0", ensemble_dir / "member-1"]
    assert [read_config(m).seed for m in members] == [7, 8]
    first, second = (member_splits(m)[0] for m in members)  # split hashes verified
    for part in ("train", "val", "test"):
        assert [r.id for r in first.parts()[part]] == [r.id for r in second.parts()[part]]
    assert json.loads((ensemble_dir / "ensemble.json").read_text())["split_seed"] == 7
    tests = [pd.read_csv(m / "predictions_test.csv")["prediction"] for m in members]
    assert not np.allclose(tests[0], tests[1])


def test_evaluate_an_ensemble_directory(ensemble_dir: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", str(ensemble_dir), str(dataset / "test.json.gz"), "--interval", "0.9",
            "--out", str(out)]  # fmt: skip
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    result = json.loads(out.read_text())
    assert result["calibration"]["members"] == ["member-0", "member-1"]
    assert result["calibration"]["calibration"]["method"] == UNSEEN_AND_VALIDATION
    assert result["intervals"]["target"]["n_calibration"] == 30  # 10 unseen + 20 validation


def test_resume_keeps_finished_members_and_checks_the_seed(
    ensemble_dir: Path, dataset: Path
) -> None:
    spec = DataSpec(str(dataset), trial=1, size=50)
    config = read_config(ensemble_dir / "member-0")
    before = (ensemble_dir / "member-1" / "best.ckpt").stat().st_mtime_ns
    results = train_ensemble(spec, ensemble_dir, config, 2, resume=True)
    assert [Path(r["run_dir"]).name for r in results] == ["member-0", "member-1"]
    assert (ensemble_dir / "member-1" / "best.ckpt").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="resume with --seed 7"):
        train_ensemble(spec, ensemble_dir, config.model_copy(update={"seed": 3}), 2, resume=True)
    with pytest.raises(ConfigError, match="at least 2 members"):
        train_ensemble(spec, ensemble_dir, config, 1)
