"""Directory locks: a second process is refused, a killed holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from builders import lock_held_elsewhere

from matxfer.errors import MatxferError
from matxfer.locking import LOCK_FILE, DirectoryLock, LockHeldError, locks_directory


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``tmp_path / "run"``."""
    with lock_held_elsewhere(tmp_path / "run", purpose="test run") as process:
        yield process


def test_second_process_is_refused_with_pid_and_host(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    lock = DirectoryLock(tmp_path / "run", purpose="training run")
    with pytest.raises(LockHeldError) as caught:
        lock.acquire()
    message = str(caught.value)
    assert f"pid {holder.pid}" in message
    assert socket.gethostname() in message
    assert "training run" in message
    assert not lock.held
    holder.communicate("")  # the holder releases on exit
    with lock:
        assert lock.held


def test_lock_of_a_killed_process_is_taken_over(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (tmp_path / "run" / LOCK_FILE).is_file()  # left behind, but no longer locked
    with DirectoryLock(tmp_path / "run") as lock:
        assert lock.holder()["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_reentrant_within_a_process(tmp_path: Path) -> None:
    outer, inner = DirectoryLock(tmp_path), DirectoryLock(tmp_path)
    with outer:
        with inner:
            assert inner.held
        assert not inner.held and outer.held
        assert (tmp_path / LOCK_FILE).is_file()  # still held by the outer holder
        # ... so another process is still refused.
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from matxfer.locking import *; DirectoryLock({str(tmp_path)!r}).acquire()",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert probe.returncode != 0 and "LockHeldError" in probe.stderr
    assert not (tmp_path / LOCK_FILE).exists()


def test_unusable_lock_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / LOCK_FILE).mkdir()  # not a file: cannot be opened for writing
    with pytest.raises(MatxferError, match=r"cannot lock this run .*permissions"):
        DirectoryLock(tmp_path).acquire()


def test_locks_directory_holds_the_lock_during_the_call(tmp_path: Path) -> None:
    seen: list[object] = []

    @locks_directory("out", purpose="demo")
    def work(data: str, out: Path = tmp_path / "default") -> str:
        seen.append(DirectoryLock(out).holder())
        return data

    assert work("x", out=tmp_path / "a") == "x"
    assert work("y") == "y"  # the default applies
    assert [(h["pid"], h["purpose"]) for h in seen] == [(os.getpid(), "demo")] * 2
    assert not (tmp_path / "a" / LOCK_FILE).exists()
    assert not (tmp_path / "default" / LOCK_FILE).exists()


def test_a_directory_the_lock_created_is_removed_when_left_empty(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "typo"):
        pass
    assert not (tmp_path / "typo").exists()
    with DirectoryLock(tmp_path / "run"):
        (tmp_path / "run" / "metrics.json").write_text("{}")
    assert (tmp_path / "run" / "metrics.json").is_file()
    (tmp_path / "kept").mkdir()
    with DirectoryLock(tmp_path / "kept"):
        pass
    assert (tmp_path / "kept").is_dir()  # existed before: not the lock's to remove
