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

One seed is one draw: at 100 structures test R² moves by about ±0.1 from seed
to seed. ``seeds`` (``--seeds 0,1,2,3,4``) repeats step 2 at each seed (split,
head, shuffling; one pre-training) and reports mean ± std and the paired gain
with its standard error (:mod:`matxfer.transfer.demo_report`).

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

import pandas as pd

from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import locks_directory
from matxfer.training.checkpoint import LAST_CHECKPOINT
from matxfer.training.config import TrainConfig, resolve_config
from matxfer.training.outputs import (
    as_float,
    format_metric,
    write_csv,
    write_json,
)
from matxfer.training.rundir import (
    is_finished,
    read_metrics,
    read_transfer_record,
)
from matxfer.transfer.demo_report import STUDY_R2, gains, plot_summary, summarise
from matxfer.transfer.heads import HeadMode

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

    def config(self, epochs: int, size: int | None = None, seed: int | None = None) -> TrainConfig:
        """The ``fast`` profile with this demo's model, ``seed`` (default: the settings')
        and ``epochs`` (and the batch size for fine-tuning size ``size``; ``None``:
        pre-training)."""
        small = size is not None and size <= self.small_batch_below
        return resolve_config(
            "fast",
            {
                "model": self.model,
                "seed": self.seed if seed is None else seed,
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


def _parse_integers(text: str, option: str, minimum: int, example: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        values = ()
    if not values or min(values) < minimum:
        kind = "positive integers" if minimum > 0 else "integers ≥ 0"
        raise ConfigError(f"{option} {text!r}: give {kind}, e.g. {example}")
    return tuple(sorted(set(values)))


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"100,800"`` → ``(100, 800)``.

    Raises:
        ConfigError: Not comma-separated positive integers.
    """
    return _parse_integers(text, "--sizes", 2, "100,800")


def parse_seeds(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``.

    Raises:
        ConfigError: Not comma-separated integers ≥ 0.
    """
    return _parse_integers(text, "--seeds", 0, "0,1,2,3,4")


def run_name(model: str, size: int, seed: int, default_seed: int) -> str:
    """A scratch or fine-tuning step's folder: ``scratch_100`` at the settings' seed,
    ``scratch_100_seed3`` at another (so adding seeds keeps the one-seed demo's runs)."""
    return f"{model}_{size}" if seed == default_seed else f"{model}_{size}_seed{seed}"


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


def _row(size: int, model: str, seed: int, metrics: dict[str, Any]) -> dict[str, Any]:
    test = metrics["test"]["target"]["original"]
    return {
        "size": size,
        "model": model,
        "seed": seed,
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


@locks_directory("out", purpose="demo")
def run_demo(
    out: str | Path = "matxfer-demo",
    sizes: Sequence[int] = (100, 800),
    *,
    seeds: Sequence[int] | None = None,
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
        seeds: Seeds of the scratch and fine-tuning runs (split, head
            initialisation, shuffling), each run at every size; the results are
            their mean ± std and the paired gain. Pre-training runs once, at the
            settings' seed. Default: the settings' seed alone.
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
    seeds = tuple(dict.fromkeys(seeds)) if seeds else (settings.seed,)
    steps = 1 + 2 * len(sizes) * len(seeds)
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

    def run_dir(model: str, size: int, seed: int) -> Path:
        return out / run_name(model, size, seed, settings.seed)

    rows, leakage = [], {}
    step = 2
    for size in sizes:
        data = {"trial": settings.trial, "size": size, "progress": progress}
        for seed in seeds:
            config = settings.config(settings.epochs_for(size), size, seed)
            scratch_dir, tuned_dir = (
                run_dir("scratch", size, seed),
                run_dir("finetuned", size, seed),
            )
            label = f"{size} phonon structures, {config.epochs} epochs"
            label += f", seed {seed}" if len(seeds) > 1 else ""
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
            leakage.setdefault(size, audit.get("summary", "not audited"))
            rows += [_row(size, "scratch", seed, scratch), _row(size, "finetuned", seed, tuned)]
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
    plot_summary(plot_path, rows, run_dir, seeds[0])
    seconds = time.perf_counter() - start
    write_json(
        json_path,
        {
            "settings": asdict(settings),
            "sizes": list(sizes),
            "seeds": list(seeds),
            "rows": rows,
            "summary": summarise(rows),
            "gains": {str(k): v for k, v in gains(rows).items()},
            "pretraining": {"test_r2": pt_r2, "seconds": round(pt["seconds"], 1)},
            "leakage": {str(k): v for k, v in leakage.items()},
            "seconds": round(seconds, 1),
        },
    )
    return DemoResult(out, rows, leakage, seconds, csv_path, json_path, plot_path)
