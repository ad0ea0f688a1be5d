"""Test accuracy of a model trained from scratch with the ``fast`` profile.

Trains on one of the study's fine-tuning subsets (default: phonons, trial 1,
size 800 = 720 training + 80 validation records), tests the best-validation
checkpoint on the study's fixed test set, and prints R² and MAE (in the
datasets' normalised units, as the study reports them) beside

* the study's scratch result (Devi, Butler & Sai Gautam, arXiv 2406.13142;
  paper configuration: 4 + 4 layers x 256, MSE, up to 500 epochs), and
* a calibration run of the reference ``alignn`` pure-PyTorch model at the
  fast profile's size (2 + 2 layers x 64, L1; phonons: 59 epochs in 11 min).

For phonons the fast profile's target is R² >= 0.96 and MAE <= 0.035 in at
most 15 minutes on two CPU cores; the last lines say whether it was met.

    python benchmarks/accuracy_scratch.py                 # phonons
    python benchmarks/accuracy_scratch.py --dataset dc
    python benchmarks/accuracy_scratch.py --epochs 2      # a quick end-to-end check
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Published / measured test results at trial 1, size 800 (normalised units).
STUDY_SCRATCH = {
    "ph": {"r2": 0.949, "mae": 0.038, "r2_5_trials": "0.904 ± 0.038"},
    "dc": {"r2": 0.71},
    "ebg": {"r2": 0.43},
}
CALIBRATION = {"ph": {"r2": 0.980, "mae": 0.029}, "dc": {"r2": 0.54}, "ebg": {"r2": 0.46}}
#: What the fast profile must reach on phonons, and in how many minutes.
TARGET = {"r2": 0.96, "mae": 0.035, "minutes": 15.0}


def fmt(result: dict, key: str) -> str:
    return f"{result[key]:.3f}" if key in result else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(STUDY_SCRATCH), default="ph")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--trial", type=int, default=1)
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    args = parser.parse_args()

    from matxfer.training import resolve_config, train

    overrides = {"seed": args.seed, **({"epochs": args.epochs} if args.epochs else {})}
    config = resolve_config(args.profile, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "run"
        start = time.perf_counter()
        result = train(
            args.dataset,
            out,
            config=config,
            data_dir=args.data_dir,
            trial=args.trial,
            size=args.size,
            progress=sys.stderr.isatty(),
        )
        minutes = (time.perf_counter() - start) / 60
    test = result.metrics["test"]["target"]["original"]
    print(
        f"\n{args.dataset} trial {args.trial} size {args.size}, profile {args.profile}: "
        f"{result.metrics['epochs_trained']} epochs (best {result.metrics['best_epoch']}) "
        f"in {minutes:.1f} min"
    )
    print(f"{'':34}{'R²':>8}{'MAE':>8}")
    print(f"{'matxfer (this run)':34}{test['r2']:>8.3f}{test['mae']:>8.3f}")
    study, calibration = STUDY_SCRATCH[args.dataset], CALIBRATION[args.dataset]
    print(f"{'study scratch, trial 1':34}{fmt(study, 'r2'):>8}{fmt(study, 'mae'):>8}")
    if "r2_5_trials" in study:
        print(f"{'study scratch, 5 trials':34}{study['r2_5_trials']:>16}")
    print(
        f"{'reference alignn 2+2x64 (calib.)':34}{fmt(calibration, 'r2'):>8}"
        f"{fmt(calibration, 'mae'):>8}"
    )
    if args.dataset == "ph" and args.profile == "fast" and not args.epochs:
        met = (
            test["r2"] >= TARGET["r2"]
            and test["mae"] <= TARGET["mae"]
            and minutes <= TARGET["minutes"]
        )
        print(
            f"fast-profile target (R² >= {TARGET['r2']}, MAE <= {TARGET['mae']}, "
            f"<= {TARGET['minutes']:.0f} min): {'met' if met else 'NOT met'}"
        )
    print(f"test_r2: {test['r2']:.4f}")
    print(f"test_mae: {test['mae']:.4f}")


if __name__ == "__main__":
    main()
