"""Files that cannot be read at all: each gives one DataError naming the file and the cause."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.data import read_dataset
from matxfer.errors import DataError

NACL = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
RECORD = alignn_entry(NACL, 1, 1.0)
TEXT = json.dumps([RECORD, RECORD | {"jid": 2}])

BROKEN_FILES = [
    ("empty.json", b"", "file is empty"),
    ("blank.json", b"  \n\n", "file is empty"),
    ("empty-list.json", b"[]", "record list is empty"),
    ("truncated.json", TEXT[:-30].encode(), "(the file ends early: truncated?)"),
    ("truncated.json.gz", gzip.compress(TEXT.encode())[:-12], "compressed file is truncated"),
    ("corrupt.json.gz", b"\x1f\x8b\x08\x00" + b"\x00" * 40, "compressed data is corrupt"),
    ("trailing.json", (TEXT + "\nxyz").encode(), "line 2, column 1: Extra data"),
    ("latin1.json", TEXT.replace('"Na"', '"Na\xe9"').encode("latin-1"), "not UTF-8 text"),
    ("binary.json", bytes(range(256)) * 4, "not UTF-8 text"),
    ("nul.json", b"[\x00\x00]", "contains NUL bytes"),
    ("table.json", b"id,target\na,1\n", "does not look like JSON"),
    ("object.json", b'{"a": 1}', "neither a list of records (alignn) nor a columns/data table"),
    ("number.json", b"42", "neither a list of records"),
    ("records.json", b"[1, 2]", "2 of 2 records are invalid"),
]


@pytest.mark.parametrize(
    ("name", "content", "message"), BROKEN_FILES, ids=[c[0] for c in BROKEN_FILES]
)
def test_unreadable_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_truncated_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([RECORD, RECORD], indent=1)[:-40])
    with pytest.raises(DataError, match=r"invalid JSON at line \d+, column \d+"):
        read_dataset(path)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or directory"):
        read_dataset(tmp_path / "absent.json")
    with pytest.raises(DataError, match=r"folder without id_prop\.csv"):
        read_dataset(tmp_path)
    for name in ("x.cif", "POSCAR", "targets.csv"):
        (tmp_path / name).write_text("content")
        with pytest.raises(DataError, match="is not a dataset; put the structure files in a"):
            read_dataset(tmp_path / name)


def test_zip_with_one_json_member_reads(tmp_path: Path) -> None:
    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inner.json", TEXT)
    assert read_dataset(path, format="alignn").ids == ["1", "2"]
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("other.json", TEXT)
    with pytest.raises(DataError, match="zip archive holds 2 files"):
        read_dataset(path, format="alignn")


def test_unexpected_reader_failure_names_the_file(tmp_path: Path, monkeypatch) -> None:
    import matxfer.data.readers as readers

    def explode(data: object, source: str, target_key: str | None) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(readers, "alignn_records", explode)
    path = tmp_path / "ok.json"
    path.write_text(TEXT)
    with pytest.raises(DataError, match=r"ok.json: could not be read \(RuntimeError: boom\)"):
        read_dataset(path)
