"""Downloads: cut connections, short bodies, truncated archives, concurrent fetches (offline)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import matxfer.data.registry as registry
from matxfer.data import download, resolve_named
from matxfer.data.download import extract_member, fetch, verify
from matxfer.errors import DataError


class FakeResponse(io.BytesIO):
    """A urlopen response: ``Content-Length`` header, and a connection cut after ``cut`` bytes."""

    def __init__(self, data: bytes, length: int | None = None, cut: int | None = None) -> None:
        super().__init__(data)
        self.headers = {} if length is None else {"Content-Length": str(length)}
        self.cut = cut

    def read(self, size: int | None = -1) -> bytes:
        if self.cut is not None and self.tell() >= self.cut:
            raise http.client.IncompleteRead(b"", len(self.getvalue()) - self.cut)
        limit = None if self.cut is None else self.cut - self.tell()
        return super().read(limit if size is None or size < 0 else min(size, limit or size))


def opener_of(response: FakeResponse):
    return lambda url, timeout: response


def zipped(payload: bytes = b"[]" * 5000, member: str = "d2.json") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, payload)
    return buffer.getvalue()


def assert_nothing_kept(folder: Path) -> None:
    assert [p.name for p in folder.iterdir()] == [], list(folder.iterdir())


def test_a_connection_cut_mid_file_is_a_clear_error(tmp_path: Path) -> None:
    data = zipped()
    response = FakeResponse(data, cut=len(data) // 2)
    with pytest.raises(DataError, match=r"could not download .*connection closed.*put it at"):
        fetch("https://example.org/d2.zip", tmp_path / "d2.zip", opener=opener_of(response))
    assert_nothing_kept(tmp_path)


def test_a_body_shorter_than_its_content_length_is_refused(tmp_path: Path) -> None:
    data = zipped()
    response = FakeResponse(data[:100], length=len(data))
    with pytest.raises(DataError, match=rf"received 100 of {len(data)} bytes"):
        fetch("https://example.org/d2.zip", tmp_path / "d2.zip", opener=opener_of(response))
    assert_nothing_kept(tmp_path)


@pytest.mark.parametrize(
    ("name", "data"),
    [("d2.json.zip", zipped()), ("table.json.gz", gzip.compress(b'{"data": []}' * 500))],
)
def test_trust_on_first_use_never_records_a_truncated_file(
    name: str, data: bytes, tmp_path: Path
) -> None:
    # No Content-Length: only opening the archive can tell it is cut short.
    response = FakeResponse(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        fetch(f"https://example.org/{name}", tmp_path / name, opener=opener_of(response))
    assert_nothing_kept(tmp_path)
    # Nor does verify() record a truncated file someone put there.
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        verify(tmp_path / name, None)
    assert not (tmp_path / f"{name}.sha256").exists()
    fetch(
        f"https://example.org/{name}",
        tmp_path / "whole" / name,
        opener=opener_of(FakeResponse(data)),
    )
    recorded = (tmp_path / "whole" / f"{name}.sha256").read_text().strip()
    assert recorded == hashlib.sha256(data).hexdigest()


#: Holds the download lock of argv[1], then writes the file and releases it.
OTHER_DOWNLOADER = """
import sys, time
from pathlib import Path
from matxfer.locking import DirectoryLock
dest = Path(sys.argv[1])
with DirectoryLock(dest.parent, name=f".{dest.name}.lock"):
    print("locked", flush=True)
    time.sleep(1.0)
    dest.write_bytes(b"payload")
"""


def test_a_second_process_waits_for_the_first_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "file.bin"
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER_DOWNLOADER, str(dest)], stdout=subprocess.PIPE, text=True
    )
    assert other.stdout is not None and other.stdout.readline().strip() == "locked"

    def must_not_download(url: str, timeout: float) -> None:
        raise AssertionError("downloaded twice")

    digest = hashlib.sha256(b"payload").hexdigest()
    assert fetch("https://example.org/file.bin", dest, digest, opener=must_not_download) == digest
    assert other.wait(timeout=60) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_part_files_are_per_process_and_stale_ones_are_cleared(tmp_path: Path) -> None:
    (tmp_path / "file.bin.4242.dead.part").write_bytes(b"half of a killed download")
    seen: list[set[str]] = []

    class Watching(FakeResponse):
        def read(self, size: int | None = -1) -> bytes:
            seen.append({p.name for p in tmp_path.glob("*.part")})
            return super().read(size)

    fetch("https://example.org/file.bin", tmp_path / "file.bin", opener=opener_of(Watching(b"x")))
    (part,) = seen[0]
    assert part.startswith(f"file.bin.{download.os.getpid()}.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin", "file.bin.sha256"]


def test_an_extracted_file_is_checked_against_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "d2.json.zip"
    archive.write_bytes(zipped(b'[{"jid": 1}]'))
    extracted = extract_member(archive, "d2.json", tmp_path)
    assert extracted.read_bytes() == b'[{"jid": 1}]'
    extracted.write_bytes(b'[{"jid": 2}]')  # same size, other content
    assert extract_member(archive, "d2.json", tmp_path).read_bytes() == b'[{"jid": 1}]'
    extracted.write_bytes(b"[")  # truncated
    assert extract_member(archive, "d2.json", tmp_path).read_bytes() == b'[{"jid": 1}]'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d2.json", "d2.json.zip"]


def test_a_named_dataset_re_extracts_an_altered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = zipped(b'[{"jid": 1}]', member="d2-12-12-2022.json")
    monkeypatch.setattr(registry.urllib.request, "urlopen", lambda url, timeout: FakeResponse(data))
    pool = resolve_named("jarvis2d", data_dir=tmp_path).pool_path
    pool.write_bytes(b'[{"jid": 2}]')
    assert resolve_named("jarvis2d", data_dir=tmp_path).pool_path.read_bytes() == b'[{"jid": 1}]'
