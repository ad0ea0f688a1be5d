"""The calibration figure of ``evaluate --interval``: error vs spread and coverage curve.

One row per target, two panels: the binned RMSE against the root mean spread of
:func:`~matxfer.uncertainty.diagnostics.binned_errors` (a calibrated spread lies on
the diagonal; log axes when every bin is positive), and the observed coverage of
the conformal intervals against their nominal level (on the diagonal when
calibrated; the chosen ``--interval`` marked). Saved as PNG and SVG by the study report's
:class:`~matxfer.study.figures.FigureWriter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from matxfer.study.figures import FigureWriter


def plot_calibration(folder: Path, stem: str, by_target: dict[str, dict[str, Any]]) -> list[Path]:
    """Draw ``stem.png`` and ``stem.svg`` in ``folder``; returns their paths.

    Args:
        folder: Where the files go.
        stem: File name without suffix.
        by_target: :func:`~matxfer.uncertainty.diagnostics.interval_metrics` per target.
    """
    figure = Figure(figsize=(9.0, 4.2 * len(by_target)))
    axes = figure.subplots(len(by_target), 2, squeeze=False)
    for (name, stats), (errors, curve) in zip(by_target.items(), axes, strict=True):
        bins = stats["bins"]
        rmv = [b["rmv"] for b in bins]
        rmse = [b["rmse"] for b in bins]
        low, top = min([*rmv, *rmse, 1e300]) / 1.2, max([*rmv, *rmse, 1e-12]) * 1.2
        errors.plot([low, top], [low, top], color="grey", linewidth=1, label="calibrated")
        errors.plot(rmv, rmse, "o-", label=f"ρ(std, |err|) {stats['spearman_std_abs_error']:.2f}")
        if low > 0:  # spreads span decades: log axes keep the small-spread bins apart
            errors.set_xscale("log")
            errors.set_yscale("log")
            for axis in (errors.xaxis, errors.yaxis):
                axis.set_minor_formatter(NullFormatter())  # unlabelled: they overlap
        errors.set_xlabel(f"root mean ensemble std ({name})")
        errors.set_ylabel(f"RMSE ({name})")
        errors.set_title(f"{name}: error vs spread (n={stats['n']}, {len(bins)} bins)")
        errors.legend(loc="upper left")
        levels, observed = stats["curve"]["level"], stats["curve"]["observed"]
        curve.plot([0, 1], [0, 1], color="grey", linewidth=1, label="ideal")
        curve.plot(levels, observed, "o-", markersize=3, label="conformal intervals")
        curve.axvline(stats["level"], color="tab:red", linewidth=0.8, linestyle="--")
        curve.set_xlabel("nominal coverage")
        curve.set_ylabel("observed coverage")
        curve.set_title(
            f"{name}: {stats['coverage']:.1%} at {stats['level']:.0%}, "
            f"area {stats['miscalibration_area']:.3f}"
        )
        curve.set_xlim(0, 1)
        curve.set_ylim(0, 1)
        curve.legend(loc="upper left")
    writer = FigureWriter(folder)
    writer.save(figure, stem)
    return writer.paths
