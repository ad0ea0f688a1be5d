"""Fine-tuning recipes against scratch, over seeds: which recipe makes transfer pay off.

For one fine-tuning dataset and size (default: phonons, trial 1, size 100, the
study's fixed test set, ``fast`` profile), each recipe is trained once per seed
(the seed of the split, head initialisation and shuffling; the trial's records
are the same for every seed) and the table gives, per recipe, mean ± standard
deviation and the standard error (SE = std / √n) of test R² and MAE over the
seeds, the mean change in R² and MAE against scratch with the SE of the
paired differences (same seeds), and the minutes per run (training +
validation epochs, from the run's log; they depend on the machine's load).
``POOLED`` rows join one recipe's runs over several pre-training samples.

A recipe is a pre-training source (:data:`PT_SOURCES`, ``None`` for scratch),
:func:`matxfer.transfer.finetune.finetune` options and config overrides of the
``fast`` profile (:data:`RECIPES`). Pre-trainings and runs are cached under
``--out`` (``OUT/pt/<source>``, ``OUT/<data><size>/<recipe>/s<seed>``) and
reused, so several processes (one per core, ``MATXFER_THREADS=1``) can each be
given some recipes and a last one with ``--table-only`` prints the table. Printing
the table adds every finished run's metrics to the committed record
(``benchmarks/results/transfer_recipes.csv``, see ``recipe_runs.py``), and the
table includes recorded runs no longer in the cache (``--no-record``: the cache
only), so the tables in README can be printed again on another machine.

    MATXFER_THREADS=1 python benchmarks/transfer_recipes.py --out RUNS \\
        --recipes scratch,ftdemo --seeds 0,1,2,3,4
    python benchmarks/transfer_recipes.py --out RUNS --table-only
    python benchmarks/transfer_recipes.py --out RUNS --data dc --table-only
    # jarvis2d has no trials or fixed test set: the whole pool, 10 % held out (seed 0)
    python benchmarks/transfer_recipes.py --out RUNS --data jarvis2d --trial 0 --size 0 \\
        --recipes scratch,ftmpt7all-bg
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_runs import (  # noqa: E402  (benchmarks/recipe_runs.py)
    Runs,
    Split,
    add_record_options,
    cached_runs,
    merged_runs,
    run_minutes,
    write_record,
)
from transfer import cached_run, finished, test_metrics  # noqa: E402  (benchmarks/transfer.py)

from matxfer.training.metrics import mean_std_se  # noqa: E402


@dataclass(frozen=True)
class PTSource:
    """A pre-training: dataset, records sampled (``None``: the whole pool), seed, epochs."""

    data: str
    size: int | None
    seed: int
    epochs: int

    def describe(self) -> str:
        return f"{self.data} {self.size or 'all'} (seed {self.seed}, {self.epochs} ep)"


#: Pre-training sources. fe941: the study's pair-wise PT size, sampled from the fe pool
#: (cells of 29 atoms on average); demo-fe: the 2,000 shipped cells of <= 12 atoms
#: (1,800 train + validation after the seeded 10 % test hold-out), as in ``matxfer demo``.
PT_SOURCES: dict[str, PTSource] = {
    "fe941-s1": PTSource("fe", 941, 1, 50),
    "demofe-s0": PTSource("demo-fe", None, 0, 20),
    "demofe-s1": PTSource("demo-fe", None, 1, 20),
}


#: Prefix of a recipe's ``pt`` naming a shipped model (or ``chgnet``, whose wheel ships its
#: weights) instead of a :data:`PT_SOURCES` key.
SHIPPED = "shipped:"


def describe_pt(pt: str, data: str) -> str:
    """A recipe's pre-training source, in words."""
    if pt.startswith(SHIPPED):
        return "shipped " + pt.removeprefix(SHIPPED).format(data=data)
    return PT_SOURCES[pt].describe()


@dataclass(frozen=True)
class Recipe:
    """Scratch (``pt`` None) or fine-tuning from ``pt`` with ``finetune`` options."""

    pt: str | None
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


#: ``matxfer demo``'s schedule at size 100: batches of 8, 40 epochs.
_DEMO_SCHEDULE = {"batch_size": 8, "epochs": 40}

#: Learning-rate factors per layer group for discriminative fine-tuning.
_SLOW_BODY = {"embedding": 0.1, "two_body": 0.3, "three_body": 0.3}

#: Scratch; fine-tuning with the defaults (every layer, head reused, the scratch
#: schedule) from each PT source; LP-FT and L2-SP; the demo's schedule.
RECIPES: dict[str, Recipe] = {
    "scratch": Recipe(None),
    "ft": Recipe("fe941-s1"),
    "ft-lpft10": Recipe("fe941-s1", {"probe_epochs": 10}),
    "ft-l2sp0.1": Recipe("fe941-s1", {"l2sp": 0.1}),
    "ftdemo": Recipe("demofe-s0"),
    "ftdemo-s1": Recipe("demofe-s1"),
    "ftdemo-lpft10": Recipe("demofe-s0", {"probe_epochs": 10}),
    "ftdemo-s1-lpft10": Recipe("demofe-s1", {"probe_epochs": 10}),
    "scratch-b8e40": Recipe(None, config=_DEMO_SCHEDULE),
    "ftdemo-b8e40": Recipe("demofe-s0", config=_DEMO_SCHEDULE),
    # Shipped models (matxfer models list): the leave-one-out MPT never saw the target
    # property; "{data}" is the fine-tuning dataset.
    "ftmpt7": Recipe(f"{SHIPPED}mpt7-no-{{data}}", {"head": "new"}),
    "ftmpt7-lpft10": Recipe(f"{SHIPPED}mpt7-no-{{data}}", {"head": "new", "probe_epochs": 10}),
    "ftmpt7-fe": Recipe(f"{SHIPPED}mpt7-no-{{data}}", {"head_outputs": ["fe"]}),
    "ftfe": Recipe(f"{SHIPPED}fe", {"head": "new"}),
    "ftfe-reuse": Recipe(f"{SHIPPED}fe"),
    "ftbg": Recipe(f"{SHIPPED}bg", {"head": "new"}),
    "ftbg-reuse": Recipe(f"{SHIPPED}bg"),
    # Heavy tails (dc, ebg): the Yeo-Johnson target transform instead of the study's affine one.
    "scratch-yj": Recipe(None, config={"target_transform": "yeo-johnson"}),
    "ftmpt7-yj": Recipe(
        f"{SHIPPED}mpt7-no-{{data}}", {"head": "new"}, {"target_transform": "yeo-johnson"}
    ),
    # Weights averaged over about the last 100 optimizer steps (ema_decay).
    "scratch-ema": Recipe(None, config={"ema_decay": 0.99}),
    "ftfe-reuse-ema": Recipe(f"{SHIPPED}fe", config={"ema_decay": 0.99}),
    # Out of domain (jarvis2d): the MPT model on all seven study properties.
    "ftmpt7all": Recipe(f"{SHIPPED}mpt7", {"head": "new"}),
    "ftmpt7all-bg": Recipe(f"{SHIPPED}mpt7", {"head_outputs": ["bg"]}),
    # Discriminative learning rates: the embedding and the message-passing layers, whose
    # features transfer, move slower than the readout (gcn, head).
    "ftmpt7all-bg-dlr": Recipe(
        f"{SHIPPED}mpt7", {"head_outputs": ["bg"], "lr_multipliers": _SLOW_BODY}
    ),
    # A foundation model (pip install "matxfer[chgnet]"; its wheel ships the weights), new
    # head, at its lr_scale (10) times the profile's rate.
    "ftchgnet": Recipe(f"{SHIPPED}chgnet", {"head": "new"}),
}
#: Rows pooling one recipe over several pre-training samples.
POOLED: dict[str, tuple[str, ...]] = {
    "ftdemo, both PT": ("ftdemo", "ftdemo-s1"),
    "ftdemo-lpft10, both PT": ("ftdemo-lpft10", "ftdemo-s1-lpft10"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--out", type=Path, required=True, help="cache of PT and FT runs")
    parser.add_argument("--data", default="ph", help="fine-tuning dataset (default: ph)")
    parser.add_argument("--size", type=int, default=100, help="0: the whole pool")
    parser.add_argument("--trial", type=int, default=1, help="0: no trial subsets (e.g. jarvis2d)")
    parser.add_argument(
        "--test-seed",
        type=int,
        default=0,
        help="seed of the held-out test share where the data has no fixed test set; "
        "fixed, so every seed and recipe is scored on the same structures",
    )
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--recipes", default="scratch,ft", help=f"of: {', '.join(RECIPES)}")
    parser.add_argument(
        "--table-only", action="store_true", help="print cached and recorded runs only"
    )
    add_record_options(parser)
    return parser.parse_args(argv)


def pretrain(name: str, out: Path, data_dir: str) -> Path:
    """The (cached) pre-training run ``name`` of :data:`PT_SOURCES`."""
    from matxfer.training import resolve_config, train

    source = PT_SOURCES[name]
    run_dir = out / "pt" / name
    config = resolve_config("fast", {"seed": source.seed, "epochs": source.epochs})
    return cached_run(
        run_dir,
        f"pre-training {name}: {source.describe()}",
        lambda resume: train(
            source.data,
            run_dir,
            config=config,
            data_dir=data_dir,
            size=source.size,
            resume=resume,
            progress=False,
        ),
    )


def split_of(args: argparse.Namespace) -> Split:
    """The split the runs of ``args`` train and test on."""
    return Split(args.data, args.size, args.trial, args.test_seed)


def runs_of(args: argparse.Namespace) -> Path:
    """The folder of one dataset and size's runs: ``OUT/<data><size>`` (``<data>all``)."""
    return split_of(args).folder(args.out)


def describe_split(args: argparse.Namespace) -> str:
    trial = f"trial {args.trial}" if args.trial else "no trials"
    size = f"size {args.size}" if args.size else "whole pool"
    held_out = f"test set: fixed where the data has one, else 10 % (seed {args.test_seed})"
    return f"{args.data}, {trial}, {size}, {held_out}"


def run_recipe(args: argparse.Namespace, name: str, seed: int) -> Path:
    """Train recipe ``name`` at ``seed`` unless cached; returns its run directory."""
    from matxfer.training import resolve_config, train
    from matxfer.transfer.finetune import finetune

    recipe = RECIPES[name]
    data_dir = str(args.data_dir.resolve())
    run_dir = runs_of(args) / name / f"s{seed}"
    config = resolve_config("fast", {**recipe.config, "seed": seed, "test_seed": args.test_seed})
    data = {
        "data_dir": data_dir,
        "trial": args.trial or None,
        "size": args.size or None,
        "progress": False,
    }
    if recipe.pt is None:
        return cached_run(
            run_dir,
            f"{name} s{seed}",
            lambda resume: train(args.data, run_dir, config=config, resume=resume, **data),
        )
    pt_run: str | Path = (
        recipe.pt.removeprefix(SHIPPED).format(data=args.data)
        if recipe.pt.startswith(SHIPPED)
        else pretrain(recipe.pt, args.out, data_dir)
    )
    return cached_run(
        run_dir,
        f"{name} s{seed}",
        # No leakage audit: it re-reads the pre-training pool each run and changes no number.
        lambda resume: finetune(
            args.data,
            pt_run,
            run_dir,
            config=config,
            resume=resume,
            audit=False,
            **recipe.options,
            **data,
        ),
    )


def _row(label: str, runs: list[tuple[int, dict[str, float]]], scratch: dict, pt: str) -> str:
    """One table line: R² and MAE over ``runs`` ((seed, metrics) pairs), paired gains."""
    r2 = mean_std_se([m["r2"] for _, m in runs])
    mae = mean_std_se([m["mae"] for _, m in runs])
    gains = []
    for key in ("r2", "mae"):
        paired = [m[key] - scratch[s][key] for s, m in runs if s in scratch]
        if label == "scratch" or len(paired) < 2:
            gains.append("-")
            continue
        mean, _, se = mean_std_se(paired)
        gains.append(f"{mean:+.3f} ({se:.3f})")
    minutes = sum(m["minutes"] for _, m in runs) / len(runs)
    return (
        f"{label:<23}{len(runs):>3}  {r2[0]:.3f}±{r2[1]:.3f} ({r2[2]:.3f})  "
        f"{mae[0]:.3f}±{mae[1]:.3f} ({mae[2]:.3f})  {gains[0]:<17}{gains[1]:<17}"
        f"{minutes:>7.1f}  {pt}"
    )


def ensemble_metrics(run_dirs: list[Path]) -> dict[str, float]:
    """Test R² and MAE of the mean prediction of ``run_dirs`` (one fixed test set)."""
    import pandas as pd

    from matxfer.training.metrics import regression_metrics
    from matxfer.training.rundir import PREDICTIONS_TEST_FILE

    frames = [pd.read_csv(d / PREDICTIONS_TEST_FILE).set_index("id") for d in run_dirs]
    first = frames[0]
    if any(not f.index.equals(first.index) for f in frames):
        raise SystemExit(f"{run_dirs[0].parent}: the seeds were tested on different structures")
    mean = sum(f["prediction"] for f in frames) / len(frames)
    return regression_metrics(first["target"].to_numpy(), mean.to_numpy())


def print_ensembles(base: Path, results: Runs) -> None:
    """Per recipe with several cached seeds: the ensemble of its seeds (mean prediction)
    against the mean of the single runs (the trial-ensemble lever of issue 13)."""
    lines = []
    for name, runs in results.items():
        if len(runs) < 2:
            continue
        ensemble = ensemble_metrics([base / name / f"s{seed}" for seed in sorted(runs)])
        r2 = mean_std_se([m["r2"] for m in runs.values()])[0]
        mae = mean_std_se([m["mae"] for m in runs.values()])[0]
        lines.append(
            f"{name:<23}{len(runs):>3}  R² {ensemble['r2']:.3f} (runs {r2:.3f}, "
            f"{ensemble['r2'] - r2:+.3f})  MAE {ensemble['mae']:.3f} (runs {mae:.3f}, "
            f"{ensemble['mae'] - mae:+.3f})"
        )
    if lines:
        print("\nensemble of the seeds (mean prediction) vs the mean single run")
        print("\n".join(lines))


def print_table(args: argparse.Namespace, seeds: list[int]) -> None:
    """Mean ± std (SE) of test R² and MAE per recipe over the seeds cached or recorded,
    and the mean (SE) of the paired differences to scratch at the same seeds."""
    split = split_of(args)
    cached = cached_runs(args.out, split)
    if args.record is not None:
        written = write_record(args.record, split, cached)
        if written:
            print(f"recorded {written} finished runs in {args.record}")
    every = merged_runs(args.record, split, cached)

    def of(runs: Runs) -> Runs:
        picked = {n: {s: runs[n][s] for s in seeds if s in runs.get(n, {})} for n in RECIPES}
        return {n: r for n, r in picked.items() if r}

    results = of(every)
    print(f"\n{describe_split(args)}, fast profile")
    print(
        f"{'recipe':<23}{'n':>3}  {'R² mean±std (SE)':<21}{'MAE mean±std (SE)':<21}"
        f"{'ΔR² (SE)':<17}{'ΔMAE (SE)':<17}{'min/run':>7}  PT source"
    )
    scratch = results.get("scratch", {})
    for name, runs in results.items():
        pt = RECIPES[name].pt
        source = describe_pt(pt, args.data) if pt else "-"
        print(_row(name, sorted(runs.items()), scratch, source))
    for label, members in POOLED.items():
        runs = [item for m in members for item in sorted(results.get(m, {}).items())]
        if runs:
            print(_row(label, runs, scratch, " + ".join(members)))
    print_ensembles(runs_of(args), of(cached))
    for name, source in PT_SOURCES.items():
        run_dir = args.out / "pt" / name
        if finished(run_dir):
            r2 = test_metrics(run_dir)["r2"]
            print(
                f"PT {name}: {source.describe()}, test R² {r2:.3f}, {run_minutes(run_dir):.1f} min"
            )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        sys.exit(f"unknown --recipes {', '.join(unknown)}; choose from {', '.join(RECIPES)}")
    if not args.table_only:
        for name in names:
            for seed in seeds:
                run_recipe(args, name, seed)
    print_table(args, seeds)


if __name__ == "__main__":
    main()
