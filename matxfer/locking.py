"""Exclusive locks on directories (a run's ``--out``, a study's results folder).

A lock is a file inside the directory holding the owner's pid, host and start
time, *and* an ``fcntl.flock`` held on it for the owner's lifetime. The kernel
drops the flock when the owner dies (``kill -9`` included), so a lock left
behind by a dead process is recognised as stale and taken over; the recorded
pid and host only serve the message naming who holds a live lock. Where flock
is not available (some network filesystems), a lock whose pid no longer
exists on this host counts as stale.

Locks are re-entrant within a process: fine-tuning holds its run directory's
lock while :func:`matxfer.training.train` takes it again (a second ``flock``
on a new descriptor would refuse its own process). In a multi-process (DDP)
training job, rank 0 holds the lock for all its ranks: the other ranks, which
re-run the same command (see :mod:`matxfer.ranks`), do not take it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import functools
import inspect
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

from matxfer.errors import MatxferError
from matxfer.ranks import is_secondary_rank

#: Default name of the lock file inside the locked directory.
LOCK_FILE = ".matxfer.lock"


class LockHeldError(MatxferError):
    """Another live process holds the lock."""


#: Locks this process holds: resolved lock file -> [descriptor, depth, created the folder].
_HELD: dict[Path, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:  # 0 and negatives address process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class DirectoryLock:
    """An exclusive, crash-safe lock on a directory.

    Args:
        directory: The directory to lock (created if missing).
        purpose: What the lock protects, for messages (default: ``"run"``).
        name: Lock file name inside ``directory`` (default: :data:`LOCK_FILE`).

    Example::

        with DirectoryLock(out, purpose="training run"):
            ...  # no other matxfer process writes into ``out`` meanwhile
    """

    def __init__(self, directory: str | Path, purpose: str = "run", name: str = LOCK_FILE) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.purpose = purpose
        self._key: Path | None = None

    def holder(self) -> dict[str, object] | None:
        """What the lock file says about its owner (``None`` when absent or unreadable)."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _refuse(self) -> LockHeldError:
        info = self.holder() or {}
        who = f"pid {info.get('pid', '?')} on host {info.get('host', '?')}"
        since = f", since {info['started']}" if "started" in info else ""
        return LockHeldError(
            f"{self.directory}: another matxfer process ({who}{since}) is using this "
            f"{self.purpose}; wait for it to finish, stop it, or choose another directory"
        )

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock.

        Args:
            wait: Seconds to wait for a live holder to release it (default: ``0``,
                refuse at once).

        Raises:
            LockHeldError: A live process holds it (named in the message).
        """
        deadline = time.monotonic() + wait
        while True:
            try:
                self._acquire_now()
                return
            except LockHeldError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def _acquire_now(self) -> None:
        if self._key is not None or is_secondary_rank():  # rank 0 of the job holds it
            return
        try:
            created = not self.directory.exists()
            self.directory.mkdir(parents=True, exist_ok=True)
            key = self.path.resolve()
            with _HELD_GUARD:
                if key in _HELD:  # this process holds it already (re-entry)
                    _HELD[key][1] += 1
                    self._key = key
                    return
                fd = self._take()
                _HELD[key] = [fd, 1, created]
                self._key = key
        except OSError as error:  # e.g. a read-only folder, or another user's lock file
            raise MatxferError(
                f"{self.path}: cannot lock this {self.purpose} ({error.strerror or error}); "
                "check the folder's permissions or choose another directory"
            ) from None

    def _take(self) -> int:
        """Lock the file whose name is at :attr:`path` and write this process into it."""
        for _ in range(100):
            fd = self._open_locked()
            try:  # the file we locked may have been removed by its releasing owner meanwhile
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        else:
            raise self._refuse()
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "purpose": self.purpose,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        return fd

    def _open_locked(self) -> int:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self._refuse() from None
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
                raise
            # No flock on this filesystem: fall back on the recorded pid.
            info = self.holder() or {}
            pid = info.get("pid")
            if (
                isinstance(pid, int)
                and info.get("host") == socket.gethostname()
                and pid != os.getpid()
                and _pid_alive(pid)
            ):
                raise self._refuse() from None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    def release(self) -> None:
        """Give the lock up (the file is removed; a no-op when not held).

        A re-entered lock is given up when its outermost holder releases it. A
        directory the lock created is removed again when nothing was put in it
        (e.g. ``--resume`` of a mistyped ``--out``).
        """
        if self._key is None:
            return
        with _HELD_GUARD:
            entry = _HELD[self._key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[self._key]
                # Unlinked while still locked: a newcomer that opened the old file
                # sees it is no longer at the path and retries (see _take).
                with contextlib.suppress(OSError):
                    self.path.unlink()
                with contextlib.suppress(OSError):
                    fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])
                if entry[2]:
                    with contextlib.suppress(OSError):  # fails unless empty
                        self.directory.rmdir()
        self._key = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._key is not None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def locks_directory(
    argument: str = "out", purpose: str = "run"
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator: hold the :class:`DirectoryLock` of the function's ``argument`` during calls.

    Args:
        argument: Name of the parameter holding the directory (default: ``"out"``).
        purpose: What the lock protects, for messages.

    Example::

        @locks_directory("out", purpose="fine-tuning run")
        def finetune(data, pretrained, out, ...): ...
    """

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with DirectoryLock(bound.arguments[argument], purpose=purpose):
                return function(*args, **kwargs)

        return locked

    return decorate
