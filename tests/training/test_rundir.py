"""Run directories: one process per --out, new/overwritten/resumed runs, the done marker."""

from __future__ import annotations

import ast
import json
import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import lock_held_elsewhere
from training_helpers import tiny_config

from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import LockHeldError
from matxfer.training import TrainResult, checkpoint, is_finished, rundir, train
from matxfer.training.outputs import epoch_log
from matxfer.training.rundir import DONE_FILE, check_run_dir


@pytest.fixture
def copied_run(trained_run: TrainResult, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(trained_run.run_dir, copy)
    return copy


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path / "run"``, locked by another process."""
    with lock_held_elsewhere(tmp_path / "run"):
        yield tmp_path / "run"


def test_a_second_process_on_the_same_out_is_refused(tiny_data: Path, held: Path) -> None:
    (held / ".best.ckpt.123.abcd.tmp").write_text("another process is writing this")
    with pytest.raises(LockHeldError, match=r"pid \d+ on host"):
        train(tiny_data, held, config=tiny_config(epochs=1), progress=False)
    for resume in (False, True):
        with pytest.raises(LockHeldError):
            train(tiny_data, held, config=tiny_config(), progress=False, resume=resume)
    # The live process's temporary file is untouched.
    assert (held / ".best.ckpt.123.abcd.tmp").is_file()


def test_a_run_saved_with_the_old_graph_fields_resumes(copied_run: Path) -> None:
    saved = copied_run / rundir.CONFIG_FILE
    saved.write_text(
        saved.read_text().replace("graph:\n", "graph:\n  cutoff: 8.0\n  cutoff_step: 1.0\n")
    )
    assert "cutoff_step" in saved.read_text()
    check_run_dir(copied_run, tiny_config(), resume=True)  # no "changed: ['graph']"
    with pytest.raises(ConfigError, match=r"changed: \['epochs'\]"):
        check_run_dir(copied_run, tiny_config(epochs=7), resume=True)


def test_resume_removes_temporary_files_of_the_killed_run(copied_run: Path) -> None:
    (copied_run / ".last.ckpt.99.beef.tmp").write_bytes(b"half")
    check_run_dir(copied_run, tiny_config(), resume=True)
    assert not list(copied_run.glob(".*.tmp"))
    assert not (copied_run / DONE_FILE).exists()  # no longer finished once training goes on


def test_a_non_empty_out_without_checkpoints_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "logs" / "csv").mkdir(parents=True)
    old_log = "epoch,val_mae\n0,9.0\n1,9.0\n2,9.0\n3,9.0\n"
    (out / "logs" / "csv" / "metrics.session-0.csv").write_text(old_log)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(MatxferError, match=r"not empty \(holds logs, notes\.txt\).*--overwrite"):
        train(tiny_data, out, config=tiny_config(epochs=1), progress=False)
    with pytest.raises(ConfigError, match="exclude each other"):
        train(tiny_data, out, config=tiny_config(), progress=False, resume=True, overwrite=True)
    result = train(tiny_data, out, config=tiny_config(epochs=1), progress=False, overwrite=True)
    assert not (out / "notes.txt").exists()
    # The old run's log did not merge into the new curve.
    log = epoch_log(out / "logs" / "csv")
    assert list(log["val_mae"].dropna().index) == [0] and 9.0 not in set(log["val_mae"])
    assert result.metrics["epochs_trained"] == 1 and is_finished(out)


def test_an_existing_run_is_replaced_only_with_overwrite(tiny_data: Path, copied_run: Path) -> None:
    with pytest.raises(MatxferError, match=r"already holds a training run.*--overwrite"):
        train(tiny_data, copied_run, config=tiny_config(epochs=1), progress=False)
    train(tiny_data, copied_run, config=tiny_config(epochs=1), progress=False, overwrite=True)
    metrics = json.loads((copied_run / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1  # the 3-epoch run is gone


def test_done_marker_is_written_last(trained_run: TrainResult, copied_run: Path) -> None:
    run = trained_run.run_dir
    assert is_finished(run)
    done = json.loads((run / DONE_FILE).read_text())
    assert set(done) == {"finished", "matxfer"}
    outputs = ["best.ckpt", "last.ckpt", "metrics.json", "predictions_test.csv", "parity.png"]
    outputs += ["learning_curve.png", "MODEL_CARD.md", "config.yaml", "run_info.json"]
    last_output = max((run / name).stat().st_mtime_ns for name in outputs)
    assert (run / DONE_FILE).stat().st_mtime_ns >= last_output
    # metrics.json alone (outputs half written) is not a finished run.
    (copied_run / DONE_FILE).unlink()
    assert (copied_run / "metrics.json").is_file() and not is_finished(copied_run)


def test_run_records_round_trip_and_name_their_file(tmp_path: Path) -> None:
    rundir.write_metrics(tmp_path, {"test": {"mae": math.nan}})
    assert rundir.read_metrics(tmp_path) == {"test": {"mae": None}}  # strict JSON
    rundir.write_run_info(tmp_path, {"cpu_threads": 2})
    assert rundir.read_run_info(tmp_path) == {"cpu_threads": 2}
    assert rundir.saved_threads(tmp_path) == 2
    rundir.write_transfer_record(tmp_path, {"complete": False})
    assert rundir.read_transfer_record(tmp_path) == {"complete": False}
    rundir.write_config(tmp_path, tiny_config())
    assert rundir.read_config(tmp_path) == tiny_config()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert rundir.read_run_info(empty, required=False) == {}
    with pytest.raises(MatxferError, match=r"metrics\.json is missing"):
        rundir.read_metrics(empty)
    with pytest.raises(MatxferError, match=r"no config\.yaml"):
        rundir.read_config(empty)
    (empty / rundir.RUN_INFO_FILE).write_text("[1, 2]")
    with pytest.raises(MatxferError, match=r"run_info\.json: expected a JSON object"):
        rundir.read_run_info(empty)
    assert rundir.saved_threads(empty) is None


#: Run-layout file names whose literals belong to rundir (and checkpoint, for the
#: checkpoints); bare folder names like ``logs`` are too generic to police.
LAYOUT_NAMES = {
    value
    for name, value in vars(rundir).items()
    if name.isupper() and isinstance(value, str) and name != "LOCK_FILE"
    if "." in value or "/" in value
}
OWNERS = {Path(rundir.__file__), Path(checkpoint.__file__)}


def _string_literals(path: Path) -> set[str]:
    """String constants of a module, docstrings left out (they may name files)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in docstrings
    }


def test_run_file_names_are_spelled_only_in_rundir() -> None:
    assert {"config.yaml", "metrics.json", "transfer.json", "best.ckpt"} <= LAYOUT_NAMES
    package = Path(rundir.__file__).parents[1]
    spelled = {
        f"{path.relative_to(package.parent)}: {literal}"
        for path in package.rglob("*.py")
        if path not in OWNERS
        for literal in _string_literals(path) & LAYOUT_NAMES
    }
    assert not spelled, "use the constants of matxfer.training.rundir instead"
