"""Atomic file writes: a unique temporary file beside the target, renamed over it.

A reader, or a run killed mid-write (``kill -9``), sees either the old file or
the complete new one, never a truncated one. Temporary names are unique per
write (``.{name}.{pid}.{random}.tmp``), so two processes writing the same
file never write into each other's temporary file, and the temporary file is
removed when the write fails. A run resumed under its directory lock removes
the ``.*.tmp`` files a killed run left behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from matxfer.errors import MatxferError


def temporary_name(path: Path) -> Path:
    """A fresh temporary path beside ``path`` (same folder, so the rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


@contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``.

    Args:
        path: The destination (its folder is created).
        fsync: Flush the written file to disk before the rename (checkpoints:
            survives a power loss, not only a killed process).

    Example::

        with atomic_path(out / "parity.png") as tmp:
            figure.savefig(tmp, format="png")
    """
    path = Path(path)
    if path.is_dir():
        raise MatxferError(f"{path} is a folder; give a file name to write to")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise MatxferError(f"cannot write {path}: a part of its folder is a file") from None
    except PermissionError:
        raise MatxferError(f"cannot write {path}: permission denied") from None
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
