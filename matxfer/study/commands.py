"""``matxfer study plan | run | status | report | retry``: the study runner's commands.

Thin wrappers: they parse options, call :mod:`matxfer.study`, and print with
rich (user text with markup off). Errors are :class:`~matxfer.errors.MatxferError`
and become one line and a non-zero exit in :func:`matxfer.cli.main`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from matxfer.errors import ConfigError

if TYPE_CHECKING:
    from matxfer.study.plan import Job, StudyPlan
    from matxfer.study.spec import StudySpec

study_app = typer.Typer(
    help="Declarative pre-train / fine-tune studies: plan, run (local or Ray), report.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True, markup=False)  # user text verbatim

SpecArgument = Annotated[Path, typer.Argument(help="Study spec (YAML).")]
StudyDirArgument = Annotated[Path, typer.Argument(help="Study directory (made by `study run`).")]
WorkersOption = Annotated[int, typer.Option(help="Jobs at a time; threads per job = cores / N.")]
ExecutorOption = Annotated[str, typer.Option(help="local (processes) or ray.")]
AddressOption = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: start a local one).")
]
GpusOption = Annotated[float, typer.Option(help="GPUs per job (Ray).")]
MaxHoursOption = Annotated[
    float | None, typer.Option(help="Start no job after H hours; running ones resume next time.")
]


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _print_estimate(jobs: list[Job], workers: int) -> None:
    from matxfer.study.cost import estimate
    from matxfer.study.executors import threads_per_job

    threads = threads_per_job(workers)
    console.print(f"estimating cost ({workers} worker(s) × {threads} thread(s)) ...")
    found = estimate(jobs, workers, threads)
    if found is None:
        return
    console.print(
        f"estimated wall time {_hours(found.wall_seconds)} with {workers} worker(s) × "
        f"{threads} thread(s); {found.core_hours:.2f} core-hours, {found.gpu_hours:.2f} GPU-hours"
    )
    for model, calibration in found.calibrations.items():
        console.print(
            f"  from the calibration measured {calibration.measured} "
            f"({calibration.device}, {calibration.threads} thread(s)): "
            f"{calibration.seconds_per_atom_epoch:.3g} s per atom-epoch + "
            f"{calibration.overhead_seconds:.0f} s per job, model {model}",
        )


@study_app.command("plan")
def plan_command(
    spec: SpecArgument,
    workers: WorkersOption = 1,
    estimate: Annotated[
        bool, typer.Option(help="Estimate the cost (calibrates the model once per machine).")
    ] = True,
) -> None:
    """Check a spec against the data and print its jobs, dependencies and estimated cost."""
    from matxfer.study.jobs import plan_study
    from matxfer.study.spec import load_spec

    plan = plan_study(load_spec(spec))
    counts = plan.counts()
    console.print(
        f"{spec}: {len(plan.jobs)} jobs: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()),
    )
    table = Table("kind", "job", "id", "waits for", "epochs", "structures")
    names = {job.id: job.name for job in plan.jobs}
    for job in plan.jobs:
        table.add_row(
            job.kind, job.name, job.id, names.get(job.depends_on or "", "-"), str(job.epochs),
            str(job.structures),
        )  # fmt: skip
    console.print(table)
    for pt, waiting in plan.dependants().items():
        console.print(f"{names[pt]}: {len(waiting)} fine-tuning(s) wait for it")
    if estimate:
        _print_estimate(plan.jobs, workers)


def _save_spec(spec: StudySpec, study_dir: Path) -> None:
    from matxfer.atomic import write_text_atomic
    from matxfer.study.spec import SPEC_COPY

    study_dir.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    write_text_atomic(study_dir / SPEC_COPY, text)


def _run(
    plan: StudyPlan,
    out: Path,
    executor: str,
    workers: int,
    address: str | None,
    gpus: float,
    max_hours: float | None,
) -> None:
    from matxfer.study.executors import run_study

    summary = run_study(
        plan, out, executor, workers, address=address, gpus_per_job=gpus,
        max_hours=max_hours, echo=lambda line: console.print(line),
    )  # fmt: skip
    console.print(
        f"{len(summary.done)} job(s) done, {len(summary.failed)} failed, {summary.skipped} "
        f"already stored, {summary.left} left, in {_hours(summary.seconds)}; results in {out}",
    )
    if summary.failed:
        console.print(f"retry the failed ones with: matxfer study retry {out} --failed")


@study_app.command("run")
def run_command(
    spec: SpecArgument,
    out: Annotated[Path, typer.Option("--out", help="Study directory (created or continued).")],
    executor: ExecutorOption = "local",
    workers: WorkersOption = 1,
    address: AddressOption = None,
    gpus_per_job: GpusOption = 0.0,
    max_hours: MaxHoursOption = None,
) -> None:
    """Run every job of SPEC not yet finished in --out (rerun to resume after a stop)."""
    from matxfer.study.jobs import plan_study
    from matxfer.study.spec import load_spec

    loaded = load_spec(spec)
    plan = plan_study(loaded)
    _save_spec(loaded, out)
    _run(plan, out, executor, workers, address, gpus_per_job, max_hours)


@study_app.command("retry")
def retry_command(
    study_dir: StudyDirArgument,
    failed: Annotated[bool, typer.Option("--failed", help="Run the failed jobs again.")] = False,
    executor: ExecutorOption = "local",
    workers: WorkersOption = 1,
    address: AddressOption = None,
    gpus_per_job: GpusOption = 0.0,
    max_hours: MaxHoursOption = None,
) -> None:
    """Run a study's failed jobs again (and continue its unfinished ones)."""
    from matxfer.study.jobs import plan_study
    from matxfer.study.spec import SPEC_COPY, load_spec
    from matxfer.study.store import forget, read_results

    if not failed:
        raise ConfigError("say what to retry: --failed")
    plan = plan_study(load_spec(study_dir / SPEC_COPY))
    frame = read_results(study_dir)
    ids = list(frame.loc[frame["status"] == "failed", "job_id"])
    forget(study_dir, ids)
    console.print(f"{len(ids)} failed job(s) to run again")
    _run(plan, study_dir, executor, workers, address, gpus_per_job, max_hours)


@study_app.command("status")
def status_command(study_dir: StudyDirArgument) -> None:
    """Jobs done / running / failed / to do, and the estimated time left."""
    from matxfer.locking import DirectoryLock
    from matxfer.study.cost import estimate
    from matxfer.study.executors import RUNNING_DIR, read_study_file
    from matxfer.study.store import read_results

    study, jobs = read_study_file(study_dir)
    frame = read_results(study_dir)
    stored = dict(zip(frame["job_id"], frame["status"], strict=True))
    holder = DirectoryLock(study_dir, purpose="study").holder()
    live = holder is not None and _lock_held(study_dir)
    running = {p.stem for p in (study_dir / RUNNING_DIR).glob("*.json")} if live else set()
    table = Table("kind", "done", "running", "failed", "to do")
    for kind in ("pretrain", "scratch", "finetune"):
        ids = [j.id for j in jobs if j.kind == kind]
        done = sum(stored.get(i) == "done" for i in ids)
        bad = sum(stored.get(i) == "failed" for i in ids)
        run = sum(i in running for i in ids)
        table.add_row(kind, str(done), str(run), str(bad), str(len(ids) - done - bad - run))
    console.print(table)
    if live:
        console.print(
            f"running: pid {holder['pid']} on {holder['host']} since {holder['started']}",
        )
    else:
        console.print("no `study run` is active on this directory")
    for row in frame[frame["status"] == "failed"].itertuples():
        console.print(f"failed {row.kind} {row.job_id}: {row.error}")
    workers = max(1, len(running))
    left = estimate(jobs, workers, _threads(workers), skip=set(stored), measure=False)
    todo = [j for j in jobs if j.id not in stored]
    if not todo:
        console.print(f"all {len(jobs)} jobs stored")
    elif left is None:
        console.print("time left: unknown (no calibration stored; run `matxfer study plan`)")
    else:
        console.print(f"time left: about {_hours(left.wall_seconds)} ({len(todo)} job(s))")
    console.print(f"study {study.get('name')!r} in {study_dir}")


def _threads(workers: int) -> int:
    from matxfer.study.executors import threads_per_job

    return threads_per_job(workers)


def _lock_held(study_dir: Path) -> bool:
    from matxfer.locking import DirectoryLock, LockHeldError

    lock = DirectoryLock(study_dir, purpose="study")
    try:
        lock.acquire()
    except LockHeldError:
        return True
    lock.release()
    return False


@study_app.command("report")
def report_command(
    study_dir: StudyDirArgument,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default: STUDY_DIR/report).")
    ] = None,
) -> None:
    """Tables (Markdown + CSV) and figures of a study's results, beside the study's numbers."""
    from matxfer.study.report import write_report

    start = time.perf_counter()
    result = write_report(study_dir, out)
    console.print(f"report: {result.markdown} ({time.perf_counter() - start:.1f} s)")
    for path in [*result.csv, *result.figures]:
        console.print(f"  {path}")
