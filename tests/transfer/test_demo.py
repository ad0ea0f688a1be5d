"""``matxfer demo``: a quick smoke run (outputs, caching), bad options, the real demo (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from matxfer.errors import ConfigError, MatxferError
from matxfer.training import is_finished
from matxfer.transfer.demo import QUICK, DemoResult, parse_sizes, run_demo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> DemoResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(cache))
        return run_demo(
            tmp_path_factory.mktemp("demo") / "out",
            (100,),
            quick=True,
            progress=False,
            echo=lambda line: None,
        )


def test_quick_demo_writes_results_table_and_plots(quick_demo: DemoResult) -> None:
    out = quick_demo.out
    frame = pd.read_csv(quick_demo.csv)
    assert list(zip(frame["size"], frame["model"], strict=True)) == [
        (100, "scratch"),
        (100, "finetuned"),
    ]
    assert (frame["n_test"] == 127).all() and (frame["n_train"] == 90).all()
    summary = json.loads(quick_demo.json.read_text())
    r2 = dict(zip(frame["model"], frame["r2"], strict=True))
    expected_gain = 100 * (r2["finetuned"] - r2["scratch"]) / abs(r2["scratch"])
    assert summary["gains"]["100"]["r2_gain_percent"] == pytest.approx(expected_gain)
    assert "of 127 fine-tuning test structures" in summary["leakage"]["100"]
    assert quick_demo.plot.stat().st_size > 10_000
    for run in ("pretrain", "scratch_100", "finetuned_100"):
        assert (out / run / "parity.png").is_file(), run
    transfer = json.loads((out / "finetuned_100" / "transfer.json").read_text())
    assert transfer["pretrained"]["checkpoint"] == str((out / "pretrain/best.ckpt").resolve())


def test_rerun_skips_finished_steps_and_refuses_other_settings(
    quick_demo: DemoResult, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATXFER_CACHE", str(cache))
    lines: list[str] = []
    again = run_demo(quick_demo.out, (100,), quick=True, progress=False, echo=lines.append)
    assert sum("skipped" in line for line in lines) == 3
    assert again.rows == quick_demo.rows
    with pytest.raises(MatxferError, match="other settings"):
        run_demo(quick_demo.out, (100,), settings=replace(QUICK, seed=1), echo=lines.append)


def test_a_step_killed_while_writing_its_outputs_is_not_skipped(
    quick_demo: DemoResult, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MATXFER_CACHE", str(cache))
    out = tmp_path / "out"
    shutil.copytree(quick_demo.out, out)
    (out / "scratch_100" / "done.json").unlink()  # metrics.json is there, the rest maybe not
    lines: list[str] = []
    run_demo(out, (100,), quick=True, progress=False, echo=lines.append)
    assert sum("skipped" in line for line in lines) == 2
    assert any("from scratch" in line and "(resuming)" in line for line in lines)
    assert is_finished(out / "scratch_100")


def test_sizes_are_parsed_or_refused() -> None:
    assert parse_sizes("800, 100,100") == (100, 800)
    with pytest.raises(ConfigError, match="positive integers"):
        parse_sizes("100,lots")


def test_cli_bad_sizes_fail_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "matxfer.cli", "demo", "--out", str(tmp_path), "--sizes", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--sizes 'x'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_full_demo_fine_tuning_beats_scratch_at_100(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's demo (size 100 only here): fine-tuning must beat training from scratch."""
    monkeypatch.setenv("MATXFER_CACHE", str(tmp_path / "cache"))
    result = run_demo(tmp_path / "demo", (100,), progress=False, echo=lambda line: None)
    r2 = {row["model"]: row["r2"] for row in result.rows}
    assert r2["finetuned"] > r2["scratch"]
