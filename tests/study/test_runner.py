"""Running studies: results store, kill -9 and rerun, one driver per directory, failures,
retry, status, and the Ray executor on a local 2-CPU cluster.

Jobs are tiny (a 1 + 1 × 8 model, tens of structures, 2 epochs) so that the whole
module stays within a few minutes; what is tested is the bookkeeping, not accuracy.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from builders import lock_held_elsewhere
from tiny_data import subset
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.data.registry import DEMO_DIR
from matxfer.errors import ConfigError
from matxfer.locking import DirectoryLock, LockHeldError
from matxfer.study.executors import run_study
from matxfer.study.jobs import plan_study
from matxfer.study.plan import StudyPlan
from matxfer.study.spec import load_spec
from matxfer.study.store import COLUMNS, read_results
from matxfer.training.outputs import epoch_log
from matxfer.training.run import trained_seconds

#: One PT, one scratch, one FT waiting for the PT.
TINY = """\
name: tiny
profile: fast
config:
  model: {alignn_layers: 1, gcn_layers: 1, hidden_features: 8, embedding_features: 8,
          edge_input_features: 8, triplet_input_features: 8}
seeds: [0]
pretrain:
  - {name: fe, data: FE_DIR, sizes: PT_SIZE, seeds: [1], epochs: PT_EPOCHS}
finetune:
  targets: [PH_DIR]
  sizes: [20]
  epochs: 2
"""
SpecMaker = Callable[..., Path]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return (
        subset(DEMO_DIR / "fe", root / "fe", 150, 0),
        subset(DEMO_DIR / "ph", root / "ph", 60, 24),
    )


def _write_spec(folder: Path, data: tuple[Path, Path], pt_size: int, pt_epochs: int) -> Path:
    path = folder / "tiny.yaml"
    text = TINY.replace("PT_SIZE", str(pt_size)).replace("PT_EPOCHS", str(pt_epochs))
    path.write_text(text.replace("FE_DIR", str(data[0])).replace("PH_DIR", str(data[1])))
    return path


@pytest.fixture
def tiny_spec(tmp_path: Path, tiny_data: tuple[Path, Path]) -> SpecMaker:
    def make(pt_size: int = 40, pt_epochs: int = 2) -> Path:
        return _write_spec(tmp_path, tiny_data, pt_size, pt_epochs)

    return make


@pytest.fixture(scope="module")
def local_study(
    tmp_path_factory: pytest.TempPathFactory, tiny_data: tuple[Path, Path]
) -> tuple[StudyPlan, Path, list[str]]:
    """The tiny study run once locally with 2 workers (shared by several tests)."""
    folder = tmp_path_factory.mktemp("local")
    plan = plan_study(load_spec(_write_spec(folder, tiny_data, 40, 2)))
    lines: list[str] = []
    summary = run_study(plan, folder / "study", "local", workers=2, echo=lines.append)
    assert sorted(summary.done) == sorted(j.id for j in plan.jobs) and not summary.failed
    return plan, folder / "study", lines


def test_local_run_stores_every_job_once_and_reruns_skip_them(
    local_study: tuple[StudyPlan, Path, list[str]],
) -> None:
    plan, out, lines = local_study
    frame = read_results(out)
    assert list(frame.columns) == list(COLUMNS)
    assert sorted(frame["job_id"]) == sorted(j.id for j in plan.jobs)
    assert set(frame["status"]) == {"done"}
    ft = frame[frame["kind"] == "finetune"].iloc[0]
    pt = frame[frame["kind"] == "pretrain"].iloc[0]
    assert ft["pt_job_id"] == pt["job_id"] and ft["source"] == "fe" and ft["size"] == 20
    assert ft["n_test"] == 24 and -10 < ft["test_r2"] < 1 and ft["test_mae"] > 0
    assert ft["test_mae_norm"] > 0 and ft["val_mae"] > 0 and ft["epochs_trained"] == 2
    assert (Path(ft["run_dir"]) / "best.ckpt").is_file()
    assert json.loads(ft["settings"])["strategy"] == "all"
    assert any(line.startswith("done   finetune") for line in lines)
    again = run_study(plan, out, "local", workers=1, echo=lines.append)
    assert again.skipped == 3 and not again.done
    assert len(read_results(out)) == 3
    status = CliRunner().invoke(app, ["study", "status", str(out)])
    assert status.exit_code == 0, status.output
    assert "all 3 jobs stored" in status.output and "no `study run` is active" in status.output


def test_a_bad_config_value_fails_at_plan(tiny_spec: SpecMaker) -> None:
    spec = tiny_spec()
    spec.write_text(spec.read_text().replace("seeds: [1],", "seeds: [1], config: {lr: -1},"))
    with pytest.raises(ConfigError, match=r"tiny.yaml:\d+: pretrain\[0\]: .*lr=-1"):
        plan_study(load_spec(spec))  # a bad value fails at plan, not at run


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"executor": "dask"}, "unknown executor 'dask'"),
        ({"workers": 0}, "--workers 0: give at least 1"),
        ({"gpus_per_job": -1.0}, "--gpus-per-job -1: give 0 or more"),
        ({"max_hours": -1.0}, "--max-hours -1: give a positive number"),
    ],
)
def test_bad_run_options_are_refused_before_anything_starts(
    tmp_path: Path, tiny_spec: SpecMaker, options: dict, message: str
) -> None:
    plan = plan_study(load_spec(tiny_spec()))
    with pytest.raises(ConfigError, match=message):
        run_study(plan, tmp_path / "study", echo=lambda _: None, **options)
    assert not (tmp_path / "study").exists()


def test_failures_are_recorded_the_others_go_on_and_retry_reruns_them(
    tmp_path: Path, tiny_spec: SpecMaker
) -> None:
    spec = tiny_spec()
    plan = plan_study(load_spec(spec))
    pt = next(j for j in plan.jobs if j.kind == "pretrain")
    out = tmp_path / "study"
    # A file where the PT's run directory should be: the job fails when it runs.
    blocker = pt.run_dir(out)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    runner = CliRunner()
    result = runner.invoke(app, ["study", "run", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "retry the failed ones with" in result.output
    frame = read_results(out).set_index("job_id")
    assert frame.loc[pt.id, "status"] == "failed" and "\n" not in frame.loc[pt.id, "error"]
    ft = frame[frame["kind"] == "finetune"].iloc[0]
    assert ft["status"] == "failed" and f"pre-training job {pt.id} failed" in ft["error"]
    assert (frame[frame["kind"] == "scratch"]["status"] == "done").all()  # went on
    status = runner.invoke(app, ["study", "status", str(out)])
    assert "failed pretrain" in status.output and "failed finetune" in status.output
    blocker.unlink()
    result = runner.invoke(app, ["study", "retry", str(out), "--failed"])
    assert result.exit_code == 0, result.output
    assert "2 failed job(s) to run again" in result.output
    frame = read_results(out)
    assert len(frame) == 3 and set(frame["status"]) == {"done"}


def test_second_driver_on_the_same_directory_is_refused(
    tmp_path: Path, tiny_spec: SpecMaker
) -> None:
    plan = plan_study(load_spec(tiny_spec()))
    out = tmp_path / "study"
    with lock_held_elsewhere(out, purpose="study") as holder:
        with pytest.raises(LockHeldError, match=f"pid {holder.pid} on host"):
            run_study(plan, out, echo=lambda _: None)
        result = CliRunner().invoke(app, ["study", "status", str(tmp_path / "nothing")])
        assert result.exit_code != 0 and "not a study directory" in str(result.exception)
        holder.kill()
        holder.wait()
    lock = DirectoryLock(out, purpose="study")
    assert lock.holder() is not None  # the killed holder's file is left behind ...
    lock.acquire()  # ... and taken over: it is stale
    lock.release()


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    end = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_kill_9_in_the_middle_of_a_pretraining_then_rerun(
    tmp_path: Path, tiny_spec: SpecMaker
) -> None:
    spec = tiny_spec(pt_size=150, pt_epochs=6)
    plan = plan_study(load_spec(spec))
    pt = next(j for j in plan.jobs if j.kind == "pretrain")
    out = tmp_path / "study"
    command = [sys.executable, "-m", "matxfer", "study", "run", str(spec), "--out", str(out)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(pt.run_dir(out) / "last.ckpt", driver)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(0.5)  # the worker dies with its driver (PR_SET_PDEATHSIG)
    assert not (out / "results" / f"{pt.id}.parquet").exists()
    checkpoint = torch.load(pt.run_dir(out) / "last.ckpt", weights_only=False)
    assert checkpoint["epoch"] + 1 < 6  # killed in the middle of the pre-training
    killed_attempt = trained_seconds(pt.run_dir(out) / "last.ckpt")
    assert killed_attempt > 0
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    frame = read_results(out)
    assert sorted(frame["job_id"]) == sorted(j.id for j in plan.jobs)  # each exactly once
    assert set(frame["status"]) == {"done"}
    assert frame.set_index("job_id").loc[pt.id, "epochs_trained"] == 6
    # Its cost counts both attempts: the killed one's epochs and the resumed run.
    assert frame.set_index("job_id").loc[pt.id, "seconds"] > killed_attempt
    log = epoch_log(pt.run_dir(out) / "logs" / "csv")  # the killed session's log too
    trained = log.dropna(subset=["train_mae"])["epoch"].astype(int).tolist()
    assert trained == list(range(6))  # resumed: every epoch trained and logged, once


def test_ray_executor_gives_the_local_results(
    tmp_path: Path, local_study: tuple[StudyPlan, Path, list[str]]
) -> None:
    pytest.importorskip("ray")
    import ray

    plan, local, _ = local_study
    remote = tmp_path / "ray"
    try:
        summary = run_study(plan, remote, "ray", workers=2, echo=lambda _: None)
    finally:
        ray.shutdown()
    assert len(summary.done) == 3 and not summary.failed
    a = read_results(local).set_index("job_id").sort_index()
    b = read_results(remote).set_index("job_id").sort_index()
    assert list(a.index) == list(b.index)  # the same jobs, by id
    # Two jobs at a time, each on cores / 2 threads, in both executors: the same numbers.
    assert (a["threads"] == b["threads"]).all()
    assert (a["test_mae"] - b["test_mae"]).abs().max() < 1e-6
