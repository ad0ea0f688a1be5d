"""The study report: Markdown and CSV tables plus figures from a study's results.

:func:`write_report` reads ``STUDY/results`` (:func:`matxfer.study.store.read_results`),
summarises it (:func:`matxfer.study.tables.build_tables`), draws the figures
(:mod:`matxfer.study.figures`) and writes, under ``STUDY/report`` by default::

    report.md      per FT target: R² and MAE mean ± std, n, change vs scratch, the
                   study's published numbers beside ours; pre-training; failed jobs
    summary.csv    the per-setting table behind it (every column)
    runs.csv       every finished scratch / fine-tuning run with its scratch pair
    pretrain.csv   pre-training jobs
    failed.csv     failed jobs and their errors
    figures/       PNG + SVG of each figure
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from matxfer.study.anchors import CITATION
from matxfer.study.figures import draw_figures
from matxfer.study.selection import study_table
from matxfer.study.tables import (
    OPTIONAL_LABEL_KEYS,
    ReportTables,
    build_tables,
    varying_settings,
)

#: Default report folder inside the study directory.
REPORT_DIR = "report"

DEFINITIONS = f"""\
Means and sample standard deviations (ddof = 1) are over the trials and seeds of
each setting; n counts its finished runs. Metrics are on each run's test set in
original units (for the study's datasets these are its normalised units).
**Paired change vs scratch**: each fine-tuned run against the scratch run of the
same target, FT size, trial, seed and profile, ΔR² = (R²_ft − R²_scratch) / |R²_scratch|
and ΔMAE = (MAE_ft − MAE_scratch) / MAE_scratch, averaged over the setting's runs
(negative ΔMAE = better). **Δ of means**: the setting's mean minus the mean of all
scratch runs of the same target, FT size and profile.
**Study**: the published mean ± std over five trials where the study ran the same
setting ({CITATION}); fine-tuning anchors are for strategy `all` only.
"""


@dataclass
class ReportResult:
    """What :func:`write_report` wrote.

    Attributes:
        markdown: ``report.md``.
        csv: The CSV tables.
        figures: Every figure file (PNG and SVG).
        notes: Figures skipped and why (also listed in the report).
    """

    markdown: Path
    csv: list[Path]
    figures: list[Path]
    notes: list[str] = field(default_factory=list)


def _num(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def _mean_std(mean: object, std: object, digits: int = 3) -> str:
    text = _num(mean, digits)
    if text != "–" and isinstance(std, float) and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text


def _percent(value: object, std: object = None) -> str:
    if not isinstance(value, float) or not math.isfinite(value):
        return "–"
    text = f"{100 * value:+.1f} %"
    if isinstance(std, float) and math.isfinite(std):
        text += f" ± {100 * std:.1f}"
    return text


def _cell(value: object) -> str:
    """Text safe inside a Markdown table cell (one line, pipes escaped)."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fixed_settings(summary: pd.DataFrame) -> str:
    """``'lr 0.001 (scratch), 0.0001 (finetune); profile fast'``: the settings each kind
    runs with one value of (labels name those that vary)."""
    varying = varying_settings(summary)
    parts = []
    for key in OPTIONAL_LABEL_KEYS:
        values = {
            kind: _cell(rows[key].dropna().iloc[0])
            for kind, rows in summary.groupby("kind")
            if key not in varying[kind] and rows[key].notna().any()
        }
        if len(set(values.values())) == 1:
            parts.append(f"{key} {next(iter(values.values()))}")
        elif values:
            parts.append(f"{key} " + ", ".join(f"{v} ({k})" for k, v in values.items()))
    return "; ".join(parts)


def _target_section(target: str, rows: pd.DataFrame) -> str:
    header = ["model", "FT size", "n", "R²", "MAE", "ΔR² paired", "ΔMAE paired"]
    header += ["ΔR² of means", "ΔMAE of means", "study R²", "study MAE"]
    body = []
    for _, row in rows.iterrows():
        n = f"{row['n']}" + (f" (+{row['n_failed']} failed)" if row["n_failed"] else "")
        body.append(
            [
                row["label"],
                f"{row['size']:g}" if pd.notna(row["size"]) else "–",
                n,
                _mean_std(row["r2_mean"], row["r2_std"]),
                _mean_std(row["mae_mean"], row["mae_std"], 4),
                _percent(row["d_r2_rel_mean"], row["d_r2_rel_std"]),
                _percent(row["d_mae_rel_mean"], row["d_mae_rel_std"]),
                _num(row["d_r2_means"]),
                _num(row["d_mae_means"], 4),
                _mean_std(row["study_r2_mean"], row["study_r2_std"]),
                _mean_std(row["study_mae_mean"], row["study_mae_std"], 4),
            ]
        )
    return f"## FT target: {target}\n\n{_table(header, body)}\n"


def render_markdown(
    tables: ReportTables,
    title: str,
    figures: list[Path] | None = None,
    notes: list[str] | None = None,
    counts: tuple[int, int] | None = None,
) -> str:
    """The report as Markdown.

    Args:
        tables: From :func:`build_tables`.
        title: The study's name.
        figures: PNG paths to embed, relative to the Markdown file.
        notes: Lines listed under "Notes" (figures skipped, ...).
        counts: (finished jobs, failed jobs), for the header line.
    """
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    parts = [f"# Study report: {title}\n", f"Written {date}."]
    if counts is not None:
        parts[-1] += f" Jobs: {counts[0]} finished, {counts[1]} failed."
    parts.append("\n" + DEFINITIONS)
    summary = tables.summary
    if summary.empty:
        parts.append("No scratch or fine-tuning results yet.\n")
    fixed = _fixed_settings(summary)
    if fixed:
        parts.append(f"Settings not named in the labels: {fixed}.\n")
    for target, rows in summary.groupby("target", sort=True):
        parts.append(_target_section(str(target), rows))
    if not tables.pretrain.empty:
        body = [
            [
                r["job_id"],
                r["target"],
                f"{r['pt_size']:g}" if pd.notna(r["pt_size"]) else "all",
                f"{r['seed']:g}" if pd.notna(r["seed"]) else "–",
                r["status"],
                _num(r["test_r2"]),
                _num(r["test_mae"], 4),
                _num(r["minutes"], 1),
                _cell(r["stopped_by"]) if pd.notna(r["stopped_by"]) else "–",
            ]
            for _, r in tables.pretrain.iterrows()
        ]
        header = ["job", "PT", "PT size", "seed", "status", "test R²", "test MAE", "minutes"]
        parts.append("## Pre-training\n\n" + _table([*header, "stopped by"], body) + "\n")
    if not tables.failed.empty:
        lines = ["## Failed jobs\n"]
        for _, r in tables.failed.iterrows():
            where = ", ".join(
                f"{key} {r[key]:g}" if isinstance(r[key], float) else f"{key} {r[key]}"
                for key in ("kind", "target", "source", "size", "trial", "seed", "strategy")
                if pd.notna(r[key])
            )
            lines.append(f"- `{r['job_id']}` ({where}): {_cell(r['error'] or 'no error recorded')}")
        parts.append("\n".join(lines) + "\n")
    if figures:
        parts.append(
            "## Figures\n\n" + "\n\n".join(f"![{p.stem}]({p.as_posix()})" for p in figures) + "\n"
        )
    if notes:
        parts.append("## Notes\n\n" + "\n".join(f"- {_cell(note)}" for note in notes) + "\n")
    return "\n".join(parts).rstrip() + "\n"


def write_tables(tables: ReportTables, out: Path) -> list[Path]:
    """``summary.csv``, ``runs.csv``, ``pretrain.csv`` and ``failed.csv`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in ("summary", "runs", "pretrain", "failed"):
        path = out / f"{name}.csv"
        getattr(tables, name).to_csv(path, index=False)
        paths.append(path)
    return paths


def write_report(
    study_dir: Path, out: Path | None = None, results: pd.DataFrame | None = None
) -> ReportResult:
    """Write the report of a study.

    Args:
        study_dir: The study directory.
        out: Report folder (default: ``STUDY/report``).
        results: The results table, when already read (default: read ``study_dir``).

    Raises:
        MatxferError: ``study_dir`` is not a study directory.
    """
    study_dir = Path(study_dir)
    frame = study_table(study_dir) if results is None else results
    out = Path(out) if out is not None else study_dir / REPORT_DIR
    tables = build_tables(frame)
    csv = write_tables(tables, out)
    figures, notes = draw_figures(tables, out / "figures")
    status = frame["status"] if "status" in frame else pd.Series(dtype=object)
    counts = (int((status == "done").sum()), int((status != "done").sum()))
    pngs = [path.relative_to(out) for path in figures if path.suffix == ".png"]
    markdown = out / "report.md"
    markdown.write_text(render_markdown(tables, study_dir.name, pngs, notes, counts))
    return ReportResult(markdown=markdown, csv=csv, figures=figures, notes=notes)
