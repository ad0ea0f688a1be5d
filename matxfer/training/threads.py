"""How many CPU threads training uses: the idle cores this process may run on.

Torch runs each operator as an OpenMP parallel region over all its threads and
waits for the slowest one. When another process keeps one of those cores busy,
the thread there gets the core only every few milliseconds, so every region
stalls: measured on 2 cores with one busy, a 4 + 4 × 256 ALIGNN step took
15-27 s with 2 threads and 1.0 s with 1. Counting busy cores before training
and leaving them out avoids that; ``OMP_NUM_THREADS`` or ``MATXFER_THREADS``
(a positive integer) override the count. Float sums, and so the last digits
of the metrics, depend on the thread count: runs are bitwise reproducible for
the same seed and thread count (set ``MATXFER_THREADS`` to fix it; a resumed
run keeps the count it started with).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch

#: A core busier than this over the sampling window counts as taken.
BUSY_FRACTION = 0.5


def allowed_cores() -> list[int]:
    """The CPU numbers this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _cpu_times() -> dict[int, tuple[int, int]]:
    """Per-core (busy, total) jiffies from ``/proc/stat``; empty where it is not readable."""
    times: dict[int, tuple[int, int]] = {}
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return times
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        times[int(name[3:])] = (sum(values) - idle, sum(values))
    return times


def busy_cores(cores: Iterable[int], window: float = 0.2) -> int:
    """How many of ``cores`` other processes kept busy over ``window`` seconds (0 if unknown)."""
    cores = list(cores)
    before = _cpu_times()
    if not before:
        return 0
    time.sleep(window)
    after = _cpu_times()
    busy = 0
    for core in cores:
        if core not in before or core not in after:
            continue
        worked = after[core][0] - before[core][0]
        elapsed = after[core][1] - before[core][1]
        busy += elapsed > 0 and worked / elapsed > BUSY_FRACTION
    return busy


def _thread_override() -> int | None:
    for name in ("MATXFER_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def use_idle_cores(preferred: int | None = None) -> int:
    """Set torch's thread count to the idle allowed cores (at least 1); returns it.

    Args:
        preferred: Use this count instead of sampling (e.g. a resumed run's), unless
            the environment overrides it.
    """
    threads = _thread_override() or preferred
    if threads is None:
        cores = allowed_cores()
        threads = len(cores) - busy_cores(cores) if len(cores) > 1 else 1
        threads = max(1, threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()
