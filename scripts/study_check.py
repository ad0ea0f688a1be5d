"""Check a finished study against its plan, and two study directories against each other.

Usage::

    python scripts/study_check.py DIR [--workers 2] [--since 2026-12-04T07:38:19]
    python scripts/study_check.py DIR --compare OTHER_DIR

The first prints, per job kind, the summed seconds ``plan`` estimated (from the
stored calibration of this machine) against the seconds the jobs took, and the
simulated wall time of the jobs that finished after ``--since`` (default: all)
against the measured span from ``--since`` to the last of them. ``--compare``
checks that the jobs both directories ran have the same ids and test metrics
(e.g. a local run and a Ray run of the same spec).
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from matxfer.study.cost import estimate, simulate_wall
from matxfer.study.executors import read_study_file, threads_per_job
from matxfer.study.store import read_results


def plan_vs_measured(study_dir: Path, workers: int, since: str | None) -> None:
    _, jobs = read_study_file(study_dir)
    frame = read_results(study_dir).set_index("job_id")
    found = estimate(jobs, workers, threads_per_job(workers), measure=False)
    if found is None:
        raise SystemExit("no stored calibration for this machine: run `matxfer study plan` first")
    frame["estimated"] = pd.Series(found.job_seconds)
    done = frame[frame["status"] == "done"]
    print(f"{study_dir}: {len(done)} of {len(jobs)} jobs done, {workers} worker(s)")
    for kind, part in done.groupby("kind"):
        timed = part.dropna(subset=["seconds"])
        ratio = timed["seconds"] / timed["estimated"]
        print(
            f"  {kind:9s} {len(part):3d} jobs: estimated {timed['estimated'].sum() / 60:6.1f} min,"
            f" measured {timed['seconds'].sum() / 60:6.1f} min"
            f" (per job measured/estimated: median {ratio.median():.2f},"
            f" range {ratio.min():.2f}-{ratio.max():.2f})"
        )
    finished = pd.to_datetime(done["finished"], utc=True)
    start = pd.Timestamp(since, tz="UTC") if since else None
    if start is None:
        start = finished.min() - pd.Timedelta(seconds=float(done["seconds"].iloc[0]))
    late = [j for j in jobs if j.id in done.index and finished[j.id] > start]
    seconds = {j.id: float(frame.loc[j.id, "estimated"]) for j in late}
    wall = simulate_wall(late, seconds, workers)
    span = (finished[[j.id for j in late]].max() - start).total_seconds()
    print(
        f"  wall for the {len(late)} jobs finished after {start.isoformat()}: "
        f"estimated {wall / 60:.1f} min (without worker start-up), measured {span / 60:.1f} min"
    )


def compare(first: Path, second: Path) -> None:
    a = read_results(first).set_index("job_id")
    b = read_results(second).set_index("job_id")
    both = sorted(set(a.index) & set(b.index))
    print(f"{first}: {len(a)} jobs, {second}: {len(b)} jobs, {len(both)} ids in both")
    print(f"  only in {second}: {sorted(set(b.index) - set(a.index))}")
    for column in ("test_r2", "test_mae", "val_mae", "epochs_trained", "best_epoch"):
        diff = (a.loc[both, column].astype(float) - b.loc[both, column].astype(float)).abs()
        print(f"  max |Δ {column}| = {np.nanmax(diff.to_numpy()):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--since", help="ISO time (UTC) the measured span starts at")
    parser.add_argument("--compare", type=Path, help="another study directory")
    args = parser.parse_args()
    if args.compare:
        compare(args.study_dir, args.compare)
    else:
        plan_vs_measured(args.study_dir, args.workers, args.since)
    print(f"checked {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
