"""The command line (subprocesses, as a user runs it) and resuming after kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from training_helpers import synthetic_structures, write_alignn_json

from matxfer import cli
from matxfer.cli import main
from matxfer.training import TrainResult, load_model
from matxfer.training.outputs import epoch_log
from matxfer.training.run import trained_seconds

ROOT = Path(__file__).resolve().parents[2]

KILLED_RUN = """
import os, signal, sys
import lightning.pytorch as pl
from matxfer.training import load_config, train

class KillAtEpochStart(pl.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train(sys.argv[1], sys.argv[2], config=load_config(sys.argv[3]), progress=False,
      callbacks=[KillAtEpochStart()])
"""


def matxfer(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "matxfer.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_resume_after_kill_reaches_the_uninterrupted_result(
    trained_run: TrainResult, tiny_data: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tiny_data), str(out), str(tiny_config_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert load_model(out / "last.ckpt").epoch == 1
    assert not (out / "metrics.json").exists()
    killed_seconds = trained_seconds(out / "last.ckpt")  # epochs 0 and 1
    resumed = matxfer("train", tiny_data, "--out", out, "--resume", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text()) == trained_run.metrics
    logged = epoch_log(out / "logs/csv").dropna(subset=["val_mae"])
    assert logged["epoch"].tolist() == [0, 1, 2]  # the log survived the kill
    # The training time of the killed attempt is carried in the checkpoint and added to.
    epoch_seconds = epoch_log(out / "logs/csv").dropna(subset=["epoch_seconds"])
    first_two = epoch_seconds[epoch_seconds["epoch"] < 2]["epoch_seconds"]
    assert first_two.iloc[0] < killed_seconds <= first_two.sum() + 1e-6
    assert trained_seconds(out / "last.ckpt") > killed_seconds


def run_main(monkeypatch: pytest.MonkeyPatch, *args: str | Path) -> int:
    """``matxfer ARGS`` in this process (saves a slow interpreter start); the exit code."""
    monkeypatch.setattr(sys, "argv", ["matxfer", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        main()
    return int(stop.value.code or 0)


def test_cli_evaluate_and_predict(
    trained_run: TrainResult,
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        run_main(
            monkeypatch, "evaluate", trained_run.run_dir, tiny_data, "--out", tmp_path / "e.json"
        )
        == 0
    )
    assert "R²" in capsys.readouterr().out
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 36
    assert (
        run_main(
            monkeypatch,
            "predict",
            trained_run.best_checkpoint,
            tiny_data,
            "--out",
            tmp_path / "p.csv",
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "p.csv")) == 36


def test_cli_bad_input_is_one_error_line_not_a_traceback(tiny_data: Path, tmp_path: Path) -> None:
    result = matxfer("train", tmp_path / "missing.json", "--out", tmp_path / "r")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "error:" in result.stderr and "missing.json" in result.stderr


def test_cli_warnings_are_one_line_without_library_source(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def warns() -> None:
        warnings.warn("target column(s) [0] have zero spread", UserWarning, stacklevel=1)

    monkeypatch.setattr(cli, "app", warns)
    cli.main()
    error = capsys.readouterr().err
    assert error == "warning: target column(s) [0] have zero spread\n"


def test_cli_predicts_alignn_records_without_labels_but_evaluate_needs_them(
    trained_run: TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    records = write_alignn_json(tmp_path / "new.json", synthetic_structures(4, seed=9), False)
    rows = json.loads(records.read_text())
    rows[1]["target"] = None  # a blank label is no label
    records.write_text(json.dumps(rows))
    out = tmp_path / "p.csv"
    assert run_main(monkeypatch, "predict", trained_run.best_checkpoint, records, "--out", out) == 0
    predicted = pd.read_csv(out)
    assert predicted.columns.tolist() == ["id", "prediction"] and len(predicted) == 4
    assert run_main(monkeypatch, "evaluate", trained_run.best_checkpoint, records) == 2
    assert "record has no target field 'target'" in capsys.readouterr().err


def test_cli_unreadable_cif_is_named_without_pymatgen_warnings(
    trained_run: TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broken = tmp_path / "broken.cif"
    broken.write_text("data_x\n_cell_length_a 4.0\n_symmetry_space_group_name_H-M 'P 1'\n")
    args = ("predict", trained_run.best_checkpoint, broken, "--out", tmp_path / "p.csv")
    assert run_main(monkeypatch, *args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: 1 of 1 structure files are invalid")
    assert "cannot read structure file 'broken.cif'" in error
    assert "Warning" not in error and "pymatgen" not in error
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, c, t: ["train", d, "--out", t / "r", "--config", c, "--lr", "-1"], "lr=-1"),
        (lambda d, c, t: ["train", d, "--out", t / "r", "--profile", "turbo"], "'turbo'"),
        (lambda d, c, t: ["train", d, "--out", t / "r", "--resume"], "nothing to resume"),
        (lambda d, c, t: ["train", d, "--out", c.parent, "--config", c], "--overwrite"),
        (
            lambda d, c, t: ["train", d, "--out", t / "r", "--resume", "--overwrite"],
            "exclude each other",
        ),
        (lambda d, c, t: ["evaluate", t / "no_run", d], "no such run directory"),
        (lambda d, c, t: ["predict", t, d, "--out", t / "p.csv"], "holds no best.ckpt"),
    ],
)
def test_cli_errors_name_the_problem(
    make_args,
    message: str,
    tiny_data: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run_main(monkeypatch, *make_args(tiny_data, tiny_config_file, tmp_path)) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and message in error
