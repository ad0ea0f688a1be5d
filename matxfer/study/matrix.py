"""The accuracy matrix: per property, our scratch and fine-tuned accuracy at one FT size
beside the study's published scratch and best fine-tuning.

For each of the study's seven properties (Devi, Butler & Sai Gautam 2024,
arXiv 2406.13142) at one FT size, from the finished runs of one or more study
directories (:func:`matxfer.study.tables.build_tables`):

* scratch: test R² and MAE mean ± sample std over every finished scratch run of
  that property and size (all the studies' trials and seeds pooled), and minutes
  per run;
* each fine-tuning group (source and settings, labelled as in the study report):
  the same numbers; the best is the one with the highest mean R²;
* the study's scratch mean and its best fine-tuning mean (the highest mean R² of
  its pair-wise PT-941 and MPT leave-one-out rows, :mod:`matxfer.study.anchors`).

A property *beats the study's scratch* when our scratch mean R² ≥ the study's,
and *its best FT* when our best fine-tuning mean R² ≥ the study's best and
> our own scratch mean R² (fine-tuning that does not beat our own scratch is no
transfer). Only groups measured on at least as many runs as our scratch compete
for best FT. Unmeasured properties beat nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from matxfer.study.anchors import load_anchors
from matxfer.study.tables import GROUP_KEYS, build_tables, group_label, varying_settings

#: The study's properties, in its order.
PROPERTIES = ("fe", "bg", "gv", "ph", "dc", "pz", "ebg")
#: The study's fine-tuning experiments whose best mean is the yardstick.
STUDY_FT_EXPERIMENTS = ("pairwise_pt941", "mpt_leave_one_out")


@dataclass(frozen=True)
class Accuracy:
    """Test accuracy of a set of runs (NaN where not defined, e.g. std of one run).

    Attributes:
        label: What the runs are (``scratch``, ``mpt7 → ph · all · new``).
        n: Finished runs.
        r2_mean, r2_std, mae_mean, mae_std: Test R² and MAE (sample std, ddof = 1).
        minutes: Mean minutes per run (runs with a measured time).
    """

    label: str
    n: int
    r2_mean: float
    r2_std: float
    mae_mean: float
    mae_std: float
    minutes: float


@dataclass
class PropertyRow:
    """One property of the matrix.

    Attributes:
        target: The property.
        scratch: Our scratch runs (``None``: not measured).
        finetune: Our fine-tuning groups, best first.
        study_scratch: The study's scratch result (``None``: it has none).
        study_best_ft: The study's best fine-tuning (``None``: it has none).
    """

    target: str
    scratch: Accuracy | None
    finetune: list[Accuracy] = field(default_factory=list)
    study_scratch: Accuracy | None = None
    study_best_ft: Accuracy | None = None

    @property
    def measured(self) -> bool:
        """Any of our runs at this property and size."""
        return self.scratch is not None or bool(self.finetune)

    def is_candidate(self, group: Accuracy) -> bool:
        """Whether ``group`` may be the best FT: measured on at least as many runs as our
        scratch, so that one lucky seed never stands in for a mean."""
        return self.scratch is None or group.n >= self.scratch.n

    @property
    def best_ft(self) -> Accuracy | None:
        """Our fine-tuning group with the highest mean R² among the candidates."""
        return next((group for group in self.finetune if self.is_candidate(group)), None)

    @property
    def beats_scratch(self) -> bool:
        """Our scratch mean R² ≥ the study's scratch mean R²."""
        mine, study = self.scratch, self.study_scratch
        return mine is not None and study is not None and mine.r2_mean >= study.r2_mean

    @property
    def beats_best_ft(self) -> bool:
        """Our best FT mean R² ≥ the study's best FT mean and > our scratch mean."""
        best, study = self.best_ft, self.study_best_ft
        if best is None or study is None or self.scratch is None:
            return False
        return best.r2_mean >= study.r2_mean and best.r2_mean > self.scratch.r2_mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers (NaN as ``None``)."""
        found = {
            "scratch": self.scratch,
            "best_ft": self.best_ft,
            "study_scratch": self.study_scratch,
            "study_best_ft": self.study_best_ft,
        }
        data = {
            "target": self.target,
            "measured": self.measured,
            **{key: asdict(value) if value else None for key, value in found.items()},
            "finetune": [asdict(a) for a in self.finetune],
            "beats_study_scratch": self.beats_scratch,
            "beats_study_best_ft": self.beats_best_ft,
        }
        return _finite(data)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def run_accuracy(label: str, runs: pd.DataFrame) -> Accuracy:
    """Mean ± std of ``runs``' ``test_r2`` and ``test_mae``, mean ``seconds`` as minutes."""
    return Accuracy(
        label=label,
        n=len(runs),
        r2_mean=float(runs["test_r2"].mean()),
        r2_std=float(runs["test_r2"].std()),
        mae_mean=float(runs["test_mae"].mean()),
        mae_std=float(runs["test_mae"].std()),
        minutes=float(runs["seconds"].mean() / 60),
    )


def _published(anchor: pd.Series) -> Accuracy:
    """An anchors row as an :class:`Accuracy` (``n``: the study's trials; no timing)."""
    numbers = {k: float(anchor[k]) for k in ("r2_mean", "r2_std", "mae_mean", "mae_std")}
    return Accuracy(str(anchor["label"]), int(anchor["n_trials"]), **numbers, minutes=math.nan)


def _study_numbers(row: PropertyRow, size: int, anchors: pd.DataFrame) -> None:
    rows = anchors[(anchors["target"] == row.target) & (anchors["size"] == size)]
    scratch = rows[rows["experiment"] == "scratch"]
    if not scratch.empty:
        row.study_scratch = _published(scratch.iloc[0])
    tuned = rows[rows["experiment"].isin(STUDY_FT_EXPERIMENTS)].dropna(subset=["r2_mean"])
    if not tuned.empty:
        row.study_best_ft = _published(tuned.loc[tuned["r2_mean"].idxmax()])


def accuracy_matrix(
    results: pd.DataFrame, size: int = 800, anchors: pd.DataFrame | None = None
) -> list[PropertyRow]:
    """The matrix at FT size ``size``, one row per property of :data:`PROPERTIES`.

    Args:
        results: Results tables of one or more studies, concatenated
            (:func:`matxfer.study.store.read_results`); a job stored twice counts once.
        size: FT size (training + validation records).
        anchors: The study's numbers (default: :func:`~matxfer.study.anchors.load_anchors`).
    """
    anchors = load_anchors() if anchors is None else anchors
    tables = build_tables(results.drop_duplicates("job_id"))
    runs = tables.runs[tables.runs["size"] == size]
    # Labelled as in the study report: settings that vary among its groups are named.
    varying = varying_settings(tables.summary).get("finetune", frozenset())
    matrix = []
    for target in PROPERTIES:
        mine = runs[runs["target"] == target]
        scratch = mine[mine["kind"] == "scratch"]
        tuned = mine[mine["kind"] == "finetune"]
        groups = [
            run_accuracy(group_label(group.iloc[0], varying), group)
            for _, group in tuned.groupby(GROUP_KEYS, dropna=False)
        ]
        scratch_accuracy = run_accuracy("scratch", scratch) if len(scratch) else None
        matrix.append(property_row(target, scratch_accuracy, groups, size, anchors))
    return matrix


def property_row(
    target: str,
    scratch: Accuracy | None,
    finetune: list[Accuracy],
    size: int,
    anchors: pd.DataFrame | None = None,
) -> PropertyRow:
    """One row of the matrix from our numbers (fine-tuning groups in any order) and the
    study's at ``size`` (``anchors`` default: :func:`~matxfer.study.anchors.load_anchors`)."""
    anchors = load_anchors() if anchors is None else anchors
    row = PropertyRow(target, scratch)
    row.finetune = sorted(finetune, key=lambda a: -a.r2_mean if math.isfinite(a.r2_mean) else 0)
    _study_numbers(row, size, anchors)
    return row


def beats_line(matrix: list[PropertyRow]) -> str:
    """``beats_study: <k>/7 scratch, <m>/7 best-FT``."""
    scratch = sum(row.beats_scratch for row in matrix)
    tuned = sum(row.beats_best_ft for row in matrix)
    return f"beats_study: {scratch}/{len(matrix)} scratch, {tuned}/{len(matrix)} best-FT"


def _stats(accuracy: Accuracy) -> str:
    minutes = f", {accuracy.minutes:.1f} min/run" if math.isfinite(accuracy.minutes) else ""
    return (
        f"R² {accuracy.r2_mean:.3f} ± {accuracy.r2_std:.3f}, "
        f"MAE {accuracy.mae_mean:.4f} ± {accuracy.mae_std:.4f} (n={accuracy.n}{minutes})"
    )


def format_matrix(matrix: list[PropertyRow], size: int) -> list[str]:
    """The matrix as text lines, the :func:`beats_line` last."""
    lines = [f"accuracy matrix at FT size {size} (test R² and MAE, mean ± std over runs)"]
    for row in matrix:
        study = "; ".join(
            f"{what} {a.label}: R² {a.r2_mean:.3f}, MAE {a.mae_mean:.4f}"
            for what, a in (("study", row.study_scratch), ("study best FT", row.study_best_ft))
            if a is not None
        )
        if not row.measured:
            lines += [f"{row.target}: not measured", f"    {study}"]
            continue
        scratch = _stats(row.scratch) if row.scratch else "not measured"
        lines.append(f"{row.target}: scratch {scratch}")
        for accuracy in row.finetune:
            fewer = "" if row.is_candidate(accuracy) else " (fewer runs than scratch: not ranked)"
            lines.append(f"    {accuracy.label}: {_stats(accuracy)}{fewer}")
        best = row.best_ft.label if row.best_ft else "none (FT not measured on as many runs)"
        lines += [f"    best FT: {best}", f"    {study}"]
        verdict = [
            f"scratch {'≥' if row.beats_scratch else '<'} study",
            f"best FT {'beats' if row.beats_best_ft else 'does not beat'} study best FT",
        ]
        lines.append(f"    {'; '.join(verdict)}")
    lines.append(beats_line(matrix))
    return lines
