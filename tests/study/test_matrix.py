"""The accuracy matrix (matxfer.study.matrix) and its script (benchmarks/accuracy_matrix.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from builders import benchmark_script, printed_lines, recipe_run
from conftest import result_row

from matxfer.study.matrix import PROPERTIES, accuracy_matrix, beats_line, format_matrix
from matxfer.study.store import write_result


def _runs(target: str, kind: str, source: str, r2s: list[float]) -> list[dict[str, object]]:
    settings = (
        {"source": "scratch", "pt_size": None, "strategy": None, "head": None, "lr": 1e-3}
        if kind == "scratch"
        else {"source": source, "pt_size": None, "head": "new"}
    )
    return [
        result_row(
            job_id=f"{target}-{source}-{trial}",
            kind=kind,
            target=target,
            size=800.0,
            trial=float(trial),
            test_r2=r2,
            test_mae=1 - r2,
            seconds=120.0,
            **settings,
        )
        for trial, r2 in enumerate(r2s, start=1)
    ]


@pytest.fixture
def matrix_results(results: pd.DataFrame) -> pd.DataFrame:
    """The synthetic ph table (scratch 0.825 and fe → ph 0.865 at size 800) plus
    mpt7-no-ph → ph (0.985), dc scratch (0.71) and mpt7-no-dc → dc (0.74), and a pz
    fine-tuning without scratch (0.5); the study's means at 800 are ph 0.904 / best
    FT 0.979, dc 0.653 / 0.697, pz -0.039 / 0.014."""
    rows = [
        *_runs("ph", "finetune", "mpt7-no-ph", [0.98, 0.99]),
        *_runs("dc", "scratch", "scratch", [0.70, 0.72]),
        *_runs("dc", "finetune", "mpt7-no-dc", [0.75, 0.73]),
        *_runs("pz", "finetune", "mpt7", [0.5, 0.5]),
    ]
    return pd.concat([results, pd.DataFrame(rows)], ignore_index=True)


def test_matrix_numbers_and_verdicts(matrix_results: pd.DataFrame) -> None:
    matrix = {row.target: row for row in accuracy_matrix(matrix_results, 800)}
    assert list(matrix) == list(PROPERTIES)
    ph = matrix["ph"]
    assert ph.scratch is not None and ph.scratch.n == 2
    assert ph.scratch.r2_mean == pytest.approx(0.825)
    assert ph.scratch.r2_std == pytest.approx(math.sqrt(2 * 0.025**2))
    assert ph.scratch.minutes == pytest.approx(1.0)  # the fixture's 60 s per run
    assert [a.label for a in ph.finetune] == [
        "mpt7-no-ph → ph · all · new",
        "fe → ph · all · reuse · PT 941",
    ]  # best first
    assert ph.best_ft is not None and ph.best_ft.minutes == pytest.approx(2.0)
    assert ph.study_scratch is not None and ph.study_scratch.r2_mean == pytest.approx(0.90353)
    assert ph.study_best_ft is not None and ph.study_best_ft.label == "mpt-no-ph → ph"
    assert not ph.beats_scratch and ph.beats_best_ft
    assert matrix["dc"].beats_scratch and matrix["dc"].beats_best_ft
    # Fine-tuning without a scratch baseline of our own beats nothing.
    assert matrix["pz"].scratch is None and not matrix["pz"].beats_best_ft
    assert not matrix["fe"].measured and not matrix["fe"].beats_scratch
    assert beats_line(list(matrix.values())) == "beats_study: 1/7 scratch, 2/7 best-FT"


def test_a_group_with_fewer_runs_than_scratch_is_listed_but_not_ranked(
    matrix_results: pd.DataFrame,
) -> None:
    lucky = pd.DataFrame(_runs("dc", "finetune", "chgnet", [0.99]))  # one run, above all
    matrix = {
        row.target: row
        for row in accuracy_matrix(pd.concat([matrix_results, lucky], ignore_index=True), 800)
    }
    dc = matrix["dc"]
    assert dc.finetune[0].n == 1 and dc.finetune[0].r2_mean == pytest.approx(0.99)
    assert dc.best_ft is not None and dc.best_ft.label.startswith("mpt7-no-dc")
    lines = format_matrix(list(matrix.values()), 800)
    assert any("(fewer runs than scratch: not ranked)" in line for line in lines)
    # Another size has other runs (ph and fe → ph at 100, no study best FT row missing).
    at_100 = {row.target: row for row in accuracy_matrix(matrix_results, 100)}
    assert at_100["ph"].scratch is not None and at_100["ph"].scratch.n == 3
    assert not at_100["dc"].measured


def test_script_prints_and_writes_json(matrix_results: pd.DataFrame, tmp_path: Path) -> None:
    study = tmp_path / "study"
    for row in matrix_results.to_dict("records"):  # a table's NaN: an unset value
        write_result(study, {k: None if pd.isna(v) else v for k, v in row.items()})
    module = benchmark_script("accuracy_matrix")
    out = tmp_path / "matrix.json"
    # The same study twice: its jobs count once.
    lines = printed_lines(
        module.main, ["--study", str(study), "--study", str(study), "--json", str(out)]
    )
    assert lines[-1] == "beats_study: 1/7 scratch, 2/7 best-FT"
    assert "fe: not measured" in lines
    assert any(line.startswith("ph: scratch R² 0.825 ± 0.035") and "n=2" in line for line in lines)
    numbers = json.loads(out.read_text())
    assert numbers["beats_study_scratch"] == 1 and numbers["beats_study_best_ft"] == 2
    ph = next(p for p in numbers["properties"] if p["target"] == "ph")
    assert ph["best_ft"]["label"] == "mpt7-no-ph → ph · all · new"
    assert ph["scratch"]["n"] == 2
    fe = next(p for p in numbers["properties"] if p["target"] == "fe")
    assert fe["scratch"] is None and fe["study_scratch"]["r2_mean"] == pytest.approx(0.91257)


def test_script_reads_the_recipes_cache(tmp_path: Path) -> None:
    for seed, (scratch, tuned) in enumerate([(0.95, 0.99), (0.97, 0.99)]):
        recipe_run(tmp_path / "ph800" / "scratch" / f"s{seed}", scratch, 60.0)
        recipe_run(tmp_path / "ph800" / "ftmpt7" / f"s{seed}", tuned, 120.0)
    recipe_run(tmp_path / "ph800" / "scratch-yj" / "s0", 0.999, 60.0)  # a scratch variant
    (tmp_path / "ph800" / "ftfe" / "s0").mkdir(parents=True)  # unfinished: ignored
    recipe_run(tmp_path / "dc800" / "scratch" / "s0", 0.60, 60.0)
    module = benchmark_script("accuracy_matrix")
    lines = printed_lines(module.main, ["--recipes", str(tmp_path), "--no-record"])
    assert any(
        line.startswith("ph: scratch R² 0.960 ± 0.014") and "1.0 min/run" in line for line in lines
    )
    assert any("ftmpt7: R² 0.990 ± 0.000" in line and "2.0 min/run" in line for line in lines)
    assert not any("scratch-yj" in line or "ftfe" in line for line in lines)
    # ph: scratch 0.96 ≥ 0.904 and FT 0.99 ≥ 0.979 > 0.96; dc 0.60 < 0.653.
    assert lines[-1] == "beats_study: 1/7 scratch, 1/7 best-FT"
