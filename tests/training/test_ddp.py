"""Data-parallel (DDP) training: per-rank shuffling, rank 0 owning the run, 2 processes = 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from training_helpers import synthetic_structures, tiny_config, write_alignn_json

from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import LOCK_FILE, DirectoryLock
from matxfer.training import TrainResult, save_config, train
from matxfer.training.datamodule import GraphDataModule
from matxfer.training.loaders import EpochShuffleSampler
from matxfer.training.outputs import epoch_log
from matxfer.training.rundir import check_run_dir, check_start

ROOT = Path(__file__).resolve().parents[2]
#: What Lightning's launcher puts in the environment of rank 1 of a 2-process job.
RANK_1 = {"WORLD_SIZE": "2", "LOCAL_RANK": "1", "NODE_RANK": "0"}


def _epoch(n: int, replicas: int, rank: int, epoch: int, seed: int = 0) -> list[int]:
    sampler = EpochShuffleSampler(n, seed, replicas, rank)
    sampler.set_epoch(epoch)
    order = list(sampler)
    assert len(order) == len(sampler)
    return order


@pytest.mark.parametrize(("n", "replicas"), [(32, 2), (29, 2), (30, 3), (31, 3)])
def test_every_rank_is_shuffled_anew_each_epoch_and_ranks_cover_the_set(
    n: int, replicas: int
) -> None:
    for epoch in (0, 1):
        orders = [_epoch(n, replicas, rank, epoch) for rank in range(replicas)]
        assert len({len(order) for order in orders}) == 1  # same number of steps everywhere
        assert set().union(*orders) == set(range(n))
        assert sum(map(len, orders)) - n < replicas  # padding only to even out the ranks
    for rank in range(replicas):
        assert _epoch(n, replicas, rank, 0) != _epoch(n, replicas, rank, 1)


def test_ranks_together_take_the_single_process_batches() -> None:
    n, replicas, batch = 36, 3, 6
    for epoch in (0, 1, 5):
        single = _epoch(n, 1, 0, epoch)
        shares = [_epoch(n, replicas, rank, epoch) for rank in range(replicas)]
        per_rank = batch // replicas
        for step in range(n // batch):
            together = {i for s in shares for i in s[step * per_rank : (step + 1) * per_rank]}
            assert together == set(single[step * batch : (step + 1) * batch])


def test_each_rank_loads_its_share_in_batches_of_batch_size_over_devices() -> None:
    graphs = list(range(10))  # the loader only indexes them
    data = GraphDataModule(graphs, graphs, batch_size=8, seed=3)  # type: ignore[arg-type]
    data.trainer = SimpleNamespace(world_size=2, global_rank=1)  # type: ignore[assignment]
    loader = data.train_dataloader()
    assert loader.batch_size == 4
    assert list(loader.sampler) == _epoch(10, 2, 1, 0, seed=3)
    assert data.val_dataloader().batch_size == 8  # every rank validates the whole split


def test_batch_size_is_global_and_must_divide_among_devices() -> None:
    assert tiny_config(devices=2).batch_size == 8
    with pytest.raises(ConfigError, match=r"batch_size 8 .* multiple of devices 3"):
        tiny_config(devices=3)
    with pytest.raises(ConfigError, match="strategy"):
        tiny_config(strategy="fsdp")


def test_rank_1_neither_locks_nor_refuses_the_directory_rank_0_prepared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.yaml").write_text("written by rank 0\n")
    with pytest.raises(MatxferError, match="not empty"):
        check_start(tmp_path, resume=False)
    for name, value in RANK_1.items():
        monkeypatch.setenv(name, value)
    check_start(tmp_path, resume=False)  # rank 0 checked it before starting this rank
    with DirectoryLock(tmp_path):
        assert not (tmp_path / LOCK_FILE).exists()  # rank 0 holds it for the job
    assert (tmp_path / "config.yaml").exists()


def test_a_stray_local_rank_outside_a_job_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with DirectoryLock(tmp_path):
        assert (tmp_path / LOCK_FILE).exists()


def test_resume_may_change_devices_but_not_what_is_computed(
    trained_run: TrainResult, tmp_path: Path
) -> None:
    run = shutil.copytree(trained_run.run_dir, tmp_path / "run")
    config = trained_run.config
    check_run_dir(run, config.model_copy(update={"devices": 2, "strategy": "ddp"}), resume=True)
    with pytest.raises(ConfigError, match=r"changed: \['lr'\]"):
        check_run_dir(run, config.model_copy(update={"lr": 1.0}), resume=True)


@pytest.fixture(scope="module")
def even_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 crystals: 32 train (even, so 2 ranks need no padding), 4 val, 4 test."""
    return write_alignn_json(
        tmp_path_factory.mktemp("ddp") / "even.json", synthetic_structures(40, seed=1)
    )


@pytest.mark.parametrize(
    "ema_decay", [None, pytest.param(0.9, marks=pytest.mark.slow)], ids=["trained", "averaged"]
)
def test_two_cpu_processes_compute_what_one_does(
    even_data: Path, tmp_path: Path, ema_decay: float | None
) -> None:
    """3 shuffled epochs of 4 steps (batch 8 = 2 ranks × 4), LayerNorm: DDP averages
    the two half-batch gradients into the one-process gradient of the same global
    batch, so every number agrees up to float summation order (measured: ~1e-7).
    With ``ema_decay`` every process averages the same weights: still the same numbers."""
    # The fast profile's LayerNorm: no per-rank batch statistics.
    config = tiny_config(ema_decay=ema_decay)
    single = train(even_data, tmp_path / "one", config=config, progress=False)
    assert single.metrics["best_epoch"] is not None
    config_file = tmp_path / "config.yaml"
    save_config(config, config_file)
    out = tmp_path / "two"
    env = {**os.environ, "MATXFER_THREADS": "2"}  # one thread per process
    command = ["train", even_data, "--out", out, "--config", config_file, "--devices", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "matxfer.cli", *map(str, command), "--no-progress"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MEMBER: 2/2" in done.stderr  # two processes did train
    assert done.stdout.count("run saved in") == 1  # rank 1 ended after training
    assert json.loads((out / "run_info.json").read_text())["counts"]["train"] == 32
    assert (out / "done.json").is_file() and not (out / LOCK_FILE).exists()
    two = json.loads((out / "metrics.json").read_text())
    assert two["best_epoch"] == single.metrics["best_epoch"]
    for split in ("train", "val", "test"):
        for key, value in single.metrics[split]["target"]["original"].items():
            assert two[split]["target"]["original"][key] == pytest.approx(value, rel=1e-5)
    curves = [epoch_log(run / "logs" / "csv") for run in (tmp_path / "one", out)]
    columns = ["train_mae", "val_mae"]
    pd.testing.assert_frame_equal(curves[0][columns], curves[1][columns], rtol=1e-5)


#: Rank 1 alone sees infinite targets from epoch 2 on (a script: Lightning re-runs it).
DIVERGING_ON_RANK_1 = """
import math, sys
import lightning.pytorch as pl
from matxfer.training import load_config, train

class InfiniteTargetsOnRank1(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.global_rank == 1 and trainer.current_epoch >= 2:
            batch.y.fill_(math.inf)

result = train(sys.argv[1], sys.argv[2], config=load_config(sys.argv[3]), progress=False,
               callbacks=[InfiniteTargetsOnRank1()])
print("stopped_by", result.metrics["stopped_by"], result.metrics["epochs_trained"])
"""


def test_a_loss_diverging_on_one_rank_stops_every_rank(even_data: Path, tmp_path: Path) -> None:
    """Rank 1 alone skipping its backward pass would leave rank 0 waiting forever."""
    config_file = tmp_path / "config.yaml"
    save_config(tiny_config(epochs=6, devices=2), config_file)
    script = tmp_path / "diverge.py"
    script.write_text(DIVERGING_ON_RANK_1)
    done = subprocess.run(
        [sys.executable, script, even_data, tmp_path / "run", config_file],
        cwd=ROOT,
        env={**os.environ, "MATXFER_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopped_by diverged 3" in done.stdout  # stopped in the first batch of epoch 2
