"""Run a study's jobs: locally (one process per job) or on a Ray cluster.

Both executors follow the same rules:

* one driver per study directory (a :class:`~matxfer.locking.DirectoryLock`;
  a second ``study run`` is refused, naming the first's pid and host);
* the driver alone writes results (:mod:`~matxfer.study.store`), one atomic
  Parquet file per job, so ``kill -9`` at any moment loses no finished job
  and duplicates none; a rerun skips stored jobs and resumes a half-trained
  one from its ``last.ckpt`` (:mod:`~matxfer.study.execute`);
* a fine-tuning starts only after its pre-training has finished; if that
  pre-training failed, its fine-tunings are recorded as failed with the reason;
* threads per job = cores / workers (no oversubscription).

``local`` starts a fresh process per job (``spawn``), so every job has clean
library state and a job can be stopped without touching the others; the
children die with the driver (``PR_SET_PDEATHSIG``), never training on as
orphans beside a rerun. ``ray`` submits Ray core tasks with per-job
``num_cpus``/``num_gpus`` resources, a fine-tuning's pre-training passed as an
object ref (Ray runs it once that task has finished), to a local
``ray.init()`` or an existing cluster (``address``); the study directory must
then be on storage every node sees. Ray Tune is not used: its trials cannot
express pre-training → fine-tuning dependencies, and a study's grid grows.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import DirectoryLock
from matxfer.study.execute import run_job
from matxfer.study.plan import Job, StudyPlan
from matxfer.study.store import read_results, write_result

ExecutorName = Literal["local", "ray"]
RUNNING_DIR = "running"
LOG_DIR = "logs"
STUDY_FILE = "study.json"


@dataclass
class RunSummary:
    """What one ``study run`` did.

    Attributes:
        done: Jobs finished by this run.
        failed: Jobs that failed in this run.
        skipped: Jobs already stored before it started.
        left: Jobs not run (time budget spent).
        seconds: Wall time.
    """

    done: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: int = 0
    left: int = 0
    seconds: float = 0.0


def cpu_cores() -> int:
    """Cores this process may use (affinity and cgroup quota)."""
    from matxfer.training.threads import usable_cores

    return usable_cores()


def threads_per_job(workers: int) -> int:
    """Cores / workers, at least one."""
    return max(1, cpu_cores() // max(1, workers))


def job_payload(job: Job, study_dir: Path) -> dict[str, Any]:
    """What a worker needs to run ``job`` (plain JSON-ready data)."""
    return {**job.describe(), "settings": job.settings, "run_dir": str(job.run_dir(study_dir))}


def failed_row(job: Job, error: str) -> dict[str, Any]:
    """The result row of a job that failed before or outside :func:`run_job`."""
    import datetime as dt

    return {
        **job.describe(),
        "status": "failed",
        "error": error,
        "settings": json.dumps(job.settings, sort_keys=True, default=str),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
    }


def _failed_dependency(job: Job, pt_row: dict[str, Any]) -> dict[str, Any]:
    return failed_row(job, f"pre-training job {job.depends_on} failed: {pt_row.get('error')}")


def write_study_file(plan: StudyPlan, study_dir: Path) -> None:
    """``study.json``: the spec and every job (``status`` and ``report`` read it)."""
    from matxfer.atomic import write_text_atomic

    study = {
        "name": plan.spec.name,
        "spec": plan.spec.model_dump(mode="json"),
        "jobs": [asdict(job) | {"run_dir": str(job.run_dir(study_dir))} for job in plan.jobs],
    }
    write_text_atomic(study_dir / STUDY_FILE, json.dumps(study, indent=1) + "\n")


def read_study_file(study_dir: str | Path) -> tuple[dict[str, Any], list[Job]]:
    """The spec (as stored) and the jobs of a study directory.

    Raises:
        MatxferError: ``study_dir`` holds no study (no ``study.json``) or an unreadable one.
    """
    path = Path(study_dir) / STUDY_FILE
    try:
        study = json.loads(path.read_text())
        jobs = [Job(**{k: v for k, v in j.items() if k != "run_dir"}) for j in study["jobs"]]
    except FileNotFoundError:
        raise MatxferError(
            f"{study_dir}: not a study directory (no {STUDY_FILE}); "
            "create one with `matxfer study run SPEC --out DIR`"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise MatxferError(f"{path}: unreadable study file ({error})") from None
    return study, jobs


# ---------------------------------------------------------------- the local executor


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; else a no-op)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _job_process_setup(payload: dict[str, Any], study_dir: str, threads: int) -> None:
    """Threads, and the job's output (Lightning's notes, warnings) into ``logs/<job>.log``."""
    os.environ["MATXFER_THREADS"] = str(threads)
    log = Path(study_dir) / LOG_DIR / f"{Path(payload['run_dir']).name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as handle:
        for stream in (1, 2):
            os.dup2(handle.fileno(), stream)


def _local_worker(threads: int, jobs: Any, results: Any) -> None:
    """A worker process: runs the jobs it is handed, one at a time, until told to stop.

    Imports (torch, Lightning, pymatgen: seconds) are paid once per worker, not per job.
    """
    _die_with_parent()
    while True:
        item = jobs.get()
        if item is None:
            return
        payload, study_dir, pt_dir = item
        _job_process_setup(payload, study_dir, threads)
        results.put((payload["job_id"], run_job(payload, study_dir, pt_dir)))


class _Worker:
    """One local worker process and the job it is running."""

    def __init__(self, context: Any, threads: int, results: Any) -> None:
        self.jobs = context.Queue()
        self.process = context.Process(
            target=_local_worker, args=(threads, self.jobs, results), daemon=True
        )
        self.process.start()
        self.job: str | None = None

    def stop(self) -> None:
        if self.process.is_alive():
            self.jobs.put(None)
            self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()


class _Scheduler:
    """Jobs in dependency order; records results as they come."""

    def __init__(
        self, plan: StudyPlan, study_dir: Path, echo: Callable[[str], None], deadline: float | None
    ) -> None:
        self.plan, self.study_dir, self.echo, self.deadline = plan, study_dir, echo, deadline
        self.jobs = plan.by_id()
        self.rows = {
            row["job_id"]: row
            for row in read_results(study_dir).to_dict("records")
            if row["job_id"] in self.jobs
        }
        self.status: dict[str, str] = {job_id: row["status"] for job_id, row in self.rows.items()}
        self.todo = [job for job in plan.jobs if job.id not in self.status]
        self.summary = RunSummary(skipped=len(self.status))

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def ready(self) -> list[Job]:
        """Jobs whose pre-training is done (dependants of failed ones are recorded failed)."""
        ready = []
        for job in list(self.todo):
            dep = job.depends_on
            if dep is not None and self.status.get(dep) == "failed":
                self.todo.remove(job)
                self.record(_failed_dependency(job, self.rows.get(dep, {})))
            elif dep is None or self.status.get(dep) == "done":
                ready.append(job)
        return ready

    def pt_dir(self, job: Job) -> str | None:
        if job.depends_on is None:
            return None
        return str(self.jobs[job.depends_on].run_dir(self.study_dir))

    def mark_running(self, job: Job) -> None:
        from matxfer.atomic import write_text_atomic

        folder = self.study_dir / RUNNING_DIR
        folder.mkdir(exist_ok=True)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        write_text_atomic(folder / f"{job.id}.json", json.dumps(info))
        self.echo(f"start  {job.kind:9s} {job.name}")

    def record(self, row: dict[str, Any]) -> None:
        job_id = row["job_id"]
        write_result(self.study_dir, row)
        with contextlib.suppress(FileNotFoundError):
            (self.study_dir / RUNNING_DIR / f"{job_id}.json").unlink()
        self.status[job_id], self.rows[job_id] = row["status"], row
        job = self.jobs[job_id]
        if row["status"] == "done":
            self.summary.done.append(job_id)
            self.echo(
                f"done   {job.kind:9s} {job.name}: test R² {row.get('test_r2', float('nan')):.3f}"
                f", MAE {row.get('test_mae', float('nan')):.4g} ({row.get('seconds', 0):.0f} s)"
            )
        else:
            self.summary.failed.append(job_id)
            self.echo(f"FAILED {job.kind:9s} {job.name}: {row.get('error')}")


def _died(scheduler: _Scheduler, job_id: str, exitcode: int | None) -> None:
    job = scheduler.jobs[job_id]
    scheduler.record(failed_row(job, f"worker process died (exit code {exitcode})"))


def _run_local(scheduler: _Scheduler, workers: int, threads: int) -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    pool: list[_Worker] = []  # started on demand: a rerun with nothing to do starts none
    try:
        while True:
            busy = [w for w in pool if w.job is not None]
            if scheduler.out_of_time():
                if busy:  # they resume from last.ckpt next time
                    for worker in busy:
                        worker.process.kill()
                    scheduler.echo(f"time budget spent: stopped {len(busy)} running job(s)")
                break
            while len(busy) < workers:
                ready = [j for j in scheduler.ready() if j in scheduler.todo]
                if not ready:
                    break
                idle = [w for w in pool if w.job is None]
                worker = idle[0] if idle else _Worker(context, threads, results)
                if not idle:
                    pool.append(worker)
                busy.append(worker)
                job = ready[0]
                scheduler.todo.remove(job)
                scheduler.mark_running(job)
                worker.job = job.id
                worker.jobs.put(
                    (
                        job_payload(job, scheduler.study_dir),
                        str(scheduler.study_dir),
                        scheduler.pt_dir(job),
                    )
                )
            if all(w.job is None for w in pool):
                break  # nothing running and nothing ready: done
            try:
                job_id, row = results.get(timeout=0.5)
            except queue.Empty:
                for worker in [w for w in pool if w.job and not w.process.is_alive()]:
                    _died(scheduler, worker.job, worker.process.exitcode)  # type: ignore[arg-type]
                    pool.remove(worker)
                continue
            for worker in pool:
                if worker.job == job_id:
                    worker.job = None
            scheduler.record(row)
    finally:
        for worker in pool:
            worker.stop()


# ---------------------------------------------------------------- the Ray executor


def _ray_task(
    payload: dict[str, Any], study_dir: str, pt: dict[str, Any] | str | None, threads: int
) -> dict[str, Any]:
    """A Ray task: ``pt`` is the pre-training's result row (an object ref Ray resolved)."""
    if isinstance(pt, dict):
        if pt.get("status") != "done":
            return {"__failed_dependency__": pt}
        pt = pt["run_dir"]
    _job_process_setup(payload, study_dir, threads)
    return run_job(payload, study_dir, pt)


def _run_ray(
    scheduler: _Scheduler, workers: int, threads: int, address: str | None, gpus: float
) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'ray[default]' (or matxfer[ray])"
        ) from None
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            options["address"] = address
        else:
            options["num_cpus"] = workers * threads
        ray.init(**options)
    task = ray.remote(_ray_task)
    refs: dict[str, Any] = {}
    by_ref: dict[Any, Job] = {}
    for job in scheduler.ready() + [j for j in scheduler.todo if j.depends_on is not None]:
        if job.id in refs:
            continue
        dep = job.depends_on
        pt: Any = None
        if dep is not None:
            pt = refs[dep] if dep in refs else scheduler.rows.get(dep)
        if dep is not None and pt is None:
            continue  # its pre-training is neither stored nor submitted (cannot happen)
        scheduler.mark_running(job)
        ref = task.options(num_cpus=threads, num_gpus=gpus).remote(
            job_payload(job, scheduler.study_dir), str(scheduler.study_dir), pt, threads
        )
        refs[job.id], by_ref[ref] = ref, job
    scheduler.todo = [j for j in scheduler.todo if j.id not in refs]
    pending = list(by_ref)
    while pending:
        if scheduler.out_of_time():
            for ref in pending:
                ray.cancel(ref, force=True)
            scheduler.echo(f"time budget spent: stopped {len(pending)} job(s)")
            break
        done, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        for ref in done:
            job = by_ref[ref]
            try:
                row = ray.get(ref)
            except Exception as error:  # the task itself died (node lost, OOM)
                row = failed_row(job, f"Ray task failed: {error}")
            if "__failed_dependency__" in row:
                row = _failed_dependency(job, row["__failed_dependency__"])
            scheduler.record(row)
    scheduler.ready()  # records dependants of failed pre-trainings stored earlier


# ---------------------------------------------------------------- entry point


def run_study(
    plan: StudyPlan,
    study_dir: str | Path,
    executor: ExecutorName = "local",
    workers: int = 1,
    *,
    address: str | None = None,
    gpus_per_job: float = 0.0,
    max_hours: float | None = None,
    echo: Callable[[str], None] = print,
) -> RunSummary:
    """Run every job of ``plan`` not yet stored in ``study_dir``.

    Args:
        plan: The study's jobs.
        study_dir: Results, runs and ``study.json`` (created).
        executor: ``local`` or ``ray``.
        workers: Jobs at a time (local; Ray: the local cluster's size in jobs).
        address: Ray cluster address (``ray``; default: start a local one).
        gpus_per_job: ``num_gpus`` of each Ray task.
        max_hours: Start no job after this many hours; stop running ones then
            (they resume from ``last.ckpt`` on the next run).
        echo: Receives one line per job start/finish.

    Raises:
        LockHeldError: Another ``study run`` uses ``study_dir``.
        ConfigError: Bad executor options.
    """
    if executor not in ("local", "ray"):
        raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: give at least 1")
    if gpus_per_job < 0:
        raise ConfigError(f"--gpus-per-job {gpus_per_job:g}: give 0 or more")
    if max_hours is not None and max_hours <= 0:
        raise ConfigError(f"--max-hours {max_hours:g}: give a positive number of hours")
    study_dir = Path(study_dir)
    start = time.time()
    deadline = start + max_hours * 3600 if max_hours is not None else None
    with DirectoryLock(study_dir, purpose="study"):
        write_study_file(plan, study_dir)
        for stale in (study_dir / RUNNING_DIR).glob("*.json"):
            stale.unlink()  # left by a killed driver; we hold the lock now
        scheduler = _Scheduler(plan, study_dir, echo, deadline)
        threads = threads_per_job(workers)
        if executor == "local":
            _run_local(scheduler, workers, threads)
        else:
            _run_ray(scheduler, workers, threads, address, gpus_per_job)
        scheduler.summary.left = len(scheduler.todo)
        scheduler.summary.seconds = time.time() - start
        return scheduler.summary
