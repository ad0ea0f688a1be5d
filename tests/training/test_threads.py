"""Thread count: idle cores only, environment overrides."""

from __future__ import annotations

import pytest
import torch

from matxfer.training import threads


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch: pytest.MonkeyPatch):
    before = torch.get_num_threads()
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
    from matxfer.training.run import RUN_INFO_FILE, _saved_threads

    assert _saved_threads(tmp_path) is None  # no run_info.json
    (tmp_path / RUN_INFO_FILE).write_text('{"cpu_threads": 2}')
    assert _saved_threads(tmp_path) == 2
    for broken in ('{"cpu_threads": null}', '{"cpu_threads": "2"}', "not json", "[]"):
        (tmp_path / RUN_INFO_FILE).write_text(broken)
        assert _saved_threads(tmp_path) is None
