"""Transfer to phonons: scratch vs fine-tuned from formation energy vs multi-property (MPT).

On the study's phonon set (trial 1, fixed 127-structure test set, ``fast``
profile), for each fine-tuning size, the rows chosen with ``--rows``:

* ``scratch``: trained from random weights;
* ``fe``: fine-tuned (all layers, pre-trained head reused) from a
  formation-energy pre-training on 941 structures sampled (seeded) from the
  fe pool, the study's pre-training size of its pair-wise matrix;
  ``fe-pool``: from the whole pool (7,867 structures);
* ``mpt``: fine-tuned (new head) from a leave-one-out multi-property
  pre-training on the six other properties (941 each);
* ``fe-excl``: the same, pre-trained without the crystals of the phonon test
  set; ``mpt-excl``: without the crystals of every property's test set, the
  phonon test set included (transfer to unseen crystals).

Printed beside each row: the study's 5-trial mean R² (Devi, Butler & Sai
Gautam, arXiv 2406.13142, paper configuration) and, at size 100, a reference
calibration of small models (reference ALIGNN 2 + 2 × 64: pre-trained 8 min on
941 dielectric structures, fine-tuned 3 min). Also printed: the leakage audit,
how many phonon test (and training) crystals the pre-training data contain.

Pre-trained runs are cached under ``--cache`` (default
``~/.cache/matxfer/bench/transfer``), keyed by data, size and config, and
finished scratch / fine-tuned runs in ``--out`` are reused, so reruns (and
several processes given different ``--rows``, one per core, then one with all
of them to print the table) skip what is done. fe and bg cells average 30
atoms, four times the phonon cells, so pre-trainings dominate: hours on two
CPU cores. ``--quick`` checks the pipeline end to end
in minutes (2 epochs, small pre-training samples; numbers meaningless).

    python benchmarks/transfer.py                      # scratch and FE→PH, sizes 100, 800
    python benchmarks/transfer.py --rows scratch,fe,mpt,mpt-excl --out DIR
    python benchmarks/transfer.py --quick --sizes 100 --rows scratch,fe,fe-excl,mpt,mpt-excl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The study's 5-trial mean test R² on phonons (sizes 100 / 800).
STUDY_R2 = {
    "scratch": {100: 0.534, 800: 0.904},
    "FE→PH": {100: 0.616, 800: 0.946},
    "MPT→PH": {100: 0.528, 800: 0.979},
}
#: Reference calibration, small ALIGNN 2+2×64, phonons trial 1, size 100: (R², MAE).
CALIBRATION = {"scratch": (0.630, 0.107), "FE→PH": (0.705, 0.088)}
#: The six other properties of the study (leave-one-out MPT for phonons).
MPT_PROPERTIES = ("fe", "bg", "gv", "dc", "pz", "ebg")
PT_SIZE = 941
#: Pre-training epochs. fe cells average 29 atoms, four times the phonon cells: 50
#: epochs on 941 of them took 22 min on one core. The six other properties, 941 records
#: each, merge into 5,619; 10 epochs of them (3,170 steps) took 37 min.
PT_EPOCHS = 50
MPT_EPOCHS = 10
#: Row families: scratch; FE→PH from 941 fe records, from the whole fe pool, and
#: pre-trained without the phonon test crystals; MPT→PH, also without them.
ROWS = ("scratch", "fe", "fe-pool", "fe-excl", "mpt", "mpt-excl")


def cache_key(**parts: Any) -> str:
    """Short stable hash of what determines a pre-training."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def finished(run_dir: Path) -> bool:
    from matxfer.training import is_finished

    return is_finished(run_dir)


def resumable(run_dir: Path) -> bool:
    """Whether an unfinished run in ``run_dir`` can be resumed (else it is started afresh)."""
    return (run_dir / "last.ckpt").is_file()


def cached_run(run_dir: Path, label: str, make: Callable[[bool], Any]) -> Path:
    """Run ``make(resume)`` unless ``run_dir`` holds a finished run; returns ``run_dir``.

    Holds ``run_dir``'s lock: ``make`` resumes an interrupted run (``resume``), or
    starts in a directory cleared of what a run killed before its first checkpoint left.
    """
    from matxfer.locking import DirectoryLock
    from matxfer.training.rundir import check_new_run_dir

    with DirectoryLock(run_dir, purpose=f"benchmark run ({label})"):
        if finished(run_dir):
            print(f"{label}: cached ({run_dir})", flush=True)
            return run_dir
        print(f"{label} ...", flush=True)
        start = time.perf_counter()
        resume = resumable(run_dir)
        if not resume:
            check_new_run_dir(run_dir, overwrite=True)
        make(resume)
        print(f"{label}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return run_dir


def test_metrics(run_dir: Path) -> dict[str, float]:
    from matxfer.training.outputs import as_float

    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = next(iter(metrics["test"].values()))["original"]
    # null in metrics.json when not finite (strict JSON); NaN in older files
    return {
        "r2": as_float(test["r2"]),
        "mae": as_float(test["mae"]),
        "epochs": metrics["epochs_trained"],
    }


def leakage_of(run_dir: Path) -> str:
    leakage = json.loads((run_dir / "transfer.json").read_text())["leakage"]
    if not leakage.get("audited"):
        return "not audited"
    return (
        f"{leakage['test_leaked']}/{leakage['num_test']} test, "
        f"{leakage['train_leaked']}/{leakage['num_train']} train crystals in "
        f"{leakage['num_pretrain']} PT records"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--sizes", default="100,800", help="fine-tuning sizes (trial subsets)")
    parser.add_argument("--trial", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the fast profile's epochs (all runs)")
    parser.add_argument(
        "--pt-epochs", type=int, default=PT_EPOCHS, help="epochs of the fe pre-trainings"
    )
    parser.add_argument(
        "--mpt-epochs",
        type=int,
        default=MPT_EPOCHS,
        help="epochs of the MPT pre-trainings",
    )
    parser.add_argument(
        "--rows",
        default="scratch,fe",
        help=f"comma-separated rows to run, of: {', '.join(ROWS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 epochs, small pre-training samples: a pipeline check",
    )
    parser.add_argument("--cache", type=Path, help="pre-training cache folder")
    parser.add_argument("--out", type=Path, help="folder for the scratch/FT runs (default: temp)")
    return parser.parse_args()


class Benchmark:
    """Runs and collects the rows; pre-trainings cached, scratch/FT runs in ``out``."""

    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        from matxfer.paths import cache_dir
        from matxfer.training import resolve_config

        self.args, self.out = args, out
        self.sizes = [int(s) for s in args.sizes.split(",")]
        self.rows_wanted = [row.strip() for row in args.rows.split(",") if row.strip()]
        unknown = sorted(set(self.rows_wanted) - set(ROWS))
        if unknown:
            sys.exit(f"unknown --rows {', '.join(unknown)}; choose from {', '.join(ROWS)}")
        self.data_dir = str(args.data_dir.resolve())
        epochs = 2 if args.quick else args.epochs
        self.pt_size = 200 if args.quick else PT_SIZE
        self.mpt_size = 50 if args.quick else PT_SIZE
        common = {"seed": args.seed, **({"epochs": epochs} if epochs else {})}
        self.config = resolve_config("fast", common)
        self.pt_config = resolve_config(
            "fast", {**common, "epochs": 2 if args.quick else args.pt_epochs}
        )
        self.cache = args.cache or cache_dir() / "bench" / "transfer"
        self.rows: list[dict[str, Any]] = []

    def pretrain_fe(self, size: int | None) -> Path:
        from matxfer.training import train

        key = cache_key(
            data="fe",
            size=size,
            data_dir=self.data_dir,
            config=self.pt_config.model_dump(mode="json"),
        )
        run_dir = self.cache / f"fe-{size or 'pool'}-{key}"
        return cached_run(
            run_dir,
            f"pre-training on fe ({size or 'whole pool'})",
            lambda resume: train(
                "fe",
                run_dir,
                config=self.pt_config,
                data_dir=self.data_dir,
                size=size,
                resume=resume,
                progress=sys.stderr.isatty(),
            ),
        )

    def pretrain_fe_excluding(self, pt_run: Path) -> Path:
        from matxfer.data import resolve_named
        from matxfer.transfer.pretrained import pretrain_excluding

        run_dir = pt_run.with_name(pt_run.name + "-no-ph-test")
        if finished(run_dir):
            print(f"pre-training without phonon test crystals: cached ({run_dir})", flush=True)
            return run_dir
        print("pre-training without phonon test crystals ...", flush=True)
        test = resolve_named("ph", data_dir=self.data_dir).test.records
        result = pretrain_excluding(pt_run, test, run_dir, progress=sys.stderr.isatty())
        print(f"  {len(result.excluded)} pre-training crystals excluded", flush=True)
        return run_dir

    def pretrain_mpt(self, exclude_test: bool) -> Path | None:
        try:
            from matxfer.transfer.multitask import mpt_config, pretrain_multi
        except ImportError as error:
            print(f"MPT rows skipped: {error}", flush=True)
            return None
        epochs = self.pt_config.epochs if self.args.quick else self.args.mpt_epochs
        overrides = {"seed": self.args.seed, "epochs": epochs}
        config = mpt_config("fast", overrides)
        key = cache_key(
            data=MPT_PROPERTIES,
            size=self.mpt_size,
            data_dir=self.data_dir,
            exclude_test=exclude_test,
            config=config.model_dump(mode="json"),
        )
        run_dir = self.cache / f"mpt-loo-ph-{key}"
        datasets = {name: name for name in (*MPT_PROPERTIES, "ph")}

        return cached_run(
            run_dir,
            f"MPT pre-training on {', '.join(MPT_PROPERTIES)} ({self.mpt_size} each"
            f"{', phonon test crystals excluded' if exclude_test else ''})",
            lambda resume: pretrain_multi(
                datasets,
                run_dir,
                exclude=("ph",),
                config=config,
                data_dir=self.data_dir,
                size=self.mpt_size,
                exclude_test_structures=exclude_test,
                progress=sys.stderr.isatty(),
                resume=resume,
            ),
        )

    def add(self, label: str, size: int, run_dir: Path) -> None:
        row = {"row": label, "size": size, **test_metrics(run_dir)}
        row["leakage"] = leakage_of(run_dir) if (run_dir / "transfer.json").is_file() else ""
        self.rows.append(row)
        print(f"  {label} @ {size}: R² {row['r2']:.3f}, MAE {row['mae']:.3f}", flush=True)

    def scratch(self, size: int) -> None:
        from matxfer.training import train

        run_dir = self.out / f"scratch-{size}"
        if finished(run_dir):
            self.add("scratch", size, run_dir)
            return
        print(f"scratch @ {size} ...", flush=True)
        train(
            "ph",
            run_dir,
            config=self.config,
            data_dir=self.data_dir,
            trial=self.args.trial,
            size=size,
            resume=resumable(run_dir),
            overwrite=not resumable(run_dir),
            progress=sys.stderr.isatty(),
        )
        self.add("scratch", size, run_dir)

    def finetune(self, label: str, pt_run: Path, size: int, head: Any) -> None:
        from matxfer.transfer.finetune import finetune

        run_dir = self.out / f"{label.replace('→', '-').replace(' ', '_')}-{size}"
        if finished(run_dir):
            self.add(label, size, run_dir)
            return
        print(f"fine-tuning {label} @ {size} ...", flush=True)
        finetune(
            "ph",
            pt_run,
            run_dir,
            "all",
            head,
            config=self.config,
            data_dir=self.data_dir,
            trial=self.args.trial,
            size=size,
            resume=resumable(run_dir),
            overwrite=not resumable(run_dir),
            progress=sys.stderr.isatty(),
        )
        self.add(label, size, run_dir)

    def run(self) -> None:
        # One family at a time, each pre-trained just before its fine-tunings, so a run
        # stopped early has the most important rows and a rerun with --out resumes it.
        rows = self.rows_wanted
        if "scratch" in rows:
            for size in self.sizes:
                self.scratch(size)
        families: dict[str, tuple[str, Callable[[], Path | None], str]] = {
            "fe": ("FE→PH", lambda: self.pretrain_fe(self.pt_size), "reuse"),
            "fe-pool": ("FE(pool)→PH", lambda: self.pretrain_fe(None), "reuse"),
            "fe-excl": (
                "FE→PH excl.",
                lambda: self.pretrain_fe_excluding(self.pretrain_fe(self.pt_size)),
                "reuse",
            ),
            "mpt": ("MPT→PH", lambda: self.pretrain_mpt(False), "new"),
            "mpt-excl": ("MPT→PH excl.", lambda: self.pretrain_mpt(True), "new"),
        }
        for name, (label, pretrain, head) in families.items():
            if name not in rows:
                continue
            pt_run = pretrain()
            if pt_run is None:
                continue
            for size in self.sizes:
                self.finetune(label, pt_run, size, head)

    def print_table(self) -> None:
        print(
            f"\nphonons, trial {self.args.trial}, fixed test set (127), fast profile"
            f"{' (QUICK: numbers meaningless)' if self.args.quick else ''}"
        )
        print(
            f"{'row':<14}{'size':>5}{'R²':>8}{'MAE':>8}{'ep':>5}{'study R²':>10}"
            f"{'calib. R²/MAE':>15}   leakage (phonon crystals in the PT data)"
        )
        for row in self.rows:
            base = row["row"].replace("(pool)", "").replace(" excl.", "")
            study = STUDY_R2.get(base, {}).get(row["size"])
            calib = CALIBRATION.get(row["row"]) if row["size"] == 100 else None
            print(
                f"{row['row']:<14}{row['size']:>5}{row['r2']:>8.3f}{row['mae']:>8.3f}"
                f"{row['epochs']:>5}{(f'{study:.3f}' if study else '-'):>10}"
                f"{(f'{calib[0]:.3f}/{calib[1]:.3f}' if calib else '-'):>15}"
                f"   {row['leakage']}"
            )


def main() -> None:
    args = parse_args()
    if not (args.data_dir / "ph" / "pool.json.gz").is_file():
        sys.exit(f"{args.data_dir}: no ph/pool.json.gz; pass --data-dir")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        bench = Benchmark(args, out)
        bench.run()
        bench.print_table()
    print(f"total {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
