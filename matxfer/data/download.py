"""Downloading and unpacking the public dataset files, safely.

* **Complete or nothing**: a download goes to a per-process ``.part`` file and
  is renamed into place only when it is whole: the bytes received match the
  ``Content-Length`` the server announced, the SHA-256 matches the expected
  one, and (for trust on first use, when no hash is published) the file opens
  as what it claims to be (a zip lists and checks its members, a ``.gz``
  decompresses to the end). A truncated file is never recorded as trusted.
* **One writer**: two processes fetching the same file take turns (a lock
  file beside it); the second one then finds the file and verifies it.
* **Clear errors**: network failures, including a connection cut mid-file
  (:class:`http.client.IncompleteRead`), become a :class:`~matxfer.errors.DataError`
  saying what to do without internet access.
* **Extracted files are checked** against the size and CRC-32 the archive
  records for them each time they are used, and extracted again when they
  differ.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import secrets
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from matxfer.atomic import atomic_path, write_text_atomic
from matxfer.errors import DataError
from matxfer.locking import DirectoryLock

#: Seconds a process waits for another one downloading the same file.
DOWNLOAD_WAIT = 3600.0
_BLOCK = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def check_complete(path: Path, name: str | None = None) -> None:
    """Refuse a file that does not open as what its name says (``.zip``, ``.gz``).

    Args:
        path: The file.
        name: The name that tells its type (default: ``path.name``; a ``.part``
            file passes its destination's).

    Raises:
        DataError: A truncated or corrupt archive.
    """
    name = name or path.name
    try:
        if name.endswith(".zip"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"member {bad} fails its CRC check")
        elif name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                while stream.read(_BLOCK):
                    pass
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
        raise DataError(
            f"{name} is truncated or corrupt ({error}); it was not kept: download it again"
        ) from None


def verify(path: Path, sha256: str | None) -> str:
    """Check ``path`` against ``sha256``, or against / into its ``.sha256`` record (TOFU).

    A file is recorded (trusted on first use) only when it opens completely
    (:func:`check_complete`).

    Args:
        path: Downloaded file.
        sha256: Expected hash, or ``None`` to use the hash recorded on first download.

    Raises:
        DataError: The hash differs, or an unrecorded file is incomplete.
    """
    record = _record_path(path)
    expected = sha256 or (record.read_text().strip() if record.is_file() else None)
    actual = sha256_of(path)
    if expected is None:
        check_complete(path)
        write_text_atomic(record, actual + "\n")
    elif actual != expected:
        raise DataError(
            f"{path}: SHA-256 {actual} does not match the expected {expected}; the file is "
            "corrupt or not the published one; delete it to download again"
        )
    return actual


def _content_length(response: Any) -> int | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Content-Length") if headers is not None else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _download(url: str, partial: Path, opener: Callable[..., Any]) -> tuple[str, int]:
    """Stream ``url`` into ``partial``; returns (SHA-256, size).

    Raises:
        DataError: The transfer failed or ended before the announced length.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with opener(url, timeout=60) as response, partial.open("xb") as out:
            expected = _content_length(response)
            for block in iter(lambda: response.read(_BLOCK), b""):
                digest.update(block)
                out.write(block)
                size += len(block)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
        if isinstance(error, http.client.IncompleteRead):
            reason: object = f"connection closed after {size + len(error.partial)} bytes"
        else:
            reason = getattr(error, "reason", None) or error
        raise DataError(f"could not download {url} ({reason})") from None
    if expected is not None and size != expected:
        raise DataError(
            f"could not download {url} (received {size} of {expected} bytes: truncated)"
        )
    return digest.hexdigest(), size


def fetch(
    url: str,
    dest: Path,
    sha256: str | None = None,
    opener: Callable[..., Any] | None = None,
) -> str:
    """Download ``url`` to ``dest`` atomically and verify it; returns its SHA-256.

    Args:
        url: Source URL (``file://`` URLs work, for tests and mirrors).
        dest: Destination file; its folder is created.
        sha256: Expected hash (``None``: record it on first download, once the
            file is known to be complete).
        opener: ``urlopen``-like callable (default: ``urllib.request.urlopen``).

    Raises:
        DataError: The download failed, was truncated, or does not match.
    """
    opener = opener or urllib.request.urlopen
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock = DirectoryLock(dest.parent, purpose=f"download of {dest.name}", name=f".{dest.name}.lock")
    lock.acquire(wait=DOWNLOAD_WAIT)
    try:
        if dest.is_file():  # another process downloaded it meanwhile
            return verify(dest, sha256)
        for stale in dest.parent.glob(f"{dest.name}.*.part"):  # of killed downloads
            stale.unlink(missing_ok=True)
        partial = dest.with_name(f"{dest.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        try:
            try:
                actual, _ = _download(url, partial, opener)
            except DataError as error:
                advice = f"without internet access, download it elsewhere and put it at {dest}"
                raise DataError(f"{error}; {advice}") from None
            if sha256 is not None and actual != sha256:
                raise DataError(
                    f"download of {url} has SHA-256 {actual}, expected {sha256}; not used"
                )
            if sha256 is None:
                check_complete(partial, dest.name)  # never trust a truncated file
            partial.replace(dest)
        finally:
            partial.unlink(missing_ok=True)
        if sha256 is None:
            write_text_atomic(_record_path(dest), actual + "\n")
        return actual
    finally:
        lock.release()


def _safe_member_name(archive: Path, member: str) -> str:
    """The file name ``member`` is extracted to, refusing paths that escape the folder."""
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if not parts or member.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
        raise DataError(f"{archive}: refusing unsafe archive path '{member}'")
    return parts[-1]


def _matches_archive(info: zipfile.ZipInfo, path: Path) -> bool:
    """Whether ``path`` has the size and CRC-32 the archive records for ``info``."""
    if not path.is_file() or path.stat().st_size != info.file_size:
        return False
    crc = 0
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def extract_member(archive: Path, member: str, folder: Path) -> Path:
    """One named file of a zip archive in ``folder``: extracted now, unless a copy
    there matches the size and CRC-32 the archive records for it.

    Args:
        archive: The zip file.
        member: Name of the file inside the archive.
        folder: Destination folder.

    Raises:
        DataError: An unsafe member path, a missing member, or an unreadable archive.
    """
    target = folder / _safe_member_name(archive, member)
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if member not in names:
                raise DataError(f"{archive}: no '{member}' inside (holds {', '.join(names[:5])})")
            info = zf.getinfo(member)
            if _matches_archive(info, target):
                return target
            with zf.open(member) as source, atomic_path(target) as tmp, tmp.open("wb") as out:
                for block in iter(lambda: source.read(_BLOCK), b""):
                    out.write(block)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise DataError(f"{archive}: cannot extract '{member}' ({error})") from None
    return target
