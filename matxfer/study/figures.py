"""The study report's figures, each saved as PNG and SVG.

* ``heatmap_{r2,mae}_size{N}``: the pair-wise matrix of Devi, Butler & Sai
  Gautam (2024): rows PT source, columns FT target, cell = paired change vs
  scratch in % at FT size N (blue = better), for the most common fine-tuning
  setting (strategy, head, PT size, ...), which the title names;
* ``ft_size_{target}``: R² and MAE against FT size, one line per setting, error
  bars = std over trials and seeds;
* ``pt_size_{target}``: R² against PT size (only when PT sizes vary);
* ``strategies_{target}``: R² per fine-tuning setting and FT size, scratch dashed
  (only when strategies or heads vary);
* ``parity_{target}``: predicted vs true test values of the best and worst run
  (by test R²), read from each run's ``predictions_test.csv``.

A figure is drawn only when the tables hold what it needs; what was skipped
and why comes back as notes for the report. Figures are built on bare
:class:`~matplotlib.figure.Figure` objects with the Agg canvas: no pyplot state,
no display needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from matxfer.study.tables import GROUP_KEYS, ReportTables
from matxfer.training.outputs import prediction_columns
from matxfer.training.rundir import PREDICTIONS_TEST_FILE

#: Fine-tuning settings besides source, target and size: one heatmap per size for the
#: most common of them.
SETTING_KEYS = ["strategy", "head", "pt_size", "lr", "sampling", "profile"]
#: Heatmap metrics: summary column, title, colour map (blue = better).
HEATMAP_METRICS = {
    "r2": ("d_r2_rel_mean", "ΔR² vs scratch (%)", "RdBu"),
    "mae": ("d_mae_rel_mean", "ΔMAE vs scratch (%)", "RdBu_r"),
}


class FigureWriter:
    """Saves figures under one folder and collects their paths and the notes of
    figures skipped."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.paths: list[Path] = []
        self.notes: list[str] = []

    def save(self, figure: Figure, stem: str) -> None:
        """Write ``stem.png`` and ``stem.svg``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(figure)
        figure.tight_layout()
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)
        for suffix in (".png", ".svg"):
            path = self.folder / f"{stem}{suffix}"
            figure.savefig(path, dpi=120)
            self.paths.append(path)

    def note(self, text: str) -> None:
        self.notes.append(text)


def _finite(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame[np.isfinite(frame[column].astype(float))]


def primary_setting(
    summary: pd.DataFrame, keys: list[str] = SETTING_KEYS
) -> dict[str, object] | None:
    """The fine-tuning setting (``keys``) with the most finished runs."""
    tuned = summary[(summary["kind"] == "finetune") & (summary["n"] > 0)]
    if tuned.empty:
        return None
    counts = tuned.groupby(keys, dropna=False)["n"].sum().sort_values(ascending=False)
    return dict(zip(keys, counts.index[0], strict=True))


def _has_setting(frame: pd.DataFrame, setting: dict[str, object]) -> pd.Series:
    keep = pd.Series(True, index=frame.index)
    for key, value in setting.items():
        keep &= frame[key].isna() if pd.isna(value) else frame[key] == value  # type: ignore[arg-type]
    return keep


def _setting_text(setting: dict[str, object]) -> str:
    """``'strategy all, head reuse, pt_size 941,\nlr 0.0001, ...'`` (three per line)."""
    items = [
        f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
        for key, value in setting.items()
        if pd.notna(value)  # type: ignore[call-overload]
    ]
    return "\n".join(", ".join(items[i : i + 3]) for i in range(0, len(items), 3))


def _log_sizes(axis: Axes, sizes: pd.Series) -> None:
    """Log x axis ticked at the sizes themselves."""
    ticks = sorted(float(v) for v in sizes.dropna().unique())
    axis.set_xscale("log")
    axis.set_xticks(ticks, [f"{v:g}" for v in ticks])
    axis.minorticks_off()


def draw_heatmaps(summary: pd.DataFrame, writer: FigureWriter) -> None:
    """One pair-wise heatmap per FT size and metric, for :func:`primary_setting`."""
    # Every PT size is a row of its own (a source pre-trained at several sizes is labelled
    # with each); the other settings are fixed to the most common one.
    setting = primary_setting(summary, [k for k in SETTING_KEYS if k != "pt_size"])
    if setting is None:
        writer.note("heatmaps: no finished fine-tuning runs")
        return
    rows = summary[(summary["kind"] == "finetune") & _has_setting(summary, setting)].copy()
    sizes_per_source = rows.groupby("source")["pt_size"].nunique(dropna=False)
    rows["source"] = [
        f"{source} (PT {pt_size:g})" if sizes_per_source[source] > 1 else source
        for source, pt_size in zip(rows["source"], rows["pt_size"], strict=True)
    ]
    # Leave-one-out MPT sources (mpt-no-ph on ph, mpt-no-dc on dc) share one row.
    rows["source"] = [
        source.removesuffix(f"-no-{target}") + "-no-FT"
        if source.endswith(f"-no-{target}")
        else source
        for source, target in zip(rows["source"], rows["target"], strict=True)
    ]
    for size, at_size in rows.groupby("size"):
        for metric, (column, title, cmap) in HEATMAP_METRICS.items():
            table = at_size.pivot_table(index="source", columns="target", values=column)
            values = table.to_numpy(dtype=float) * 100
            if not np.isfinite(values).any():
                writer.note(f"heatmap {metric} at size {size:g}: no run paired with scratch")
                continue
            limit = float(np.nanmax(np.abs(values))) or 1.0
            shape = values.shape
            figure = Figure(figsize=(max(5.0, 0.9 * shape[1] + 2.5), 0.6 * shape[0] + 2.2))
            axis = figure.subplots()
            image = axis.imshow(
                np.ma.masked_invalid(values), cmap=cmap, norm=Normalize(-limit, limit)
            )
            for (i, j), value in np.ndenumerate(values):
                if np.isfinite(value):
                    colour = "white" if abs(value) > 0.6 * limit else "black"
                    axis.text(j, i, f"{value:+.1f}", ha="center", va="center", color=colour)
            axis.set_xticks(range(len(table.columns)), list(table.columns))
            axis.set_yticks(range(len(table.index)), list(table.index))
            axis.set_xlabel("FT target")
            axis.set_ylabel("PT source")
            axis.set_title(f"{title}, FT size {size:g}\n{_setting_text(setting)}", fontsize=9)
            figure.colorbar(image, ax=axis, label="%")
            writer.save(figure, f"heatmap_{metric}_size{size:g}")


def _lines(frame: pd.DataFrame, x: str) -> Iterator[tuple[str, pd.DataFrame]]:
    """(label, rows sorted by ``x``) per setting: every group key but ``x``."""
    keys = [key for key in GROUP_KEYS if key != x]
    for _, rows in frame.groupby(keys, dropna=False):
        yield str(rows["label"].iloc[0]), rows.sort_values(x)


def _curve(axis: Axes, rows: pd.DataFrame, x: str, metric: str, label: str) -> None:
    axis.errorbar(
        rows[x],
        rows[f"{metric}_mean"],
        yerr=rows[f"{metric}_std"].fillna(0),
        marker="o",
        capsize=3,
        label=label,
    )


def draw_ft_size_curves(summary: pd.DataFrame, writer: FigureWriter) -> None:
    """R² and MAE against FT size, per FT target with at least two sizes."""
    for target, rows in summary.groupby("target"):
        rows = _finite(rows, "r2_mean")
        if rows["size"].nunique() < 2:
            writer.note(f"FT-size curves of {target}: fewer than two FT sizes with results")
            continue
        figure = Figure(figsize=(11, 4.5))
        axes = figure.subplots(1, 2)
        for label, line in _lines(rows, "size"):
            for axis, metric in zip(axes, ("r2", "mae"), strict=True):
                _curve(axis, line, "size", metric, label)
        for axis, name in zip(axes, ("test R²", "test MAE"), strict=True):
            _log_sizes(axis, rows["size"])
            axis.set_xlabel("FT size (training + validation records)")
            axis.set_ylabel(name)
        axes[0].set_title(f"{target}: mean ± std over trials")
        axes[1].legend(fontsize=7)
        writer.save(figure, f"ft_size_{target}")


def draw_pt_size_curves(summary: pd.DataFrame, writer: FigureWriter) -> None:
    """R² against PT size, per FT target whose fine-tuning used several PT sizes."""
    tuned = _finite(summary[summary["kind"] == "finetune"], "r2_mean")
    if tuned["pt_size"].nunique() < 2:
        return  # the study did not vary PT size: nothing to say
    for target, rows in tuned.groupby("target"):
        lines = [(label, line) for label, line in _lines(rows, "pt_size") if len(line) > 1]
        if not lines:
            writer.note(f"PT-size curve of {target}: no setting with two PT sizes")
            continue
        figure = Figure(figsize=(6.5, 4.5))
        axis = figure.subplots()
        for label, line in lines:
            size = line["size"].iloc[0]
            label = re.sub(r" · PT \d+", "", label)  # the x axis says the PT size
            _curve(axis, line, "pt_size", "r2", f"{label} · FT {size:g}")
        _log_sizes(axis, rows["pt_size"])
        axis.set_xlabel("PT size (records per property)")
        axis.set_ylabel("test R²")
        axis.set_title(f"{target}: mean ± std over trials")
        axis.legend(fontsize=7)
        writer.save(figure, f"pt_size_{target}")


def draw_strategy_bars(summary: pd.DataFrame, writer: FigureWriter) -> None:
    """R² per fine-tuning setting (bars) and FT size (colours), when strategies or heads vary."""
    tuned = _finite(summary[summary["kind"] == "finetune"], "r2_mean")
    if len(tuned[["strategy", "head"]].drop_duplicates()) < 2:
        return
    for target, rows in tuned.groupby("target"):
        labels = list(dict.fromkeys(rows["label"]))
        sizes = sorted(rows["size"].dropna().unique())
        width = 0.8 / max(len(sizes), 1)
        figure = Figure(figsize=(max(6.0, 1.0 * len(labels) + 2), 4.8))
        axis = figure.subplots()
        scratch = summary[(summary["kind"] == "scratch") & (summary["target"] == target)]
        for k, size in enumerate(sizes):
            at_size = rows[rows["size"] == size].set_index("label").reindex(labels)
            bars = axis.bar(
                np.arange(len(labels)) + k * width,
                at_size["r2_mean"],
                width,
                yerr=at_size["r2_std"].fillna(0),
                capsize=3,
                label=f"FT {size:g}",
            )
            base = scratch.loc[scratch["size"] == size, "r2_mean"].dropna()
            if len(base):
                axis.axhline(float(base.mean()), linestyle="--", color=bars.patches[0].get_fc())
        axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=30, ha="right")
        axis.set_ylabel("test R² (dashed: scratch)")
        axis.set_title(f"{target}: fine-tuning settings, mean ± std over trials")
        axis.legend(fontsize=7)
        writer.save(figure, f"strategies_{target}")


def _predictions(run: pd.Series) -> tuple[np.ndarray, np.ndarray] | str:
    """(true, predicted) test values of one run, or why they cannot be read."""
    path = Path(str(run["run_dir"])) / PREDICTIONS_TEST_FILE
    if not path.is_file():
        return f"{path} is missing"
    frame = pd.read_csv(path)
    label, prediction = prediction_columns(["target"])[0]
    if label not in frame or prediction not in frame:
        return f"{path} has no {label!r} and {prediction!r} columns (multi-target run?)"
    return frame[label].to_numpy(float), frame[prediction].to_numpy(float)


def draw_parity(runs: pd.DataFrame, writer: FigureWriter) -> None:
    """Parity of the best and the worst run (test R²) per FT target."""
    for target, rows in _finite(runs, "test_r2").groupby("target"):
        ranked = rows.sort_values("test_r2", ascending=False)
        chosen = {"best": ranked.iloc[0], "worst": ranked.iloc[-1]}
        if len(ranked) == 1:
            chosen.pop("worst")
        panels = []
        for which, run in chosen.items():
            data = _predictions(run)
            if isinstance(data, str):
                writer.note(f"parity plot of {target} ({which} run {run['job_id']}): {data}")
            else:
                panels.append((which, run, data))
        if not panels:
            continue
        figure = Figure(figsize=(4.5 * len(panels), 4.5))
        axes = figure.subplots(1, len(panels), squeeze=False)[0]
        for axis, (which, run, (true, predicted)) in zip(axes, panels, strict=True):
            axis.scatter(true, predicted, s=10, alpha=0.6)
            both = np.concatenate([true, predicted])
            both = both[np.isfinite(both)]
            if both.size:
                axis.plot([both.min(), both.max()], [both.min(), both.max()], color="grey", lw=1)
            axis.set_xlabel(f"true {target}")
            axis.set_ylabel(f"predicted {target}")
            trial = f", trial {run['trial']:g}" if pd.notna(run["trial"]) else ""
            axis.set_title(
                f"{which}: {run['source']}, size {run['size']:g}{trial}\n"
                f"R² {run['test_r2']:.3f}, MAE {run['test_mae']:.4g}",
                fontsize=9,
            )
        writer.save(figure, f"parity_{target}")


def draw_figures(tables: ReportTables, folder: Path) -> tuple[list[Path], list[str]]:
    """Every figure the tables support, under ``folder``.

    Returns:
        (paths written, PNG and SVG of each; notes on figures skipped and why).
    """
    writer = FigureWriter(folder)
    summary = tables.summary
    if summary.empty or not (summary["n"] > 0).any():
        writer.note("figures: no finished scratch or fine-tuning runs")
        return writer.paths, writer.notes
    draw_heatmaps(summary, writer)
    draw_ft_size_curves(summary, writer)
    draw_pt_size_curves(summary, writer)
    draw_strategy_bars(summary, writer)
    draw_parity(tables.runs, writer)
    return writer.paths, writer.notes
