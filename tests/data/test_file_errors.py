"""Files that cannot be read at all: each gives one DataError naming the file and the cause."""

from __future__ import annotations

import gzip
import json
import re
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

    def explode(data: object, source: str, *options: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(readers, "alignn_records", explode)
    path = tmp_path / "ok.json"
    path.write_text(TEXT)
    with pytest.raises(DataError, match=r"ok.json: could not be read \(RuntimeError: boom\)"):
        read_dataset(path)


@pytest.mark.parametrize("kind", ["gzip", "bz2", "xz", "zip"])
def test_decompressed_size_is_bounded(tmp_path: Path, monkeypatch, kind: str) -> None:
    import bz2
    import lzma

    text = json.dumps([RECORD | {"jid": i} for i in range(50)]).encode()
    path = tmp_path / f"bomb.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("inner.json", text)
    else:
        path.write_bytes({"gzip": gzip, "bz2": bz2, "xz": lzma}[kind].compress(text))
    assert len(read_dataset(path, format="alignn")) == 50
    monkeypatch.setenv("MATXFER_MAX_DECOMPRESSED_BYTES", "1000")
    with pytest.raises(DataError) as caught:
        read_dataset(path, format="alignn")
    message = str(caught.value)
    assert message.startswith(f"{path}: decompresses to more than 1,000 bytes")
    assert "MATXFER_MAX_DECOMPRESSED_BYTES" in message
    monkeypatch.setenv("MATXFER_MAX_DECOMPRESSED_BYTES", str(len(text)))
    assert len(read_dataset(path, format="alignn")) == 50


def test_decompressed_size_limit_argument_and_bad_setting(tmp_path: Path, monkeypatch) -> None:
    from matxfer.data.formats._io import decompress
    from matxfer.errors import ConfigError

    raw = gzip.compress(b"x" * 5000)
    assert decompress(raw, tmp_path / "a.gz", limit=5000) == b"x" * 5000
    with pytest.raises(DataError, match="more than 4,999 bytes"):
        decompress(raw, tmp_path / "a.gz", limit=4999)
    monkeypatch.setenv("MATXFER_MAX_DECOMPRESSED_BYTES", "2GB")
    with pytest.raises(ConfigError, match="MATXFER_MAX_DECOMPRESSED_BYTES='2GB' must be"):
        decompress(raw, tmp_path / "a.gz")


def _four_records() -> str:
    return json.dumps([RECORD | {"jid": jid} for jid in ("a", "b", "JVASP-7", 9)], indent=1)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda t: t.replace('"JVASP-7",', '"JVASP-7"', 1), "in record 2 (id JVASP-7)"),
        (lambda t: t.replace('"target": 1.0', '"target": 1.0]', 4)[:-1], "in record 0 (id a)"),
        (lambda t: t[: t.index('"jid": 9') + 30], "in record 3 (id 9)"),
    ],
    ids=["missing comma", "stray bracket", "truncated"],
)
def test_json_syntax_error_names_the_record(tmp_path: Path, damage, message: str) -> None:
    path = tmp_path / "broken.json.gz"
    path.write_bytes(gzip.compress(damage(_four_records()).encode()))
    with pytest.raises(DataError, match=r"invalid JSON at line \d+, column \d+") as caught:
        read_dataset(path)
    assert message in str(caught.value)


def test_non_utf8_byte_names_the_record(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(_four_records().replace('"b"', '"b\xe9"').encode("latin-1"))
    text = _four_records()
    line = text[: text.index('"b"')].count("\n") + 1
    with pytest.raises(DataError, match=rf"\(byte 0xe9 at offset \d+, line {line}, in record 1 \("):
        read_dataset(path)


def test_non_utf8_byte_after_a_byte_order_mark_is_reported_exactly(tmp_path: Path) -> None:
    path = tmp_path / "bom.xyz"
    path.write_bytes(b"\xef\xbb\xbf1\ncomment\nNa 0 0 0\xff\n")
    with pytest.raises(DataError, match=r"byte 0xff at offset 21, line 3\)"):
        read_dataset(path)


def test_matbench_syntax_error_names_the_row(tmp_path: Path) -> None:
    rows = [[NACL.as_dict(), 1.25], [NACL.as_dict(), 2.75], [NACL.as_dict(), 3.25]]
    text = json.dumps({"index": [0, 1, 2], "columns": ["structure", "e"], "data": rows})
    path = tmp_path / "table.json"
    assert text.count("2.75]") == 1
    path.write_text(text.replace("2.75]", "2.75 x]"))
    with pytest.raises(DataError, match=r"invalid JSON .*, in record 1$"):
        read_dataset(path)


def test_error_outside_the_records_names_no_record(tmp_path: Path) -> None:
    path = tmp_path / "trailing.json"
    path.write_text(_four_records() + "\n]")
    with pytest.raises(DataError, match="Extra data") as caught:
        read_dataset(path)
    assert "in record" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (10, 99, "zip archive cannot be opened here (That compression method is not supported)"),
        (8, 1, "zip archive is encrypted"),
    ],
    ids=["unknown method", "encrypted"],
)
def test_zip_archives_python_cannot_open(
    tmp_path: Path, field: int, value: int, message: str
) -> None:
    import struct

    path = tmp_path / "data.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("inner.json", TEXT)
    raw = bytearray(path.read_bytes())
    directory = raw.find(b"PK\x01\x02")  # the central directory entry's header fields
    raw[directory + field : directory + field + 2] = struct.pack("<H", value)
    raw[field - 2 : field] = struct.pack("<H", value)  # the local header's copy
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        read_dataset(path, format="alignn")
    assert caught.value.__cause__ is None
