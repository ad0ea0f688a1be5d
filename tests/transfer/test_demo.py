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
from matxfer.transfer.demo import QUICK, DemoResult, parse_seeds, parse_sizes, run_demo
from matxfer.transfer.demo_report import ONE_SEED_NOTE, gains, results_table, summarise

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


def _copy_of(
    demo: DemoResult, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Path:
    """A copy of the quick demo's folder to rerun in, with the shared kernel cache."""
    monkeypatch.setenv("MATXFER_CACHE", str(cache))
    shutil.copytree(demo.out, tmp_path / "out")
    return tmp_path / "out"


def test_a_step_killed_while_writing_its_outputs_is_not_skipped(
    quick_demo: DemoResult, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = _copy_of(quick_demo, cache, monkeypatch, tmp_path)
    (out / "scratch_100" / "done.json").unlink()  # metrics.json is there, the rest maybe not
    lines: list[str] = []
    run_demo(out, (100,), quick=True, progress=False, echo=lines.append)
    assert sum("skipped" in line for line in lines) == 2
    assert any("from scratch" in line and "(resuming)" in line for line in lines)
    assert is_finished(out / "scratch_100")


def test_sizes_and_seeds_are_parsed_or_refused() -> None:
    assert parse_sizes("800, 100,100") == (100, 800)
    with pytest.raises(ConfigError, match="positive integers"):
        parse_sizes("100,lots")
    assert parse_seeds("3,0, 3") == (0, 3)
    with pytest.raises(ConfigError, match=r"--seeds '-1': give integers ≥ 0"):
        parse_seeds("-1")


def test_more_seeds_reuse_the_first_and_report_paired_gains(
    quick_demo: DemoResult, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = _copy_of(quick_demo, cache, monkeypatch, tmp_path)
    lines: list[str] = []
    result = run_demo(out, (100,), seeds=(0, 1), quick=True, progress=False, echo=lines.append)
    assert sum("skipped" in line for line in lines) == 3  # pre-training and seed 0
    assert any("seed 1" in line and "fine-tuning" in line for line in lines)
    assert is_finished(out / "scratch_100_seed1") and is_finished(out / "finetuned_100_seed1")
    assert [r for r in result.rows if r["seed"] == 0] == quick_demo.rows
    summary = json.loads(result.json.read_text())
    assert summary["seeds"] == [0, 1]
    r2 = {(r["model"], r["seed"]): r["r2"] for r in result.rows}
    paired = [r2["finetuned", s] - r2["scratch", s] for s in (0, 1)]
    assert summary["gains"]["100"]["d_r2"] == pytest.approx(sum(paired) / 2)
    assert summary["gains"]["100"]["n_seeds"] == 2
    frame = pd.read_csv(result.csv)
    assert sorted(frame["seed"]) == [0, 0, 1, 1]


def _rows(r2: dict[tuple[str, int], float]) -> list[dict]:
    return [
        {
            "size": 100,
            "model": m,
            "seed": s,
            "r2": v,
            "mae": 1 - v,
            "seconds": 10.0,
            "epochs_trained": 40,
        }
        for (m, s), v in r2.items()
    ]


def test_gains_are_paired_by_seed_with_their_standard_error() -> None:
    rows = _rows(
        {
            ("scratch", 0): 0.5,
            ("scratch", 1): 0.7,
            ("scratch", 2): 0.6,
            ("finetuned", 0): 0.6,
            ("finetuned", 1): 0.7,
            ("finetuned", 2): 0.8,
        }
    )
    gain = gains(rows)[100]
    assert gain["d_r2"] == pytest.approx(0.1)
    assert gain["d_r2_se"] == pytest.approx(0.1 / 3**0.5)
    assert gain["d_mae"] == pytest.approx(-0.1)
    assert gain["wins"] == 2 and gain["n_seeds"] == 3
    assert gain["r2_gain_percent"] == pytest.approx(100 * 0.1 / 0.6)
    cell = next(c for c in summarise(rows) if c["model"] == "finetuned")
    assert cell["seeds"] == [0, 1, 2]
    assert cell["r2_mean"] == pytest.approx(0.7) and cell["r2_std"] == pytest.approx(0.1)


def test_the_table_says_one_seed_is_one_draw() -> None:
    from rich.console import Console

    console = Console(width=240, record=True)
    one = _rows({("scratch", 0): 0.5, ("finetuned", 0): 0.6})
    console.print(results_table(one, 12.0, {100: "no leakage"}))
    assert ONE_SEED_NOTE in " ".join(console.export_text().split())
    three = _rows({(m, s): 0.5 + 0.1 * s for m in ("scratch", "finetuned") for s in range(3)})
    console.print(results_table(three, 12.0, {100: "no leakage"}))
    text = console.export_text()
    assert "3 seeds" in text and "0.600 ± 0.100" in text
    assert "R² +0.000 ± 0.000 (SE)" in text and "ahead at 0 of 3 seeds" in text


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
