"""Thread count: idle cores only, environment overrides."""

from __future__ import annotations

import pytest
import torch

from matxfer.training import threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch, tmp_path):
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "CGROUP_ROOT", tmp_path / "no-cgroup")  # no quota
    monkeypatch.delenv("MATXFER_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_busy_cores_counts_cores_above_half_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter(
        [
            {0: (0, 100), 1: (0, 100), 2: (0, 100)},
            {0: (90, 200), 1: (10, 200), 2: (60, 200)},
        ]
    )
    monkeypatch.setattr(threads, "_cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda seconds: None)
    assert threads.busy_cores([0, 1, 2]) == 2
    # Cores outside the allowed set are not counted.
    samples = iter([{0: (0, 100), 2: (0, 100)}, {0: (90, 200), 2: (90, 200)}])
    assert threads.busy_cores([1, 2]) == 1


def test_busy_cores_unknown_without_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_cpu_times", dict)
    assert threads.busy_cores([0, 1]) == 0


def test_real_proc_stat_parses() -> None:
    assert (
        0
        <= threads.busy_cores(threads.allowed_cores(), window=0.05)
        <= len(threads.allowed_cores())
    )


def test_busy_cores_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "allowed_cores", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 3)
    assert threads.use_idle_cores() == 1
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 4)
    assert threads.use_idle_cores() == 1  # never fewer than one
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 1)
    assert threads.use_idle_cores() == 3


@pytest.mark.parametrize("name", ["MATXFER_THREADS", "OMP_NUM_THREADS"])
def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(threads, "busy_cores", lambda cores: pytest.fail("should not sample"))
    monkeypatch.setenv(name, "1")
    assert threads.use_idle_cores() == 1


def test_invalid_override_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "allowed_cores", lambda: [0])
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 0)
    monkeypatch.setenv("MATXFER_THREADS", "many")
    assert threads.use_idle_cores() == 1


def test_preferred_count_is_used_unless_the_environment_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(threads, "busy_cores", lambda cores: pytest.fail("should not sample"))
    assert threads.use_idle_cores(preferred=1) == 1
    monkeypatch.setenv("MATXFER_THREADS", "1")
    assert threads.use_idle_cores(preferred=3) == 1


def test_a_resumed_run_reads_its_thread_count(tmp_path) -> None:
    from matxfer.training.rundir import RUN_INFO_FILE, saved_threads

    assert saved_threads(tmp_path) is None  # no run_info.json
    (tmp_path / RUN_INFO_FILE).write_text('{"cpu_threads": 2}')
    assert saved_threads(tmp_path) == 2
    for broken in ('{"cpu_threads": null}', '{"cpu_threads": "2"}', "not json", "[]"):
        (tmp_path / RUN_INFO_FILE).write_text(broken)
        assert saved_threads(tmp_path) is None


def fake_cgroup(tmp_path, files: dict[str, str], own: str = "0::/\n1:cpu,cpuacct:/\n"):
    """A fake cgroup filesystem and /proc/self/cgroup; returns their paths."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    own_file = tmp_path / "self_cgroup"
    own_file.write_text(own)
    return root, own_file


@pytest.mark.parametrize(
    ("files", "own", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, "0::/\n", 2),  # v2: 1.5 CPUs -> 2 threads
        ({"cpu.max": "max 100000\n"}, "0::/\n", None),  # v2: unlimited
        # v2: the process's own cgroup and its ancestors; the tightest quota applies
        (
            {"cpu.max": "400000 100000", "job/cpu.max": "max 100000", "job/a/cpu.max": "1 10"},
            "0::/job/a\n",
            1,
        ),
        # v1, "cpu,cpuacct" mount
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "300000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            "1:cpu,cpuacct:/\n",
            3,
        ),
        # v1, unlimited (-1), separate "cpu" mount
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "1:cpu:/\n", None),
        ({}, "", None),  # no cgroup files at all
    ],
)
def test_cgroup_cpu_limit(tmp_path, files: dict[str, str], own: str, expected) -> None:
    root, own_file = fake_cgroup(tmp_path, files, own)
    assert threads.cgroup_cpu_limit(root, own_file) == expected


def test_cgroup_quota_caps_the_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "allowed_cores", lambda: list(range(16)))
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 3)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2)
    assert threads.use_idle_cores() == 2  # 16 cores visible, 2 CPUs' worth of quota
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: pytest.fail("no need to sample"))
    assert threads.use_idle_cores() == 1
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(threads, "busy_cores", lambda cores: 3)
    assert threads.use_idle_cores() == 13


def test_cpu_accelerator_counts_threads_even_with_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from matxfer.training.config import resolve_config
    from matxfer.training.run import _trains_on_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _trains_on_cpu(resolve_config("fast", {"accelerator": "cpu"}))
    assert not _trains_on_cpu(resolve_config("fast", {"accelerator": "auto"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _trains_on_cpu(resolve_config("fast", {"accelerator": "auto"}))
