"""``matxfer data check``: summary and exit 0 for valid data, problem lines and exit 2 otherwise."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from builders import alignn_entry
from pymatgen.core import Lattice, Structure
from typer.testing import CliRunner

from matxfer.cli import app

NACL = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def write_records(path: Path, targets: list[float]) -> Path:
    path.write_text(json.dumps([alignn_entry(NACL, i, t) for i, t in enumerate(targets)]))
    return path


def test_valid_file_prints_summary(tmp_path: Path) -> None:
    path = write_records(tmp_path / "ok.json", [1.0, 2.0, 4.5])
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "records" in result.output and "3" in result.output
    assert "2: Na, Cl" in result.output
    assert "min 1, mean 2.5, max 4.5" in result.output
    assert "OK" in result.output


def test_invalid_file_lists_problems(tmp_path: Path) -> None:
    path = write_records(tmp_path / "bad.json", [1.0, math.nan, 2.0])
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 2
    assert f"{path}: record 1 (id 1): target 'target' is NaN" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_reason_many_records_share_is_shown_thrice_then_counted(tmp_path: Path) -> None:
    path = write_records(tmp_path / "bad.json", [math.nan] * 8 + [1.0, math.inf])
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert sum("is NaN" in line for line in lines) == 4  # three records, then the count
    assert "  ... and 5 more records: target 'target' is NaN" in lines
    assert f"  {path}: record 9 (id 9): target 'target' is infinite (inf)" in lines


def test_skip_invalid_reports_skipped(tmp_path: Path) -> None:
    path = write_records(tmp_path / "bad.json", [1.0, math.nan, 2.0])
    result = CliRunner().invoke(app, ["data", "check", str(path), "--skip-invalid"])
    assert result.exit_code == 0, result.output
    assert "skipped 1 invalid records" in result.output
    assert "record 1 (id 1)" in result.output


def test_named_dataset_from_data_dir(tmp_path: Path) -> None:
    (tmp_path / "dc").mkdir()
    write_records(tmp_path / "dc" / "pool.json", [1.0, 2.0])
    (tmp_path / "dc" / "pool.json").rename(tmp_path / "dc" / "pool.json.gz")  # plain JSON, sniffed
    result = CliRunner().invoke(app, ["data", "check", "dielectric", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "pool.json.gz" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x1f\x8b\x08\x00garbage", "broken.json.gz: compressed"),
        (b"[{]", "invalid JSON at line 1"),
    ],
)
def test_console_script_never_shows_a_traceback(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "broken.json.gz"
    path.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "matxfer.cli", "data", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_brackets_in_paths_and_ids_print_verbatim(tmp_path: Path) -> None:
    # "[/b]" is a closing rich markup tag: printed with markup on it raised MarkupError.
    folder = tmp_path / "a["
    folder.mkdir()
    path = folder / "b].json"
    path.write_text(json.dumps([alignn_entry(NACL, "[/x]", 1.0), alignn_entry(NACL, 2, 2.0)]))
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "a[/b].json" in result.output
    missing = tmp_path / "c[/d][red].json"
    result = CliRunner().invoke(app, ["data", "check", str(missing)])
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert f"{missing}: no such file" in " ".join(result.output.split())
    path.write_text(json.dumps([alignn_entry(NACL, "[/x]", math.nan)]))
    result = CliRunner().invoke(app, ["data", "check", str(path), "--skip-invalid"])
    assert result.exit_code == 2
    assert "record 0 (id [/x]): target 'target' is NaN" in result.output


def test_summary_table_shows_user_text_verbatim() -> None:
    from rich.console import Console

    from matxfer.data.summary import DatasetSummary, TargetStats, summary_table

    summary = DatasetSummary(1, ("Na",), 1, 1.0, 1, {"[bold]gap[/]": TargetStats(1, 0, 0, 0)})
    console = Console(width=200, record=True)  # markup on, as in a caller's console
    console.print(summary_table(summary, "runs/[/b].json"))
    text = console.export_text()
    assert "runs/[/b].json" in text
    assert "target '[bold]gap[/]'" in text


def test_extxyz_with_target_fields_checks_without_target_key(tmp_path: Path) -> None:
    frame = (
        '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 target={t} id={i} '
        'pbc="T T T"\nNa 0 0 0\nCl 2 2 2\n'
    )
    path = tmp_path / "frames.extxyz"
    path.write_text(frame.format(t=1.5, i="a") + frame.format(t=2.5, i="b"))
    result = CliRunner().invoke(app, ["data", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "min 1.5, mean 2, max 2.5" in result.output
