"""What a study will cost: seconds per job from a per-machine calibration.

An epoch costs a fixed time per batch (Python, kernel launches, the optimizer
step: it dominates small models) plus a time per atom (each atom has 12 bonds
and about 12 × 11 bond pairs in the line graph: it dominates large models), so
a job costs about

    seconds ≈ overhead + epochs · (batches · s_batch + atoms · s_atom) + testing

with ``atoms`` = training structures × mean atoms per structure, and testing a
forward pass (about a third of a training step) over the test set.
:func:`calibrate` measures ``s_batch`` and ``s_atom`` for the job's model, on
this machine, at the job's thread count, from two short trainings on shipped
phonon structures that differ only in batch size (the epochs' own timer gives
the per-epoch cost, the rest of the wall time the overhead), and stores them
in ``$MATXFER_CACHE/study_calibration.json`` keyed by host, CPU, device,
threads and model; plans reuse it and say where it came from. Wall time is
then simulated with the executor's worker count, pre-trainings before their
fine-tunings.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import json
import math
import os
import platform
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matxfer.study.datasets import dataset_facts
from matxfer.study.plan import Job

CALIBRATION_FILE = "study_calibration.json"
#: Data, structures and epochs of the calibration run.
_CALIBRATION_DATA = "demo-ph"
_CALIBRATION_STRUCTURES = 128
_CALIBRATION_EPOCHS = 4
#: The two batch sizes whose epoch times separate the per-batch and per-atom costs.
_CALIBRATION_BATCHES = (4, 32)


@dataclass(frozen=True)
class Calibration:
    """Measured cost of one model on one machine.

    Attributes:
        seconds_per_batch: Training time per batch, whatever its size.
        seconds_per_atom_epoch: Training time per atom per epoch.
        seconds_per_record: Reading and validating, per record read.
        overhead_seconds: Fixed cost of a job.
        startup_seconds: Start of a worker process (imports), once per worker.
        device: ``cpu`` or ``cuda``.
        threads: CPU threads of the measurement.
        measured: When (ISO time), on which host.
        key: The calibration file's key.
    """

    seconds_per_batch: float
    seconds_per_atom_epoch: float
    seconds_per_record: float
    overhead_seconds: float
    startup_seconds: float
    device: str
    threads: int
    measured: str
    key: str

    def job_seconds(self, job: Job) -> float:
        """Estimated wall seconds of ``job``."""
        batch = int(job.settings["config"].get("batch_size", 16))
        train = math.ceil(job.structures / batch) * self.seconds_per_batch
        train += job.structures * job.mean_atoms * self.seconds_per_atom_epoch
        test = math.ceil(job.test_structures / (4 * batch)) * self.seconds_per_batch
        test += job.test_structures * job.mean_atoms * self.seconds_per_atom_epoch
        reading = job.records_read * self.seconds_per_record
        return self.overhead_seconds + reading + job.epochs * train + test / 3


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu part", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibration_key(model: dict[str, Any], threads: int, device: str) -> str:
    """Host, CPU, device, threads and a hash of the model settings."""
    digest = hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:10]
    return f"{socket.gethostname()}|{_cpu_name()}|{device}|threads={threads}|model={digest}"


def _calibration_path() -> Path:
    from matxfer.paths import cache_dir

    return cache_dir() / CALIBRATION_FILE


def load_calibrations() -> dict[str, Any]:
    """The stored calibrations (empty when none or unreadable)."""
    try:
        data = json.loads(_calibration_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def calibrate(
    model: dict[str, Any], threads: int, force: bool = False, measure: bool = True
) -> Calibration | None:
    """Measure (or read the stored) cost of ``model`` at ``threads`` threads.

    A short training of the model on shipped phonon structures gives the time per
    epoch and the fixed cost; stored for later plans.
    With ``measure=False`` only a stored calibration is returned (else ``None``).
    """
    device = _device()
    key = calibration_key(model, threads, device)
    stored = load_calibrations()
    if key in stored and not force:
        try:
            return Calibration(**stored[key], key=key)
        except TypeError:  # written by another version: measure again
            pass
    if not measure:
        return None
    from matxfer.atomic import write_text_atomic

    facts = dataset_facts(_CALIBRATION_DATA, None)
    train = int(_CALIBRATION_STRUCTURES * 0.9)  # the training split
    (small, outside), (large, _) = (_measure(model, threads, b) for b in _CALIBRATION_BATCHES)
    batches = [math.ceil(train / b) for b in _CALIBRATION_BATCHES]
    per_batch = max((small - large) / (batches[0] - batches[1]), 0.0)
    per_atom = max(large - batches[1] * per_batch, 0.0) / (train * facts.mean_atoms)
    per_record = _reading_seconds() / (facts.pool_size + facts.test_size)
    # What the run spent outside its epochs, less testing and reading (counted apart).
    test = math.ceil(facts.test_size / (4 * _CALIBRATION_BATCHES[0])) * per_batch
    test += facts.test_size * facts.mean_atoms * per_atom
    reading = per_record * (facts.pool_size + facts.test_size)
    overhead = max(outside - test / 3 - reading, 0.0)
    entry = {
        "seconds_per_batch": per_batch,
        "seconds_per_atom_epoch": per_atom,
        "seconds_per_record": per_record,
        "overhead_seconds": overhead,
        "startup_seconds": _startup_seconds(),
        "device": device,
        "threads": threads,
        "measured": f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} on "
        f"{socket.gethostname()}",
    }
    stored[key] = entry
    path = _calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(stored, indent=1) + "\n")
    return Calibration(**entry, key=key)


def _startup_seconds() -> float:
    """Seconds a fresh worker process takes to import what a job needs."""
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import matxfer.study.execute, matxfer.training.run"],
        check=False,
        capture_output=True,
    )
    return time.perf_counter() - start


def _reading_seconds() -> float:
    """Seconds to read and validate the calibration data (every job reads its data again;
    graphs are cached by content, so their cost stays in the overhead)."""
    from matxfer.training.config import TrainConfig
    from matxfer.training.inputs import prepare_splits

    start = time.perf_counter()
    prepare_splits(_CALIBRATION_DATA, TrainConfig())
    return time.perf_counter() - start


def _measure(model: dict[str, Any], threads: int, batch_size: int) -> tuple[float, float]:
    """(seconds per training epoch, seconds outside epochs) of a short run of ``model``."""
    import logging

    import pandas as pd

    from matxfer.training.config import resolve_config
    from matxfer.training.outputs import epoch_log
    from matxfer.training.run import train
    from matxfer.training.rundir import CSV_LOG_DIR

    previous = os.environ.get("MATXFER_THREADS")
    os.environ["MATXFER_THREADS"] = str(threads)
    chatter = logging.getLogger("lightning.pytorch")
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        with tempfile.TemporaryDirectory(prefix="matxfer-calibration-") as folder:
            config = resolve_config(
                "fast",
                {"model": model, "epochs": _CALIBRATION_EPOCHS, "batch_size": batch_size},
            )
            start = time.perf_counter()
            result = train(
                _CALIBRATION_DATA, Path(folder) / "run", config=config,
                size=_CALIBRATION_STRUCTURES, progress=False,
            )  # fmt: skip
            total = time.perf_counter() - start
            log = epoch_log(result.run_dir / CSV_LOG_DIR)
    finally:
        chatter.setLevel(level)
        if previous is None:
            os.environ.pop("MATXFER_THREADS", None)
        else:
            os.environ["MATXFER_THREADS"] = previous
    seconds = pd.to_numeric(log.get("epoch_seconds"), errors="coerce").dropna().tolist()
    if not seconds:  # no epoch timer in the log: spread the whole run over its epochs
        return total / _CALIBRATION_EPOCHS, 0.0
    per_epoch = float(pd.Series(seconds[1:] or seconds).median())  # epoch 0 warms up
    return per_epoch, max(total - sum(seconds), 0.0)


@dataclass
class Estimate:
    """A study's estimated cost.

    Attributes:
        job_seconds: Job id → estimated seconds.
        wall_seconds: Simulated wall time with the given workers, their start included.
        core_hours: Σ seconds × threads / 3600 (CPU jobs).
        gpu_hours: Σ seconds × GPUs per job / 3600 (GPU jobs).
        calibrations: Model key → the calibration used.
    """

    job_seconds: dict[str, float]
    wall_seconds: float
    core_hours: float
    gpu_hours: float
    calibrations: dict[str, Calibration]


def simulate_wall(jobs: Sequence[Job], seconds: dict[str, float], workers: int) -> float:
    """Wall time of list scheduling in plan order, fine-tunings after their pre-training."""
    free = [0.0] * max(1, workers)
    finish: dict[str, float] = {}
    for job in jobs:  # pre-trainings come first in a plan
        worker_free = heapq.heappop(free)
        ready = finish.get(job.depends_on, 0.0) if job.depends_on else 0.0
        end = max(worker_free, ready) + seconds[job.id]
        finish[job.id] = end
        heapq.heappush(free, end)
    return max(finish.values(), default=0.0)


def estimate(
    jobs: Sequence[Job],
    workers: int,
    threads: int,
    skip: set[str] | None = None,
    measure: bool = True,
) -> Estimate | None:
    """Estimated cost of the ``jobs`` (in plan order) not in ``skip``, calibrating models as needed
    (``measure=False``: only from stored calibrations; ``None`` when one is missing)."""
    skip = skip or set()
    calibrations: dict[str, Calibration] = {}
    seconds: dict[str, float] = {}
    for job in jobs:
        if job.id in skip:
            seconds[job.id] = 0.0
            continue
        model = dict(job.settings["config"]["model"])
        key = json.dumps(model, sort_keys=True)
        if key not in calibrations:
            found = calibrate(model, threads, measure=measure)
            if found is None:
                return None
            calibrations[key] = found
        seconds[job.id] = calibrations[key].job_seconds(job)
    gpu = any(c.device == "cuda" for c in calibrations.values())
    startup = [c.startup_seconds for c in calibrations.values()]
    total = sum(seconds.values())
    return Estimate(
        seconds,
        simulate_wall(jobs, seconds, workers) + max(startup, default=0.0),
        0.0 if gpu else total * threads / 3600,
        total / 3600 if gpu else 0.0,
        calibrations,
    )
