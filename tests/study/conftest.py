"""Fixtures of the study tests: a synthetic results table and two tiny model runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import TINY_MODEL, alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.data.transforms import TargetTransform
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.study.store import write_result
from matxfer.training import save_model

#: Test R² of the synthetic scratch and fe → ph runs, by (size, trial).
SCRATCH_R2 = {(100, 1): 0.50, (100, 2): 0.40, (100, 3): 0.60, (800, 1): 0.80, (800, 2): 0.85}
FINETUNE_R2 = {(100, 1): 0.60, (100, 2): 0.50, (100, 3): 0.66, (800, 1): 0.88, (800, 2): 0.85}


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the tests' graph caches out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def result_row(**values: object) -> dict[str, object]:
    """One results-table row (schema of ``matxfer.study.store``) with fast-profile defaults."""
    row: dict[str, object] = {
        "job_id": "job",
        "kind": "finetune",
        "status": "done",
        "error": None,
        "target": "ph",
        "source": "fe",
        "pt_job_id": None,
        "pt_size": 941.0,
        "size": 100.0,
        "trial": 1.0,
        "seed": 0,
        "strategy": "all",
        "head": "reuse",
        "lr": 1e-4,
        "sampling": "random",
        "profile": "fast",
        "test_r2": 0.5,
        "test_mae": 0.1,
        "test_rmse": 0.2,
        "seconds": 60.0,
        "run_dir": "/nonexistent/run",
    }
    row.update(values)
    return row


@pytest.fixture
def results() -> pd.DataFrame:
    """Scratch and fe → ph (PT 941) runs at sizes 100 (3 trials) and 800 (2 trials), an
    fe → ph run with strategy ``last``, a failed job and a pre-training job.

    MAE = 1 − R² so that both columns carry known numbers.
    """
    rows = []
    for (size, trial), r2 in SCRATCH_R2.items():
        rows.append(
            result_row(
                job_id=f"scratch-{size}-{trial}",
                kind="scratch",
                source="scratch",
                pt_size=None,
                strategy=None,
                head=None,
                lr=1e-3,
                size=float(size),
                trial=float(trial),
                test_r2=r2,
                test_mae=1 - r2,
            )
        )
    for (size, trial), r2 in FINETUNE_R2.items():
        rows.append(
            result_row(
                job_id=f"fe-{size}-{trial}",
                size=float(size),
                trial=float(trial),
                test_r2=r2,
                test_mae=1 - r2,
            )
        )
    rows.append(result_row(job_id="last-100-1", strategy="last", test_r2=0.55, test_mae=0.45))
    rows.append(
        result_row(
            job_id="failed-1",
            status="failed",
            error="RuntimeError: out of memory | in batch 3",
            trial=4.0,
            test_r2=np.nan,
            test_mae=np.nan,
            test_rmse=np.nan,
        )
    )
    rows.append(
        result_row(
            job_id="pt-fe",
            kind="pretrain",
            target="fe",
            strategy=None,
            head=None,
            size=None,
            trial=None,
            test_r2=0.9,
            test_mae=0.05,
            seconds=1800.0,
            epochs_trained=40,
            stopped_by="max_epochs",
        )
    )
    return pd.DataFrame(rows)


def _structures() -> list[Structure]:
    """Ten small cubic crystals with varied cells."""
    pairs = [("Na", "Cl"), ("Mg", "O"), ("Li", "F"), ("K", "Br"), ("Ca", "S")]
    return [
        Structure(Lattice.cubic(3.6 + 0.25 * i), list(pairs[i % 5]), [[0, 0, 0], [0.5] * 3])
        for i in range(10)
    ]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pd.DataFrame]:
    """A study folder with two tiny fe → ph runs (trials 1 and 2; different weights and
    target transforms) and a failed job in its results store, the same results as a
    table, and a labelled ten-crystal dataset.

    The runs hold lean checkpoints written by :func:`save_model` (untrained models: the
    ensemble's arithmetic does not care how the weights came about, and training would
    cost tens of seconds on two cores).

    Returns:
        (study dir, data file, results table).
    """
    study = tmp_path_factory.mktemp("study")
    rows = []
    for trial in (1, 2):
        torch.manual_seed(trial)
        model = ALIGNN(num_outputs=1, **TINY_MODEL)
        transform = TargetTransform("standardize", 1).fit(torch.randn(20, 1) * trial + trial)
        run_dir = study / "runs" / f"ft-{trial}"
        run_dir.mkdir(parents=True)
        save_model(run_dir / "best.ckpt", model, transform, GraphConfig(), ["target"])
        rows.append(
            result_row(job_id=f"ft{trial}", size=800.0, trial=float(trial), run_dir=str(run_dir))
        )
    rows.append(result_row(job_id="ft3", status="failed", trial=3.0, run_dir=str(study / "x")))
    for row in rows:
        write_result(study, row)
    data = study / "data.json"
    entries = [alignn_entry(s, jid=f"c{i}", target=0.1 * i) for i, s in enumerate(_structures())]
    data.write_text(json.dumps(entries))
    return study, data, pd.DataFrame(rows)
