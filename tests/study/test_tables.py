"""The report's tables: means, stds, pairing with scratch, anchors, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import FINETUNE_R2, SCRATCH_R2

from matxfer.study.tables import build_tables


def _group(summary: pd.DataFrame, **where: object) -> pd.Series:
    rows = summary
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, where
    return rows.iloc[0]


@pytest.mark.parametrize("size", [100, 800])
def test_means_stds_and_paired_change(results: pd.DataFrame, size: int) -> None:
    summary = build_tables(results).summary
    trials = sorted(t for s, t in FINETUNE_R2 if s == size)
    tuned = np.array([FINETUNE_R2[size, t] for t in trials])
    scratch = np.array([SCRATCH_R2[size, t] for t in trials])
    row = _group(summary, source="fe", strategy="all", size=size)
    assert row["n"] == len(trials)
    assert row["r2_mean"] == pytest.approx(tuned.mean())
    assert row["r2_std"] == pytest.approx(tuned.std(ddof=1))
    assert row["mae_mean"] == pytest.approx((1 - tuned).mean())
    assert row["n_pairs"] == len(trials)
    assert row["d_r2_rel_mean"] == pytest.approx(np.mean((tuned - scratch) / np.abs(scratch)))
    mae_ft, mae_s = 1 - tuned, 1 - scratch
    assert row["d_mae_rel_mean"] == pytest.approx(np.mean((mae_ft - mae_s) / mae_s))
    assert row["d_r2_means"] == pytest.approx(tuned.mean() - scratch.mean())
    base = _group(summary, kind="scratch", size=size)
    assert base["r2_mean"] == pytest.approx(scratch.mean())
    assert np.isnan(base["d_r2_rel_mean"])


def test_failed_runs_counted_and_listed(results: pd.DataFrame) -> None:
    tables = build_tables(results)
    row = _group(tables.summary, source="fe", strategy="all", size=100)
    assert row["n_failed"] == 1
    assert list(tables.failed["job_id"]) == ["failed-1"]
    assert "out of memory" in tables.failed["error"].iloc[0]


def test_anchors_joined_where_the_study_ran_the_setting(results: pd.DataFrame) -> None:
    summary = build_tables(results).summary
    tuned = _group(summary, source="fe", strategy="all", size=100)
    assert tuned["study_experiment"] == "pairwise_pt941"
    assert tuned["study_r2_mean"] == pytest.approx(0.6156)
    assert _group(summary, kind="scratch", size=800)["study_r2_mean"] == pytest.approx(0.90353)
    last = _group(summary, strategy="last")
    assert last["n"] == 1 and np.isnan(last["r2_std"])
    assert pd.isna(last["study_experiment"]) and np.isnan(last["study_r2_mean"])
    assert last["label"] == "fe → ph · last · reuse · PT 941"


def test_pretrain_summary(results: pd.DataFrame) -> None:
    pretrain = build_tables(results).pretrain
    assert list(pretrain["job_id"]) == ["pt-fe"]
    assert pretrain["minutes"].iloc[0] == pytest.approx(30.0)
    assert pretrain["test_r2"].iloc[0] == pytest.approx(0.9)


def test_edge_cases_do_not_break_the_tables(results: pd.DataFrame) -> None:
    one = build_tables(results.iloc[[0]])
    assert len(one.summary) == 1 and one.summary["n"].iloc[0] == 1
    failed = build_tables(results.assign(status="failed", test_r2=np.nan))
    assert (failed.summary["n"] == 0).all() and len(failed.failed) == len(results)
    assert build_tables(results[results["kind"] == "pretrain"]).summary.empty
    # No scratch run to pair with: no change, but the means are still there.
    alone = build_tables(results[results["kind"] == "finetune"]).summary
    assert alone["d_r2_rel_mean"].isna().all() and alone["r2_mean"].notna().all()
    # Columns the runner did not write are treated as empty.
    minimal = results[["job_id", "kind", "status", "target", "source", "size", "test_r2"]]
    assert len(build_tables(minimal).summary) == 4
