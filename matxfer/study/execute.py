"""Run one study job (in whatever process an executor gives it) and return its result row.

A job resumes from its run directory's ``last.ckpt`` when an earlier attempt
was killed, reuses a run that finished (``done.json``) but whose row was never
stored, and starts afresh when the directory holds no checkpoint yet. Any
error becomes a ``failed`` row with one readable line; nothing propagates, so
the other jobs of the study go on.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

from matxfer.errors import MatxferError

#: Every metric column of the results table: (split, metric, units).
_METRICS = [
    (split, metric, units)
    for split in ("test", "val")
    for units in ("original", "transformed")
    for metric in ("r2", "mae", "rmse")
]


def _mean(values: list[float]) -> float:
    finite = [v for v in values if isinstance(v, int | float) and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """Result-table columns from a run's ``metrics.json`` (multi-property runs: mean over
    properties)."""
    names = metrics.get("targets") or []
    row: dict[str, Any] = {}
    for split, metric, units in _METRICS:
        per_target = metrics.get(split) or {}
        values = [per_target.get(n, {}).get(units, {}).get(metric) for n in names]
        column = f"{split}_{metric}" + ("_norm" if units == "transformed" else "")
        row[column] = _mean([v for v in values if v is not None])
    test = metrics.get("test") or {}
    counts = [test.get(n, {}).get("original", {}).get("n") for n in names]
    row["n_test"] = max([c for c in counts if isinstance(c, int)], default=0)
    row["best_epoch"] = metrics.get("best_epoch")
    row["epochs_trained"] = metrics.get("epochs_trained")
    row["stopped_by"] = metrics.get("stopped_by")
    return row


def _test_records(
    targets: list[str], data_dir: str | None, held_out: dict[str, Any] | None = None
) -> list:
    """The test records of the FT targets (for leakage exclusion): their fixed test sets,
    or, for a target without one, the share its FT jobs hold out (``held_out``:
    the spec's ``test_fraction`` and ``test_seed``)."""
    from matxfer.training.config import TrainConfig
    from matxfer.training.inputs import prepare_splits

    config = TrainConfig(**(held_out or {}))
    records = []
    for target in targets:
        records += prepare_splits(target, config, data_dir=data_dir).test
    return records


def _train(settings: dict[str, Any], kind: str, out: Path, pt_dir: Path | None) -> Any:
    """Dispatch to train / pretrain_multi / finetune; returns the TrainResult."""
    from matxfer.training.config import TrainConfig
    from matxfer.training.run import train
    from matxfer.training.rundir import LAST_CHECKPOINT

    config = TrainConfig.model_validate(settings["config"])
    resume = (out / LAST_CHECKPOINT).is_file()
    if not resume and out.exists():
        shutil.rmtree(out)  # killed before its first checkpoint: nothing to keep
    data_dir = settings.get("data_dir")
    common = {"resume": resume, "progress": False}
    if kind == "pretrain" and settings.get("mpt"):
        from matxfer.transfer.multitask import pretrain_multi

        datasets = {name: name for name in settings["mpt"]}
        return pretrain_multi(
            datasets,
            out,
            (),
            config,
            data_dir,
            settings.get("size"),
            exclude_test_structures=settings.get("exclude_test_structures", False),
            **common,
        )
    if kind == "pretrain" and settings.get("exclude_test_of"):
        from matxfer.transfer.pretrained import excluded_splits

        spec = {"data": settings["data"], "data_dir": data_dir, "size": settings.get("size")}
        exclude = _test_records(settings["exclude_test_of"], data_dir, settings.get("held_out"))
        splits, _ = excluded_splits(spec, config, exclude)
        return train(splits, out, config=config, **common)
    options = {"data_dir": data_dir, "trial": settings.get("trial"), "size": settings.get("size")}
    if kind == "finetune":
        from matxfer.transfer.finetune import finetune

        # A `from` source names its model; else the executor passes the finished PT run.
        pretrained = settings.get("pretrained") or pt_dir
        if pretrained is None:
            raise MatxferError("fine-tuning job without a pre-trained model: plan the study again")
        return finetune(
            settings["data"],
            pretrained,
            out,
            settings["strategy"],
            settings["head"],
            config=config,
            **options,
            **common,
        )
    return train(settings["data"], out, config=config, **options, **common)


def _earlier_attempts_seconds(out: Path) -> float:
    """Training seconds an interrupted attempt left in ``out``'s last checkpoint, so that a
    resumed job's ``seconds`` is its whole cost, not just the part after the restart."""
    from matxfer.training.run import trained_seconds
    from matxfer.training.rundir import LAST_CHECKPOINT

    last = out / LAST_CHECKPOINT
    try:
        return trained_seconds(last) if last.is_file() else 0.0
    except Exception:  # an unreadable checkpoint is _train's to report, not the timer's
        return 0.0


def _one_line(error: BaseException) -> str:
    if isinstance(error, MatxferError):
        text = str(error)
    else:
        where = traceback.extract_tb(error.__traceback__)[-1:] if error.__traceback__ else []
        place = f" at {Path(where[0].filename).name}:{where[0].lineno}" if where else ""
        text = f"{type(error).__name__}: {error}{place}"
    return " ".join(text.split())[:500]


def run_job(
    job: dict[str, Any], study_dir: str | Path, pt_dir: str | Path | None = None
) -> dict[str, Any]:
    """Run one job and return its result row (never raises for a failing job).

    Args:
        job: ``Job.describe()`` plus ``settings`` and ``run_dir``.
        study_dir: The study directory.
        pt_dir: The finished pre-training run a fine-tuning starts from (``None`` for one
            from an already pre-trained model: its ``settings`` name it).
    """
    import torch

    from matxfer import __version__
    from matxfer.training.rundir import is_finished, read_metrics, read_run_info

    out = Path(job["run_dir"])
    start = time.perf_counter()
    row = {
        k: job.get(k)
        for k in (
            "job_id",
            "kind",
            "target",
            "source",
            "pt_job_id",
            "pt_size",
            "size",
            "trial",
            "seed",
            "strategy",
            "head",
            "lr",
            "sampling",
            "profile",
        )
    }
    row.update(
        run_dir=str(out.resolve()),
        settings=json.dumps(job["settings"], sort_keys=True, default=str),
        host=socket.gethostname(),
        matxfer_version=__version__,
        torch_version=torch.__version__,
    )
    try:
        if is_finished(out):
            metrics = read_metrics(out)
            seconds = math.nan  # trained by an earlier, interrupted attempt
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            earlier = _earlier_attempts_seconds(out)
            metrics = _train(job["settings"], job["kind"], out, Path(pt_dir) if pt_dir else None)
            metrics = metrics.metrics
            seconds = time.perf_counter() - start + earlier
        info = read_run_info(out, required=False)
        row.update(metric_columns(metrics), status="done", error=None, seconds=seconds)
        row["threads"] = info.get("cpu_threads") or 0
    except BaseException as error:  # a failed job is recorded; the others go on
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        row.update(status="failed", error=_one_line(error), seconds=time.perf_counter() - start)
    row["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return row
