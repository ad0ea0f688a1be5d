"""The study's results table summarised: one row per setting, paired with scratch.

A *group* is one setting of the study (kind, FT target, PT source, PT size,
strategy, head, learning rate, sampling, profile, FT size); its runs are the
trials and seeds. Per group: n, mean and sample std (ddof = 1, as the study) of
test R², MAE and RMSE (original units, which are the study's normalised units
for its datasets), and for fine-tuning the change against scratch:

* paired: each fine-tuned run against the scratch run of the same target, FT
  size, trial, seed and profile (the mean of those when several),
  :math:`\\Delta R^2 = (R^2_{ft} - R^2_{s}) / |R^2_{s}|` and
  :math:`\\Delta \\mathrm{MAE} = (\\mathrm{MAE}_{ft} - \\mathrm{MAE}_{s}) / \\mathrm{MAE}_{s}`,
  then averaged over the group's runs;
* difference of means: the group's mean minus the mean of all scratch runs of
  the same target, FT size and profile.

Where the study (Devi, Butler & Sai Gautam 2024) published the same setting,
its mean and std are joined (:func:`matxfer.study.anchors.match_anchor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from matxfer.study.anchors import match_anchor

#: What makes a group: everything but the trial and seed.
GROUP_KEYS = [
    "target",
    "kind",
    "source",
    "pt_size",
    "strategy",
    "head",
    "lr",
    "sampling",
    "profile",
    "size",
]
#: A fine-tuned run and its scratch baseline share these.
PAIR_KEYS = ["target", "size", "trial", "seed", "profile"]
#: Scratch runs averaged into the difference of means share these.
SCRATCH_MEAN_KEYS = ["target", "size", "profile"]
#: Columns the tables read; absent ones are treated as empty.
USED_COLUMNS = [
    *GROUP_KEYS,
    "job_id",
    "status",
    "error",
    "trial",
    "seed",
    "test_r2",
    "test_mae",
    "test_rmse",
    "seconds",
    "epochs_trained",
    "best_epoch",
    "stopped_by",
    "run_dir",
]
NUMERIC = ["pt_size", "size", "trial", "seed", "lr", "test_r2", "test_mae", "test_rmse", "seconds"]
KIND_ORDER = {"scratch": 0, "finetune": 1, "pretrain": 2}


@dataclass
class ReportTables:
    """The report's tables.

    Attributes:
        summary: One row per scratch / fine-tuning group (:data:`GROUP_KEYS`) with
            ``n``, ``n_failed``, ``r2_mean``, ``r2_std``, ``mae_mean``, ``mae_std``,
            ``rmse_mean``, ``n_pairs``, ``d_r2_rel_mean``, ``d_r2_rel_std``,
            ``d_mae_rel_mean``, ``d_mae_rel_std`` (paired change vs scratch, fractions),
            ``d_r2_means``, ``d_mae_means`` (difference of means), ``label``, and the
            study's ``study_experiment``, ``study_r2_mean`` ... ``study_mae_std``.
        runs: The finished scratch / fine-tuning runs, each with its paired
            ``scratch_r2``, ``scratch_mae``, ``d_r2_rel``, ``d_mae_rel``.
        pretrain: One row per pre-training job: metrics and minutes.
        failed: One row per failed job with its error.
    """

    summary: pd.DataFrame
    runs: pd.DataFrame
    pretrain: pd.DataFrame
    failed: pd.DataFrame


def normalise(results: pd.DataFrame) -> pd.DataFrame:
    """A copy with every :data:`USED_COLUMNS` present and numbers as floats."""
    frame = results.copy()
    for column in USED_COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    # Object columns: None and NaN both mean "not set"; one spelling keeps groups whole.
    for column in ("source", "strategy", "head", "sampling", "profile", "kind", "target"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


#: Settings named in a group's label only when they vary among the groups of its kind.
OPTIONAL_LABEL_KEYS = ("lr", "sampling", "profile")


def group_label(row: pd.Series, varying: frozenset[str] = frozenset()) -> str:
    """``'scratch'`` or ``'fe → ph'``, then the settings that are set (strategy, head,
    PT size) and those of :data:`OPTIONAL_LABEL_KEYS` named in ``varying``."""
    parts = ["scratch" if row["kind"] == "scratch" else f"{row['source']} → {row['target']}"]
    parts += [str(row[key]) for key in ("strategy", "head") if pd.notna(row[key])]
    if pd.notna(row["pt_size"]):
        parts.append(f"PT {int(row['pt_size'])}")
    parts += [f"{key} {row[key]}" for key in OPTIONAL_LABEL_KEYS if key in varying]
    return " · ".join(parts)


def varying_settings(summary: pd.DataFrame) -> dict[str, frozenset[str]]:
    """Per kind, the :data:`OPTIONAL_LABEL_KEYS` that take several values among its groups
    (scratch and fine-tuning usually differ in learning rate; only variation within a
    kind needs naming in labels)."""
    return {
        kind: frozenset(k for k in OPTIONAL_LABEL_KEYS if rows[k].nunique(dropna=False) > 1)
        for kind, rows in summary.groupby("kind")
    }


def _merge(left: pd.DataFrame, right: pd.DataFrame, on: list[str], how: str) -> pd.DataFrame:
    """``left.merge(right)`` with the keys cast alike on both sides: a key column of an
    empty or all-``None`` frame otherwise comes back float and refuses to merge."""
    frames = []
    for frame in (left, right):
        frame = frame.copy()
        for key in on:
            frame[key] = frame[key].astype(float if key in NUMERIC else object)
        frames.append(frame)
    return frames[0].merge(frames[1], on=on, how=how)  # type: ignore[arg-type]


def _paired_runs(done: pd.DataFrame) -> pd.DataFrame:
    """Finished scratch / fine-tuning runs; fine-tuned ones with their scratch pair."""
    scratch = (
        done[done["kind"] == "scratch"]
        .groupby(PAIR_KEYS, dropna=False)[["test_r2", "test_mae"]]
        .mean()
        .rename(columns={"test_r2": "scratch_r2", "test_mae": "scratch_mae"})
        .reset_index()
    )
    runs = _merge(done[done["kind"].isin(["scratch", "finetune"])], scratch, PAIR_KEYS, "left")
    tuned = runs["kind"] == "finetune"
    runs["d_r2_rel"] = np.where(
        tuned, (runs["test_r2"] - runs["scratch_r2"]) / runs["scratch_r2"].abs(), np.nan
    )
    runs["d_mae_rel"] = np.where(
        tuned, (runs["test_mae"] - runs["scratch_mae"]) / runs["scratch_mae"], np.nan
    )
    # A zero scratch R² or MAE gives ±inf: no meaningful relative change.
    runs[["d_r2_rel", "d_mae_rel"]] = runs[["d_r2_rel", "d_mae_rel"]].replace(
        [np.inf, -np.inf], np.nan
    )
    return runs


def _with_anchors(summary: pd.DataFrame) -> pd.DataFrame:
    anchors = [
        match_anchor(
            row["kind"], row["source"], row["target"], row["size"], row["pt_size"], row["strategy"]
        )
        for _, row in summary.iterrows()
    ]
    summary["study_experiment"] = [a.experiment if a else None for a in anchors]
    for field in ("r2_mean", "r2_std", "mae_mean", "mae_std"):
        summary[f"study_{field}"] = [getattr(a, field) if a else math.nan for a in anchors]
    return summary


def _summary(frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    models = frame[frame["kind"].isin(["scratch", "finetune"])]
    if models.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "label", "n", "n_failed"])
    grouped = runs.groupby(GROUP_KEYS, dropna=False)
    summary = grouped.agg(
        n=("job_id", "size"),
        r2_mean=("test_r2", "mean"),
        r2_std=("test_r2", "std"),
        mae_mean=("test_mae", "mean"),
        mae_std=("test_mae", "std"),
        rmse_mean=("test_rmse", "mean"),
        n_pairs=("d_r2_rel", "count"),
        d_r2_rel_mean=("d_r2_rel", "mean"),
        d_r2_rel_std=("d_r2_rel", "std"),
        d_mae_rel_mean=("d_mae_rel", "mean"),
        d_mae_rel_std=("d_mae_rel", "std"),
    ).reset_index()
    failed = (
        models[models["status"] != "done"]
        .groupby(GROUP_KEYS, dropna=False)
        .size()
        .rename("n_failed")
        .reset_index()
    )
    # Groups whose every run failed still get a row (n = 0).
    summary = _merge(summary, failed, GROUP_KEYS, "outer")
    summary[["n", "n_failed", "n_pairs"]] = (
        summary[["n", "n_failed", "n_pairs"]].fillna(0).astype(int)
    )
    scratch_means = (
        runs[runs["kind"] == "scratch"]
        .groupby(SCRATCH_MEAN_KEYS, dropna=False)[["test_r2", "test_mae"]]
        .mean()
        .rename(columns={"test_r2": "scratch_r2_mean", "test_mae": "scratch_mae_mean"})
        .reset_index()
    )
    summary = _merge(summary, scratch_means, SCRATCH_MEAN_KEYS, "left")
    tuned = summary["kind"] == "finetune"
    summary["d_r2_means"] = np.where(tuned, summary["r2_mean"] - summary["scratch_r2_mean"], np.nan)
    summary["d_mae_means"] = np.where(
        tuned, summary["mae_mean"] - summary["scratch_mae_mean"], np.nan
    )
    summary = summary.drop(columns=["scratch_r2_mean", "scratch_mae_mean"])
    varying = varying_settings(summary)
    summary["label"] = [group_label(row, varying[row["kind"]]) for _, row in summary.iterrows()]
    summary["_kind"] = summary["kind"].map(KIND_ORDER)
    summary = summary.sort_values(
        ["target", "_kind", "source", "strategy", "head", "pt_size", "size"], na_position="first"
    ).drop(columns="_kind")
    return _with_anchors(summary.reset_index(drop=True))


def build_tables(results: pd.DataFrame) -> ReportTables:
    """The report's tables from a results table (see ``matxfer.study.store``).

    Args:
        results: One row per job; missing columns are treated as empty, failed
            rows (``status != "done"``) only count towards ``n_failed`` and the
            failure list.
    """
    frame = normalise(results)
    done = frame[frame["status"] == "done"]
    runs = _paired_runs(done)
    pretrain = frame[frame["kind"] == "pretrain"].assign(minutes=lambda f: f["seconds"] / 60)
    pretrain = pretrain[
        [
            "job_id",
            "target",
            "pt_size",
            "seed",
            "status",
            "test_r2",
            "test_mae",
            "minutes",
            "epochs_trained",
            "best_epoch",
            "stopped_by",
        ]
    ].sort_values(["target", "pt_size", "seed"], na_position="first")
    failed = frame[frame["status"] != "done"][
        ["job_id", "kind", "target", "source", "size", "trial", "seed", "strategy", "head", "error"]
    ]
    return ReportTables(
        summary=_summary(frame, runs),
        runs=runs,
        pretrain=pretrain.reset_index(drop=True),
        failed=failed.reset_index(drop=True),
    )
