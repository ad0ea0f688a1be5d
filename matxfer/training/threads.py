"""How many CPU threads training uses: the idle cores this process may run on.

Torch runs each operator as an OpenMP parallel region over all its threads and
waits for the slowest one. When another process keeps one of those cores busy,
the thread there gets the core only every few milliseconds, so every region
stalls: measured on 2 cores with one busy, a 4 + 4 × 256 ALIGNN step took
15-27 s with 2 threads and 1.0 s with 1. Counting busy cores before training
and leaving them out avoids that. A container's CPU quota (cgroup ``cpu.max``,
or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in cgroup v1) caps the count
the same way: 16 visible cores with a quota of 2 CPUs get 2 threads, not 16
threads throttled to 2 CPUs' worth of time. ``OMP_NUM_THREADS`` or ``MATXFER_THREADS``
(a positive integer) override the count. Float sums, and so the last digits
of the metrics, depend on the thread count: runs are bitwise reproducible for
the same seed and thread count (set ``MATXFER_THREADS`` to fix it; a resumed
run keeps the count it started with).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable
from pathlib import Path

import torch

#: A core busier than this over the sampling window counts as taken.
BUSY_FRACTION = 0.5
#: Where the cgroup filesystem is mounted, and where a process reads its own cgroups.
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
#: Directory names of the cgroup v1 hierarchy holding the ``cpu`` controller.
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def allowed_cores() -> list[int]:
    """The CPU numbers this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _own_cgroups(self_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup v2 path and v1 ``cpu`` path (``"/"`` when unknown)."""
    v2 = v1 = "/"
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        if hierarchy == "0" and not controllers:
            v2 = path or "/"
        elif "cpu" in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _ancestors(folder: Path, path: str) -> list[Path]:
    """``folder`` joined with ``path`` and with each of its parents, down to ``folder``."""
    inner = folder / path.strip("/")
    return [inner, *(p for p in inner.parents if p.is_relative_to(folder))]


def _quota(quota: str, period: str) -> float | None:
    """CPUs a quota/period pair allows (``None``: unlimited or unreadable)."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None  # "max": unlimited
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def cgroup_cpu_limit(root: Path | None = None, self_cgroup: Path | None = None) -> int | None:
    """CPUs the cgroup CPU quota lets this process use (rounded up), or ``None`` if unlimited.

    Reads cgroup v2 ``cpu.max`` (``"QUOTA PERIOD"`` or ``"max PERIOD"``) and v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: unlimited) of the
    process's cgroup and its ancestors; the tightest quota applies.

    Args:
        root: The cgroup filesystem (default: :data:`CGROUP_ROOT`).
        self_cgroup: The file listing this process's cgroups (default: :data:`SELF_CGROUP`).
    """
    root = root or CGROUP_ROOT
    v2, v1 = _own_cgroups(self_cgroup or SELF_CGROUP)
    limits = []
    for folder in _ancestors(root, v2):
        try:
            limits.append(_quota(*folder.joinpath("cpu.max").read_text().split()[:2]))
        except (OSError, TypeError):
            continue
    for mount in _V1_CPU_MOUNTS:
        for folder in _ancestors(root / mount, v1):
            try:
                quota = folder.joinpath("cpu.cfs_quota_us").read_text().strip()
                period = folder.joinpath("cpu.cfs_period_us").read_text().strip()
            except OSError:
                continue
            limits.append(_quota(quota, period))
    known = [limit for limit in limits if limit is not None]
    return max(1, math.ceil(min(known))) if known else None


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


def usable_cores() -> int:
    """Cores this process may use: its affinity, within the cgroup CPU quota (at least 1)."""
    cores = len(allowed_cores())
    return max(1, min(cores, cgroup_cpu_limit() or cores))


def use_idle_cores(preferred: int | None = None) -> int:
    """Set torch's thread count to the idle allowed cores, within the cgroup CPU quota
    (at least 1); returns it.

    Args:
        preferred: Use this count instead of sampling (e.g. a resumed run's), unless
            the environment overrides it.
    """
    threads = _thread_override() or preferred
    if threads is None:
        cores = allowed_cores()
        usable = usable_cores()
        threads = min(usable, len(cores) - busy_cores(cores)) if usable > 1 else 1
        threads = max(1, threads)
    torch.set_num_threads(threads)
    return torch.get_num_threads()
