"""A run directory's life cycle: new, resumed or overwritten; then marked finished.

Every command that writes a run (``train``, ``finetune``, ``pretrain-multi``,
the demo's steps) holds the directory's :class:`~matxfer.locking.DirectoryLock`
for the whole run, and checks the directory under it:

* a new run needs an empty (or absent) directory; one holding anything else
  is refused unless ``overwrite`` clears it first, so an old run's logs never
  merge into the new run's curves;
* a resumed run needs ``last.ckpt`` and the same config (``devices`` and
  ``strategy`` may change); the temporary files a killed run left behind are
  removed (only now, under the lock: another live process's temporary files
  are never touched);
* ``done.json`` (:data:`DONE_FILE`) is written after every other output, so
  :func:`is_finished` is the one test of whether a run finished: a run killed
  while writing its outputs (``metrics.json`` comes first) is not finished.

In a multi-process (DDP) job only rank 0 checks and clears the directory: the
other ranks start after it has (see :mod:`matxfer.ranks`).

This module also owns the run layout: the names of a run directory's files are
constants here, and its records (config, run info, metrics, transfer record) are
read and written only through the functions here, so a file's name and format
change in one place.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from matxfer import __version__
from matxfer.errors import ConfigError, MatxferError
from matxfer.locking import LOCK_FILE
from matxfer.ranks import is_secondary_rank
from matxfer.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT, read_checkpoint
from matxfer.training.config import PARALLEL_KEYS, TrainConfig, load_config, save_config

#: The resolved training config (YAML).
CONFIG_FILE = "config.yaml"
#: How the run was set up: data hashes, data spec, CPU threads, versions.
RUN_INFO_FILE = "run_info.json"
#: The best weights' metrics on every split (written first of the outputs).
METRICS_FILE = "metrics.json"
#: Test-set predictions beside their labels.
PREDICTIONS_TEST_FILE = "predictions_test.csv"
PARITY_PLOT = "parity.png"
LEARNING_CURVE_PLOT = "learning_curve.png"
MODEL_CARD_FILE = "MODEL_CARD.md"
#: Lightning's loggers write under ``logs/csv`` and ``logs/tensorboard``.
LOG_DIR = "logs"
CSV_LOGGER = "csv"
TENSORBOARD_LOGGER = "tensorboard"
CSV_LOG_DIR = f"{LOG_DIR}/{CSV_LOGGER}"
#: A fine-tuning run's transfer settings and leakage audit.
TRANSFER_FILE = "transfer.json"
#: A multi-property pre-training run's merge of its datasets (and its data spec).
MERGE_REPORT_FILE = "merge_report.json"
#: Written last: the run finished and every output is complete.
DONE_FILE = "done.json"
# BEST_CHECKPOINT and LAST_CHECKPOINT (imported above) are part of the layout too;
# they are defined beside the checkpoint format in matxfer.training.checkpoint.


def is_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a finished run (every output written, ``done.json`` last).

    Every "is this run finished?" check uses this (reuse of cached runs by the
    demo, the benchmarks, fine-tuning's excluded pre-training, studies).
    """
    run_dir = Path(run_dir)
    return (run_dir / DONE_FILE).is_file() and (run_dir / BEST_CHECKPOINT).is_file()


def mark_finished(run_dir: Path) -> None:
    """Write ``done.json``; call after every other output of the run is written."""
    from matxfer.training.outputs import write_json  # lazy: pandas and matplotlib

    finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    write_json(run_dir / DONE_FILE, {"finished": finished, "matxfer": __version__})


def _contents(out: Path, keep: Collection[str]) -> list[Path]:
    """What ``out`` holds besides the lock and the caller's ``keep`` entries."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name != LOCK_FILE and p.name not in keep)


def _clear(entries: list[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_new_run_dir(out: Path, overwrite: bool = False, keep: Collection[str] = ()) -> None:
    """Refuse a non-empty ``out`` for a new run, or clear it with ``overwrite``.

    Call while holding ``out``'s lock.

    Args:
        out: The run directory.
        overwrite: Delete what ``out`` holds (an old run) instead of refusing.
        keep: Names the caller wrote into ``out`` for this run before training
            (e.g. fine-tuning's ``transfer.json``): neither refused nor cleared.

    Raises:
        MatxferError: ``out`` holds a run (or other files) and ``overwrite`` is off.
    """
    entries = _contents(out, keep)
    if not entries or overwrite:
        _clear(entries)
        return
    if any(p.name in (LAST_CHECKPOINT, BEST_CHECKPOINT) for p in entries):
        raise MatxferError(
            f"{out} already holds a training run; pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    names = ", ".join(p.name for p in entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise MatxferError(
        f"{out} is not empty (holds {names}) but holds no checkpoint to resume; pass "
        "--overwrite to delete its content and start a new run there, or choose another --out"
    )


def check_start(
    out: Path, resume: bool, overwrite: bool = False, keep: Collection[str] = ()
) -> None:
    """The checks of a run's start that need no config: callers run them before
    expensive preparation (a merge, a pre-training); under ``out``'s lock.

    A new run gets an empty ``out`` (:func:`check_new_run_dir`); a resumed one
    needs ``last.ckpt``.

    Raises:
        ConfigError: ``resume`` and ``overwrite`` together.
        MatxferError: Nothing to resume, or an occupied directory for a new run.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; choose one")
    if is_secondary_rank():  # rank 0 checked (and prepared) the directory before starting us
        return
    if not resume:
        check_new_run_dir(out, overwrite, keep)
    elif not (out / LAST_CHECKPOINT).is_file():
        raise MatxferError(f"{out}: nothing to resume (no {LAST_CHECKPOINT}); drop --resume")


def _normalised(saved: Any) -> Any:
    """A saved config as this version writes it (fields of earlier versions dropped,
    new ones at their defaults), so a run started before an upgrade still resumes; as
    read when it is not a valid config (the comparison then names what differs)."""
    try:
        return TrainConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return saved


def check_run_dir(
    out: Path,
    config: TrainConfig,
    resume: bool,
    overwrite: bool = False,
    keep: Collection[str] = (),
) -> None:
    """Check ``out`` for a new or resumed run (see the module docstring); under its lock.

    Raises:
        ConfigError: ``resume`` and ``overwrite`` together, or a resume with a
            different config.
        MatxferError: Nothing to resume, a corrupted ``last.ckpt``, or an
            occupied directory for a new run without ``overwrite``.
    """
    check_start(out, resume, overwrite, keep)
    if not resume or is_secondary_rank():
        return
    last = out / LAST_CHECKPOINT
    saved_path = out / CONFIG_FILE
    saved = _normalised(yaml.safe_load(saved_path.read_text())) if saved_path.is_file() else None
    # Devices and strategy may change: the global batches stay the same (see loaders).
    current = config.model_dump(mode="json", exclude=set(PARALLEL_KEYS))
    if saved is not None:
        saved = {k: v for k, v in saved.items() if k not in PARALLEL_KEYS}
    if saved is not None and saved != current:
        # Both sides' keys: a field written only when set (ema_decay) may be in one alone.
        changed = sorted(k for k in current.keys() | saved.keys() if saved.get(k) != current.get(k))
        raise ConfigError(
            f"{out}: cannot resume with a different config (changed: {changed}); "
            f"use the options of the interrupted run (see {saved_path}) or a new --out"
        )
    read_checkpoint(last)  # a clear error now rather than inside Lightning
    for stale in out.glob(".*.tmp"):  # half-written files of the killed run
        stale.unlink()
    (out / DONE_FILE).unlink(missing_ok=True)  # no longer finished once training goes on


def saved_threads(out: Path) -> int | None:
    """The CPU thread count an interrupted run in ``out`` trained with, if recorded."""
    try:
        threads = read_run_info(out).get("cpu_threads")
    except MatxferError:
        return None
    return threads if isinstance(threads, int) and threads > 0 else None


def check_same_data(out: Path, info: dict[str, Any], resume: bool) -> None:
    """Refuse to resume a run on other data than it started with (by data hash)."""
    if resume and (out / RUN_INFO_FILE).is_file():
        saved = read_run_info(out)
        if saved.get("data_hash") != info["data_hash"]:
            raise MatxferError(
                f"{out}: the data differ from those of the interrupted run "
                "(data hash changed); resume with the same data and options"
            )


# -- the run's records --------------------------------------------------------


def _read_record(path: Path) -> dict[str, Any]:
    """A JSON object a run wrote; a clear error when it is missing or damaged."""
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise MatxferError(f"{path} is missing; is {path.parent} a finished matxfer run?") from None
    except (OSError, ValueError) as error:
        raise MatxferError(f"{path}: unreadable ({error}); rerun the run to rewrite it") from None
    if not isinstance(record, dict):
        raise MatxferError(f"{path}: expected a JSON object, found {type(record).__name__}")
    return record


def _write_record(path: Path, record: dict[str, Any]) -> None:
    from matxfer.training.outputs import write_json  # lazy: pandas and matplotlib

    write_json(path, record)


def read_config(run_dir: Path) -> TrainConfig:
    """The resolved config of the run in ``run_dir`` (``config.yaml``).

    Raises:
        MatxferError: ``run_dir`` has no ``config.yaml``.
        ConfigError: The file does not hold a valid config.
    """
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise MatxferError(f"{run_dir}: no {CONFIG_FILE}; is it a matxfer training run?")
    return load_config(path)


def write_config(run_dir: Path, config: TrainConfig) -> None:
    """Write ``config.yaml`` (atomically)."""
    save_config(config, run_dir / CONFIG_FILE)


def read_run_info(run_dir: Path, required: bool = True) -> dict[str, Any]:
    """``run_info.json``; ``{}`` when it is absent and not ``required``."""
    path = run_dir / RUN_INFO_FILE
    if not required and not path.is_file():
        return {}
    return _read_record(path)


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    """Write ``run_info.json`` (strict JSON, atomically)."""
    _write_record(run_dir / RUN_INFO_FILE, info)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """``metrics.json`` of a run that wrote its outputs."""
    return _read_record(run_dir / METRICS_FILE)


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` (strict JSON: NaN as ``null``, atomically)."""
    _write_record(run_dir / METRICS_FILE, metrics)


def read_transfer_record(run_dir: Path) -> dict[str, Any]:
    """``transfer.json`` of a fine-tuning run."""
    return _read_record(run_dir / TRANSFER_FILE)


def write_transfer_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``transfer.json`` (strict JSON, atomically)."""
    _write_record(run_dir / TRANSFER_FILE, record)


def config_for_run(
    config_file: str | Path | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
) -> TrainConfig:
    """The config of a new or resumed run.

    A new run: profile → ``config_file`` → ``overrides``. A resumed run with
    neither ``config_file`` nor ``profile``: the run's saved ``config.yaml``
    → ``overrides`` (so ``--resume`` alone continues the run as configured).

    Args:
        config_file: YAML file.
        profile: Profile name.
        overrides: Values from command-line flags (``None`` values are ignored).
        run_dir: The run directory (used when resuming).
        resume: Whether the run is resumed.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    saved = Path(run_dir) / CONFIG_FILE if run_dir is not None else None
    if resume and config_file is None and profile is None and saved is not None and saved.is_file():
        return load_config(saved, overrides=given)
    return load_config(config_file, profile=profile, overrides=given)
