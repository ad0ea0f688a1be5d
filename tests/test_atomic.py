"""Atomic writes: unique temporary names, removed when the write fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from matxfer.atomic import atomic_path, temporary_name, write_text_atomic
from matxfer.errors import MatxferError


def test_temporary_names_are_unique_per_write(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    names = {temporary_name(target) for _ in range(50)}
    assert len(names) == 50
    assert all(n.parent == tmp_path and n.name.startswith(".metrics.json.") for n in names)
    assert all(n.name.endswith(".tmp") for n in names)  # what a resume clears


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "card.md"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and list(tmp_path.iterdir()) == [target]


def test_a_folder_or_a_file_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("kept")
    with pytest.raises(MatxferError, match="is a folder; give a file name"):
        write_text_atomic(tmp_path, "x")
    with pytest.raises(MatxferError, match="a part of its folder is a file"):
        write_text_atomic(tmp_path / "a_file" / "out.csv", "x")
    assert (tmp_path / "a_file").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["a_file"]  # no temporary left behind
