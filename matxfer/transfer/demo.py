"""``matxfer demo``: transfer learning from formation energies to phonons, in minutes, offline.

Reproduces the study's headline pair on the data shipped with matxfer (Devi,
Butler & Sai Gautam, arXiv 2406.13142: formation energy → phonon peak, R² 0.616
fine-tuned vs 0.534 from scratch at 100 training structures):

1. pre-train a small ALIGNN (the ``fast`` profile's 2 + 2 layers × 64) on
   ``demo-fe`` (2,000 formation energies of cells with ≤ 12 atoms);
2. for each fine-tuning size (trial-1 subsets of the study's phonon pool,
   ``demo-ph``), train the same model from scratch and fine-tune the
   pre-trained one (every layer trains, pre-trained head reused), with the
   same config and seed (batches of 8 and 40 epochs at 100 structures, 16
   and 20 at 800); both are tested on the study's fixed 127-structure test
   set;
3. write ``demo_results.csv``/``.json``, ``demo_summary.png`` and return a
   table of R², MAE and the gain of fine-tuning.

Each step is an ordinary run directory under ``out`` (``pretrain``,
``scratch_<size>``, ``finetuned_<size>``). Finished steps are skipped on a
rerun and interrupted ones resumed, so the demo is cached and resumable;
everything is seeded, so reruns reproduce it. Measured on two otherwise idle
CPU cores: 9 minutes in all (pre-training 4, size 100 1.3, size 800 3.6);
``--sizes 100`` alone takes about 5.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from rich.table import Table
from rich.text import Text

from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import locks_directory
from matxfer.training.checkpoint import LAST_CHECKPOINT
from matxfer.training.config import TrainConfig, resolve_config
from matxfer.training.outputs import (
    as_float,
    format_metric,
    save_figure,
    write_csv,
    write_json,
)
from matxfer.training.rundir import (
    PREDICTIONS_TEST_FILE,
    is_finished,
    read_metrics,
    read_transfer_record,
)
from matxfer.transfer.heads import HeadMode

#: The study's 5-trial mean test R² on phonons (paper configuration).
STUDY_R2 = {"scratch": {100: 0.534, 800: 0.904}, "finetuned": {100: 0.616, 800: 0.946}}
SETTINGS_FILE = "demo_settings.json"
STAGE_FILE = "demo_stage.json"


@dataclass(frozen=True)
class DemoSettings:
    """What the demo trains (sizes excepted: adding a size reuses the other steps).

    Args:
        pretrain_data: Pre-training dataset (default: ``"demo-fe"``).
        finetune_data: Fine-tuning dataset with trials and a fixed test set
            (default: ``"demo-ph"``).
        trial: The study's trial whose subsets are used (default: ``1``).
        seed: Seed of every split, initialisation and shuffle (default: ``0``).
        pretrain_size: Pre-training records sampled from the pool; ``None``: all.
        pretrain_epochs: Pre-training epochs (default: ``20``).
        max_epochs: Fine-tuning/scratch epochs at the smallest sizes (default:
            ``40``); larger sizes get fewer (:meth:`epochs_for`).
        min_epochs: The fewest fine-tuning/scratch epochs (default: ``20``).
        small_batch_below: Fine-tuning sizes up to this train with batches of
            8 instead of 16: more steps for tiny sets (default: ``200``).
        model: Model settings over the ``fast`` profile's.
        strategy: Fine-tuning strategy (default: ``"all"``, the study's best).
        head: Head mode (default: ``"reuse"``, the study's pair-wise transfer).
    """

    pretrain_data: str = "demo-fe"
    finetune_data: str = "demo-ph"
    trial: int = 1
    seed: int = 0
    pretrain_size: int | None = None
    pretrain_epochs: int = 20
    max_epochs: int = 40
    min_epochs: int = 20
    small_batch_below: int = 200
    model: dict[str, Any] = field(default_factory=dict)
    strategy: str = "all"
    head: HeadMode = "reuse"

    def epochs_for(self, size: int) -> int:
        """Epochs at fine-tuning size ``size``: 16,000 / size, within the bounds
        (100 → 40, 500 → 32, 800 → 20)."""
        return max(self.min_epochs, min(self.max_epochs, 16_000 // size))

    def config(self, epochs: int, size: int | None = None) -> TrainConfig:
        """The ``fast`` profile with this demo's model, seed and ``epochs`` (and the
        batch size for fine-tuning size ``size``; ``None``: pre-training)."""
        small = size is not None and size <= self.small_batch_below
        return resolve_config(
            "fast",
            {
                "model": self.model,
                "seed": self.seed,
                "epochs": epochs,
                "batch_size": 8 if small else 16,
            },
        )


#: A smoke test: a tiny model, a few epochs, a 200-record pre-training sample.
QUICK = DemoSettings(
    pretrain_size=200,
    pretrain_epochs=2,
    max_epochs=2,
    min_epochs=2,
    model={
        "alignn_layers": 1,
        "gcn_layers": 1,
        "hidden_features": 16,
        "embedding_features": 16,
        "edge_input_features": 16,
        "triplet_input_features": 8,
    },
)


@dataclass
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes:
        out: The demo folder.
        rows: One dict per (size, model): test metrics, epochs, seconds.
        leakage: Fine-tuning size → leakage audit summary.
        seconds: Wall time of this call.
        csv: ``demo_results.csv``.
        json: ``demo_results.json``.
        plot: ``demo_summary.png``.
    """

    out: Path
    rows: list[dict[str, Any]]
    leakage: dict[int, str]
    seconds: float
    csv: Path
    json: Path
    plot: Path


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"100,800"`` → ``(100, 800)``.

    Raises:
        ConfigError: Not comma-separated positive integers.
    """
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 2:
        raise ConfigError(f"--sizes {text!r}: give positive integers, e.g. 100,800")
    return tuple(sorted(set(sizes)))


def _check_settings(out: Path, settings: DemoSettings) -> None:
    """Refuse to mix runs of different settings in one folder."""
    path = out / SETTINGS_FILE
    current = json.loads(json.dumps(asdict(settings)))
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved != current:
            changed = sorted(k for k in current if saved.get(k) != current[k])
            raise MatxferError(
                f"{out} holds a demo run with other settings (changed: {changed}); "
                "use another --out or delete it"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, current)


def _stage(
    run_dir: Path,
    label: str,
    echo: Callable[[str], None],
    work: Callable[[bool], Any],
) -> dict[str, Any]:
    """Run one step unless finished (:func:`~matxfer.training.is_finished`); resume it if
    interrupted, else start it afresh (``work(resume)`` overwrites what a step killed
    before its first checkpoint left).

    Returns:
        The step's ``metrics.json`` content plus ``seconds`` (wall time when it ran).
    """
    stage_path = run_dir / STAGE_FILE
    if is_finished(run_dir) and stage_path.is_file():
        seconds = json.loads(stage_path.read_text())["seconds"]
        echo(f"{label}: done earlier ({seconds:.0f} s), skipped")
    else:
        resume = (run_dir / LAST_CHECKPOINT).is_file()
        echo(f"{label}{' (resuming)' if resume else ''} ...")
        start = time.perf_counter()
        work(resume)
        seconds = time.perf_counter() - start
        write_json(stage_path, {"seconds": seconds})
        echo(f"{label}: finished in {seconds:.0f} s")
    return {**read_metrics(run_dir), "seconds": seconds}


def _row(size: int, model: str, metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics["test"]["target"]["original"]
    return {
        "size": size,
        "model": model,
        # null in metrics.json when not finite (strict JSON)
        "r2": as_float(test["r2"]),
        "mae": as_float(test["mae"]),
        "rmse": as_float(test["rmse"]),
        "n_test": test["n"],
        "n_train": metrics["train"]["target"]["original"]["n"],
        "epochs_trained": metrics["epochs_trained"],
        "best_epoch": metrics["best_epoch"],
        "seconds": round(metrics["seconds"], 1),
        "study_r2": STUDY_R2[model].get(size),
    }


def gains(rows: Sequence[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Per size: R² gain and MAE reduction of fine-tuning over scratch, in percent."""
    by_key = {(r["size"], r["model"]): r for r in rows}
    out = {}
    for size in sorted({r["size"] for r in rows}):
        scratch, tuned = by_key[(size, "scratch")], by_key[(size, "finetuned")]
        out[size] = {
            "r2_gain_percent": 100 * (tuned["r2"] - scratch["r2"]) / abs(scratch["r2"]),
            "mae_reduction_percent": 100 * (scratch["mae"] - tuned["mae"]) / scratch["mae"],
        }
    return out


def plot_summary(path: Path, out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Test R² per size (bars, study values as markers) and parity at the smallest size."""
    sizes = sorted({r["size"] for r in rows})
    figure = Figure(figsize=(11, 4.2))
    bars, parity = figure.subplots(1, 2)
    width = 0.38
    for offset, model, color in [
        (-width / 2, "scratch", "tab:grey"),
        (width / 2, "finetuned", "tab:blue"),
    ]:
        values = [
            next(r["r2"] for r in rows if r["size"] == s and r["model"] == model) for s in sizes
        ]
        positions = np.arange(len(sizes)) + offset
        drawn = bars.bar(
            positions,
            values,
            width,
            color=color,
            label="from scratch" if model == "scratch" else "fine-tuned (FE → PH)",
        )
        bars.bar_label(drawn, fmt="%.3f", label_type="center", color="white", fontsize=9)
        study = [STUDY_R2[model].get(s) for s in sizes]
        known = [(p, v) for p, v in zip(positions, study, strict=True) if v is not None]
        if known:
            bars.scatter(
                *zip(*known, strict=True),
                marker="_",
                s=400,
                color="black",
                label="study (5-trial mean)" if model == "scratch" else None,
            )
    bars.set_xticks(np.arange(len(sizes)), [f"{s} structures" for s in sizes])
    bars.set_ylabel("test R² (127 phonon test structures)")
    bars.set_ylim(min(0.0, *(r["r2"] for r in rows)), 1.18)
    bars.legend(loc="upper center", ncol=3, fontsize=8)
    bars.set_title("phonon peak: fine-tuned vs from scratch")
    smallest = sizes[0]
    for model, color in [("scratch", "tab:grey"), ("finetuned", "tab:blue")]:
        frame = pd.read_csv(out / f"{model}_{smallest}" / PREDICTIONS_TEST_FILE)
        r2 = next(r["r2"] for r in rows if r["size"] == smallest and r["model"] == model)
        parity.scatter(
            frame["target"],
            frame["prediction"],
            s=10,
            alpha=0.6,
            color=color,
            label=f"{'scratch' if model == 'scratch' else 'fine-tuned'} (R² {r2:.3f})",
        )
    low = float(parity.get_xlim()[0])
    high = float(parity.get_xlim()[1])
    parity.plot([low, high], [low, high], color="black", linewidth=1)
    parity.set_xlabel("true (normalised units)")
    parity.set_ylabel("predicted")
    parity.set_title(f"test set, {smallest} training structures")
    parity.legend(loc="upper left")
    figure.tight_layout()
    save_figure(figure, path)


@locks_directory("out", purpose="demo")
def run_demo(
    out: str | Path = "matxfer-demo",
    sizes: Sequence[int] = (100, 800),
    *,
    quick: bool = False,
    settings: DemoSettings | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Pre-train, fine-tune and train from scratch; compare (see the module docstring).

    Args:
        out: Folder of the runs and results (created; reruns reuse finished steps).
        sizes: Fine-tuning sizes (subsets of the trial; the study has 10, 100,
            200, 500, 800).
        quick: Use :data:`QUICK` settings (a smoke test, not meaningful numbers).
        settings: Explicit settings (wins over ``quick``).
        progress: Lightning progress bars (default: when stderr is a terminal).
        echo: Receives one line per step.

    Raises:
        MatxferError: ``out`` holds a demo with other settings, or a step failed.
    """
    from matxfer.training.run import train
    from matxfer.transfer.finetune import finetune

    settings = settings or (QUICK if quick else DemoSettings())
    out = Path(out)
    start = time.perf_counter()
    _check_settings(out, settings)
    steps = 1 + 2 * len(sizes)
    pt_dir = out / "pretrain"
    pt_config = settings.config(settings.pretrain_epochs)
    size_note = f"{settings.pretrain_size} of " if settings.pretrain_size else ""
    pt = _stage(
        pt_dir,
        f"[1/{steps}] pre-training on {size_note}{settings.pretrain_data} "
        f"({settings.pretrain_epochs} epochs)",
        echo,
        lambda resume: train(
            settings.pretrain_data,
            pt_dir,
            config=pt_config,
            size=settings.pretrain_size,
            resume=resume,
            overwrite=not resume,
            progress=progress,
        ),
    )
    pt_r2 = as_float(pt["test"]["target"]["original"]["r2"])
    echo(f"      pre-trained model: formation-energy test R² {format_metric(pt_r2, '.3f')}")
    rows, leakage = [], {}
    step = 2
    for size in sizes:
        config = settings.config(settings.epochs_for(size), size)
        data = {"trial": settings.trial, "size": size, "progress": progress}
        scratch_dir, tuned_dir = out / f"scratch_{size}", out / f"finetuned_{size}"
        label = f"{size} phonon structures, {config.epochs} epochs"
        scratch = _stage(
            scratch_dir,
            f"[{step}/{steps}] from scratch, {label}",
            echo,
            lambda resume, d=scratch_dir, c=config, kw=data: train(
                settings.finetune_data, d, config=c, resume=resume, overwrite=not resume, **kw
            ),
        )
        tuned = _stage(
            tuned_dir,
            f"[{step + 1}/{steps}] fine-tuning, {label}",
            echo,
            lambda resume, d=tuned_dir, c=config, kw=data: finetune(
                settings.finetune_data,
                pt_dir,
                d,
                settings.strategy,
                settings.head,
                config=c,
                resume=resume,
                overwrite=not resume,
                **kw,
            ),
        )
        step += 2
        audit = read_transfer_record(tuned_dir)["leakage"]
        leakage[size] = audit.get("summary", "not audited")
        rows += [_row(size, "scratch", scratch), _row(size, "finetuned", tuned)]
        echo(
            f"      test R²: scratch {format_metric(rows[-2]['r2'], '.3f')}, "
            f"fine-tuned {format_metric(rows[-1]['r2'], '.3f')}"
        )
    csv_path, json_path, plot_path = (
        out / "demo_results.csv",
        out / "demo_results.json",
        out / "demo_summary.png",
    )
    write_csv(pd.DataFrame(rows), csv_path)
    plot_summary(plot_path, out, rows)
    seconds = time.perf_counter() - start
    write_json(
        json_path,
        {
            "settings": asdict(settings),
            "sizes": list(sizes),
            "rows": rows,
            "gains": {str(k): v for k, v in gains(rows).items()},
            "pretraining": {"test_r2": pt_r2, "seconds": round(pt["seconds"], 1)},
            "leakage": {str(k): v for k, v in leakage.items()},
            "seconds": round(seconds, 1),
        },
    )
    return DemoResult(out, rows, leakage, seconds, csv_path, json_path, plot_path)


def results_table(result: DemoResult) -> Table:
    """Scratch vs fine-tuned per size: R², MAE, the gain, and the study's R²."""
    table = Table(
        "size",
        "model",
        "test R²",
        "MAE",
        "study R²",
        "epochs",
        "time",
        title="phonon peak (127 test structures): fine-tuned from formation energy vs from scratch",
    )
    gain = gains(result.rows)
    for row in result.rows:
        study = f"{row['study_r2']:.3f}" if row["study_r2"] is not None else "-"
        table.add_row(
            str(row["size"]),
            row["model"],
            f"{row['r2']:.3f}",
            f"{row['mae']:.4f}",
            study,
            str(row["epochs_trained"]),
            f"{row['seconds']:.0f} s",
        )
        if row["model"] == "finetuned":
            g = gain[row["size"]]
            r2_style = "green" if g["r2_gain_percent"] > 0 else "red"
            mae_style = "green" if g["mae_reduction_percent"] > 0 else "red"
            table.add_row(
                "",
                "change",
                Text(f"{g['r2_gain_percent']:+.1f}%", style=r2_style),
                Text(f"{-g['mae_reduction_percent']:+.1f}%", style=mae_style),
                "",
                "",
                "",
                end_section=True,
            )
    table.caption = (
        f"total {result.seconds:.0f} s this call; units: the study's normalised "
        f"targets; leakage: {next(iter(result.leakage.values()), '-')}"
    )
    return table
