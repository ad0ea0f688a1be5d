"""What ``matxfer demo`` reports: per size, scratch against fine-tuned over one or more seeds.

With one seed the demo shows that seed's R² and MAE and says how far they move
from seed to seed. With several (``--seeds 0,1,2,3,4``) each row is the mean ±
standard deviation over the seeds, and the gain is the mean of the paired
differences fine-tuned − scratch at the same seed, with its standard error
(SE = std / √n): the figure to quote (Devi, Butler & Sai Gautam, arXiv
2406.13142, report means ± std over five trials).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.table import Table
from rich.text import Text

from matxfer.training.metrics import mean_std_se
from matxfer.training.outputs import save_figure
from matxfer.training.rundir import PREDICTIONS_TEST_FILE

#: The study's 5-trial mean test R² on phonons (paper configuration).
STUDY_R2 = {"scratch": {100: 0.534, 800: 0.904}, "finetuned": {100: 0.616, 800: 0.946}}

#: Shown under a one-seed table: single runs at 100 structures move by about this much.
ONE_SEED_NOTE = (
    "one seed: at 100 structures test R² moves by about ±0.1 from seed to seed; "
    "--seeds 0,1,2,3,4 gives mean ± std and the paired gain with its standard error"
)

MODELS = ("scratch", "finetuned")


def _pick(rows: Sequence[Mapping[str, Any]], size: int, model: str) -> list[Mapping[str, Any]]:
    return sorted(
        (r for r in rows if r["size"] == size and r["model"] == model),
        key=lambda r: r["seed"],
    )


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (size, model): the seeds, mean and std of test R² and MAE, mean seconds."""
    out = []
    for size in sorted({r["size"] for r in rows}):
        for model in MODELS:
            runs = _pick(rows, size, model)
            r2 = mean_std_se([r["r2"] for r in runs])
            mae = mean_std_se([r["mae"] for r in runs])
            out.append(
                {
                    "size": size,
                    "model": model,
                    "seeds": [r["seed"] for r in runs],
                    "r2_mean": r2[0],
                    "r2_std": r2[1],
                    "mae_mean": mae[0],
                    "mae_std": mae[1],
                    "seconds_mean": float(np.mean([r["seconds"] for r in runs])),
                    "epochs_trained": [r["epochs_trained"] for r in runs],
                    "study_r2": STUDY_R2[model].get(size),
                }
            )
    return out


def gains(rows: Sequence[Mapping[str, Any]]) -> dict[int, dict[str, float]]:
    """Per size, fine-tuned against scratch at the same seeds.

    ``r2_gain_percent`` and ``mae_reduction_percent`` compare the means;
    ``d_r2``/``d_mae`` are the means of the paired differences (fine-tuned −
    scratch) with their standard errors ``d_r2_se``/``d_mae_se`` (NaN for one
    seed), and ``wins`` counts the seeds where fine-tuning had the higher R².
    """
    out = {}
    for size in sorted({r["size"] for r in rows}):
        scratch = {r["seed"]: r for r in _pick(rows, size, "scratch")}
        tuned = {r["seed"]: r for r in _pick(rows, size, "finetuned")}
        seeds = sorted(scratch.keys() & tuned.keys())
        d_r2 = mean_std_se([tuned[s]["r2"] - scratch[s]["r2"] for s in seeds])
        d_mae = mean_std_se([tuned[s]["mae"] - scratch[s]["mae"] for s in seeds])
        r2_s = float(np.mean([scratch[s]["r2"] for s in seeds]))
        mae_s = float(np.mean([scratch[s]["mae"] for s in seeds]))
        out[size] = {
            "n_seeds": len(seeds),
            "r2_gain_percent": 100 * d_r2[0] / abs(r2_s),
            "mae_reduction_percent": -100 * d_mae[0] / mae_s,
            "d_r2": d_r2[0],
            "d_r2_se": d_r2[2],
            "d_mae": d_mae[0],
            "d_mae_se": d_mae[2],
            "wins": sum(tuned[s]["r2"] > scratch[s]["r2"] for s in seeds),
        }
    return out


def _spread(mean: float, std: float, fmt: str) -> str:
    return f"{mean:{fmt}}" if np.isnan(std) else f"{mean:{fmt}} ± {std:{fmt}}"


def _change(gain: Mapping[str, float]) -> tuple[Text, Text]:
    """The change row's R² and MAE cells (percent change of the means)."""
    return (
        Text(
            f"{gain['r2_gain_percent']:+.1f}%",
            style="green" if gain["r2_gain_percent"] > 0 else "red",
        ),
        Text(
            f"{-gain['mae_reduction_percent']:+.1f}%",
            style="green" if gain["mae_reduction_percent"] > 0 else "red",
        ),
    )


def _paired_note(size: int, gain: Mapping[str, float]) -> str:
    """One caption line: the paired gain at ``size`` over the seeds, with its SE."""
    return (
        f"size {size}: fine-tuned − scratch at the same seed, R² {gain['d_r2']:+.3f} ± "
        f"{gain['d_r2_se']:.3f} (SE), MAE {gain['d_mae']:+.4f} ± {gain['d_mae_se']:.4f}; "
        f"fine-tuning ahead at {gain['wins']} of {gain['n_seeds']} seeds"
    )


def results_table(
    rows: Sequence[Mapping[str, Any]], seconds: float, leakage: Mapping[int, str]
) -> Table:
    """Scratch vs fine-tuned per size: R², MAE (mean ± std over seeds), the gain, the study."""
    seeds = sorted({r["seed"] for r in rows})
    r2_label = "test R²" if len(seeds) == 1 else f"test R² ({len(seeds)} seeds)"
    table = Table(
        "size",
        "model",
        r2_label,
        "MAE",
        "study R²",
        "epochs",
        "time",
        title="phonon peak (127 test structures): fine-tuned from formation energy vs from scratch",
    )
    gain = gains(rows)
    for row in summarise(rows):
        study = f"{row['study_r2']:.3f}" if row["study_r2"] is not None else "-"
        epochs = sorted(set(row["epochs_trained"]))
        table.add_row(
            str(row["size"]),
            row["model"],
            _spread(row["r2_mean"], row["r2_std"], ".3f"),
            _spread(row["mae_mean"], row["mae_std"], ".4f"),
            study,
            "/".join(map(str, epochs)),
            f"{row['seconds_mean']:.0f} s" + ("" if len(seeds) == 1 else " each"),
        )
        if row["model"] == "finetuned":
            table.add_row("", "change", *_change(gain[row["size"]]), "", "", "", end_section=True)
    if len(seeds) == 1:
        notes = [ONE_SEED_NOTE]
    else:
        notes = [f"mean ± std over seeds {', '.join(map(str, seeds))}"]
        notes += [_paired_note(size, g) for size, g in gain.items()]
    notes.append(
        f"total {seconds:.0f} s this call; units: the study's normalised targets; "
        f"leakage: {next(iter(leakage.values()), '-')}"
    )
    table.caption = "\n".join(notes)
    return table


def plot_summary(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    run_dir: Callable[[str, int, int], Path],
    parity_seed: int,
) -> None:
    """Test R² per size (bars: mean, whiskers: std over seeds; study values as markers)
    and the parity plot at the smallest size and ``parity_seed`` (``run_dir(model, size,
    seed)`` is a run's directory)."""
    summary = summarise(rows)
    sizes = sorted({r["size"] for r in summary})
    figure = Figure(figsize=(11, 4.2))
    bars, parity = figure.subplots(1, 2)
    width = 0.38
    for offset, model, color in [
        (-width / 2, "scratch", "tab:grey"),
        (width / 2, "finetuned", "tab:blue"),
    ]:
        cells = [next(r for r in summary if r["size"] == s and r["model"] == model) for s in sizes]
        positions = np.arange(len(sizes)) + offset
        std = [0.0 if np.isnan(c["r2_std"]) else c["r2_std"] for c in cells]
        drawn = bars.bar(
            positions,
            [c["r2_mean"] for c in cells],
            width,
            yerr=std if any(std) else None,
            capsize=4,
            color=color,
            label="from scratch" if model == "scratch" else "fine-tuned (FE → PH)",
        )
        bars.bar_label(drawn, fmt="%.3f", label_type="center", color="white", fontsize=9)
        known = [(p, c["study_r2"]) for p, c in zip(positions, cells, strict=True) if c["study_r2"]]
        if known:
            bars.scatter(
                *zip(*known, strict=True),
                marker="_",
                s=400,
                color="tab:red",
                label="study (5-trial mean)" if model == "scratch" else None,
            )
    bars.set_xticks(np.arange(len(sizes)), [f"{s} structures" for s in sizes])
    bars.set_ylabel("test R² (127 phonon test structures)")
    lowest = min(c["r2_mean"] - (0.0 if np.isnan(c["r2_std"]) else c["r2_std"]) for c in summary)
    bars.set_ylim(min(0.0, lowest - 0.05), 1.18)
    bars.legend(loc="upper center", ncol=3, fontsize=8)
    bars.set_title("phonon peak: fine-tuned vs from scratch")
    for model, color in [("scratch", "tab:grey"), ("finetuned", "tab:blue")]:
        frame = pd.read_csv(run_dir(model, sizes[0], parity_seed) / PREDICTIONS_TEST_FILE)
        r2 = next(r["r2"] for r in _pick(rows, sizes[0], model) if r["seed"] == parity_seed)
        parity.scatter(
            frame["target"],
            frame["prediction"],
            s=10,
            alpha=0.6,
            color=color,
            label=f"{'scratch' if model == 'scratch' else 'fine-tuned'} (R² {r2:.3f})",
        )
    low, high = (float(x) for x in parity.get_xlim())
    parity.plot([low, high], [low, high], color="black", linewidth=1)
    parity.set_xlabel("true (normalised units)")
    parity.set_ylabel("predicted")
    parity.set_title(f"test set, {sizes[0]} training structures, seed {parity_seed}")
    parity.legend(loc="upper left")
    figure.tight_layout()
    save_figure(figure, path)
