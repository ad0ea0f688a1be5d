"""Atomic writes: unique temporary names, removed when the write fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from matxfer.atomic import atomic_path, temporary_name, write_text_atomic


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
