"""Finished runs of ``transfer_recipes.py``: from its run cache and from the committed record.

The cache (``transfer_recipes.py --out``: ``OUT/<data><size>/<recipe>/s<seed>``)
holds whole run directories on one machine and goes with it. The record
(:data:`RECORD`, a CSV kept in the repository) keeps one line per finished
run: the split it was trained on, its test R² and MAE, epochs and minutes.
Tables are printed from both (a run in both is read from the cache), so the
figures in README can be printed again, and new seeds paired with earlier
ones, after the cache is gone. Ensembles need the runs' predictions, so they
come from the cache only.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

#: The committed record of benchmark runs.
RECORD = Path(__file__).resolve().parent / "results" / "transfer_recipes.csv"
#: Columns naming a run; a second run with the same key replaces the first.
KEY = ("data", "size", "trial", "test_seed", "recipe", "seed")
#: What is kept of each run.
METRICS = ("r2", "mae", "epochs", "minutes")
COLUMNS = (*KEY, *METRICS)

#: recipe → seed → {"r2", "mae", "epochs", "minutes"}
Runs = dict[str, dict[int, dict[str, float]]]


@dataclass(frozen=True)
class Split:
    """What a run was trained and tested on: dataset, size (``0``: the whole pool),
    trial (``0``: none) and the seed of the held-out test share (where the data has
    no fixed test set)."""

    data: str
    size: int
    trial: int = 1
    test_seed: int = 0

    def folder(self, cache: Path) -> Path:
        """Where the cache keeps this split's runs: ``cache/<data><size>`` (``<data>all``)."""
        return cache / f"{self.data}{self.size or 'all'}"


def add_record_options(parser: argparse.ArgumentParser) -> None:
    """``--record CSV`` (default: :data:`RECORD`) and ``--no-record`` (``args.record`` None)."""
    parser.add_argument(
        "--record",
        type=Path,
        default=RECORD,
        help="CSV keeping every finished run's metrics, read beside the run cache "
        "(default: benchmarks/results/transfer_recipes.csv)",
    )
    parser.add_argument(
        "--no-record", dest="record", action="store_const", const=None, help="the cache only"
    )


def run_minutes(run_dir: Path) -> float:
    """Training + validation minutes of a run, from its per-epoch log."""
    from matxfer.training.outputs import epoch_log

    log = epoch_log(run_dir / "logs" / "csv")
    return float(log["epoch_seconds"].sum()) / 60 if "epoch_seconds" in log else math.nan


def cached_runs(cache: Path, split: Split) -> Runs:
    """The finished runs under ``split``'s folder of ``cache``, per recipe and seed."""
    from transfer import finished, test_metrics  # benchmarks/transfer.py

    runs: Runs = {}
    for recipe_dir in sorted(split.folder(cache).glob("*")):
        for run in sorted(recipe_dir.glob("s*")):
            if run.name[1:].isdigit() and finished(run):
                metrics = {**test_metrics(run), "minutes": run_minutes(run)}
                runs.setdefault(recipe_dir.name, {})[int(run.name[1:])] = metrics
    return runs


def recorded_runs(record: Path | None, split: Split) -> Runs:
    """The runs of ``split`` in ``record`` (none when it is ``None`` or absent)."""
    if record is None or not record.is_file():
        return {}
    import pandas as pd

    frame = pd.read_csv(record, dtype={"data": str, "recipe": str})
    mine = frame[
        (frame["data"] == split.data)
        & (frame["size"] == split.size)
        & (frame["trial"] == split.trial)
        & (frame["test_seed"] == split.test_seed)
    ]
    runs: Runs = {}
    for row in mine.itertuples(index=False):
        metrics = {name: float(getattr(row, name)) for name in METRICS}
        runs.setdefault(row.recipe, {})[int(row.seed)] = metrics
    return runs


def merged_runs(record: Path | None, split: Split, cached: Runs) -> Runs:
    """Recorded runs of ``split``, overridden by the ``cached`` ones (:func:`cached_runs`)."""
    runs = recorded_runs(record, split)
    for recipe, seeds in cached.items():
        runs.setdefault(recipe, {}).update(seeds)
    return runs


def write_record(record: Path, split: Split, runs: Runs) -> int:
    """Add ``runs`` of ``split`` to ``record`` (replacing the same recipe and seed);
    returns how many lines were written. Holds a lock on the file's folder, so two
    benchmark processes finishing together do not lose each other's lines."""
    import pandas as pd

    from matxfer.atomic import atomic_path
    from matxfer.locking import DirectoryLock

    rows = [
        {**vars(split), "recipe": recipe, "seed": seed, **{name: m[name] for name in METRICS}}
        for recipe, seeds in runs.items()
        for seed, m in seeds.items()
    ]
    if not rows:
        return 0
    lock = DirectoryLock(record.parent, "record of benchmark runs", name=f".{record.name}.lock")
    lock.acquire(wait=60)
    try:
        new = pd.DataFrame(rows, columns=list(COLUMNS))
        if record.is_file():
            old = pd.read_csv(record, dtype={"data": str, "recipe": str})
            replaced = old.set_index(list(KEY)).index.isin(new.set_index(list(KEY)).index)
            new = pd.concat([old[~replaced], new], ignore_index=True)
        new = new.sort_values(list(KEY), kind="stable")
        with atomic_path(record) as tmp:
            new.to_csv(tmp, index=False, float_format="%.6g")
    finally:
        lock.release()
    return len(rows)
