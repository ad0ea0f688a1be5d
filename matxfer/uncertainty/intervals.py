"""``matxfer predict|evaluate RUN DATA --interval 0.9``: calibrated intervals.

RUN is a study directory (members picked by ``--select``, see
:mod:`matxfer.study.ensemble`), a directory of ``member-<k>`` runs, or one run
directory or checkpoint (one member: constant-width intervals). The members'
calibration (:mod:`~matxfer.uncertainty.conformal`) is computed on the records
:mod:`~matxfer.uncertainty.calset` allows, or on ``--calibration FILE``, once: it is
cached under ``$MATXFER_CACHE/conformal`` keyed by the members' checkpoints and the
file, so ``predict`` reuses what ``evaluate`` computed (and any level reuses it), and a
copy is written beside every output (``<out>.calibration.json``).

``predict`` adds ``prediction_lower`` and ``prediction_upper`` (``<name>_prediction_lower``
... for several targets) beside the ensemble's mean (``prediction``) and spread
(``prediction_std``). ``evaluate`` adds coverage, widths, miscalibration area and the
Spearman correlation of |error| with the spread
(:func:`~matxfer.uncertainty.diagnostics.interval_metrics`) and draws
:func:`~matxfer.uncertainty.plots.plot_calibration` beside its JSON.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from matxfer.errors import ConfigError, MatxferError
from matxfer.paths import cache_dir
from matxfer.study.ensemble import (
    Ensemble,
    default_evaluation_path,
    ensemble_metrics,
    ensemble_of,
    load_ensemble,
    prediction_frame,
)
from matxfer.study.selection import is_study_dir
from matxfer.training.inputs import records_to_predict
from matxfer.training.outputs import prediction_columns, write_csv, write_json
from matxfer.training.predictor import dataset_name, labels_of, read_labelled
from matxfer.training.rundir import is_finished
from matxfer.uncertainty.calset import automatic_calibration_set, file_calibration_set
from matxfer.uncertainty.conformal import ConformalCalibration, calibrate, check_level
from matxfer.uncertainty.diagnostics import interval_metrics
from matxfer.uncertainty.members import MEMBER_PREFIX
from matxfer.uncertainty.plots import plot_calibration

#: Bumped when the stored calibration's meaning changes (invalidates the cache).
CALIBRATION_VERSION = 1


@dataclass
class Calibration:
    """An ensemble's conformal calibration, per target, with its provenance."""

    targets: dict[str, ConformalCalibration]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CALIBRATION_VERSION,
            **self.provenance,
            "targets": {name: cal.to_dict() for name, cal in self.targets.items()},
        }

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> Calibration:
        targets = {n: ConformalCalibration.from_dict(c) for n, c in stored["targets"].items()}
        provenance = {k: v for k, v in stored.items() if k not in ("targets", "version")}
        return cls(targets, provenance)

    def summary(self, level: float) -> dict[str, Any]:
        """What outputs record: provenance, and per target n, q at ``level``, beta."""
        return {
            **self.provenance,
            "level": level,
            "targets": {
                name: {"n": cal.n, "q": cal.quantile(level), "normalised": cal.normalised,
                       "beta": cal.beta}
                for name, cal in self.targets.items()
            },
        }  # fmt: skip


def member_dirs(path: Path) -> list[Path]:
    """The ``member-<k>`` run directories of an ensemble directory, in ``k`` order."""
    if not path.is_dir():
        return []
    found = [p for p in path.glob(f"{MEMBER_PREFIX}*") if p.is_dir()]
    return sorted(found, key=lambda p: (len(p.name), p.name))


def load_members(run: Path, select: str | None, results: pd.DataFrame | None = None) -> Ensemble:
    """The ensemble RUN names (see the module docstring).

    Raises:
        MatxferError: ``--select`` without a study directory, or what
            :func:`~matxfer.study.ensemble.load_ensemble` raises.
    """
    if is_study_dir(run):
        return load_ensemble(run, select or "", results)
    if select is not None:
        raise MatxferError(
            f"--select picks runs of a study, but {run} is not a study directory (one with "
            "study.json, spec.yaml or results/*.parquet); drop --select"
        )
    paths = member_dirs(run) or [run]
    unfinished = [p.name for p in paths if p != run and not is_finished(p)]
    if unfinished:
        raise MatxferError(
            f"{run}: member(s) {', '.join(unfinished)} did not finish training; finish them "
            "with the command that made them (`matxfer train|finetune ... --ensemble K`) and "
            "--resume, or move them out"
        )
    runs = pd.DataFrame({"job_id": [p.name for p in paths], "run_dir": [str(p) for p in paths]})
    return ensemble_of(runs, str(run))


def _fingerprint(paths: list[Path]) -> list[list[Any]]:
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]


def _cache_path(ensemble: Ensemble, calibration_file: Path | None) -> Path:
    files = [p.loaded.path for p in ensemble.predictors]
    key = {
        "version": CALIBRATION_VERSION,
        "checkpoints": _fingerprint(files),
        "file": _fingerprint([calibration_file]) if calibration_file is not None else None,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir() / "conformal" / f"{digest}.json"


def compute_calibration(
    ensemble: Ensemble,
    calibration_file: Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
) -> Calibration:
    """Calibrate ``ensemble`` on ``calibration_file`` or on the automatic set (no cache).

    Raises:
        MatxferError: Too few calibration records, or unknown member records (the
            message says to pass ``--calibration FILE``).
    """
    names = ensemble.target_names
    run_dirs = list(ensemble.runs["run_dir"])
    if calibration_file is None:
        chosen = automatic_calibration_set(run_dirs)
    else:
        chosen = file_calibration_set(
            calibration_file, run_dirs, names, format, target_key, skip_invalid
        )
    members = ensemble.member_predictions(chosen.records)
    mean, std = members.mean(axis=0), members.std(axis=0)
    labels = labels_of(chosen.records, names)
    ids = [r.id for r in chosen.records]
    try:
        targets = {
            name: calibrate(labels[:, k], mean[:, k], std[:, k], ids)
            for k, name in enumerate(names)
        }
    except MatxferError as error:
        raise MatxferError(f"calibration on {chosen.source} ({chosen.method}): {error}") from None
    provenance = {
        "members": ensemble.job_ids,
        "checkpoints": [str(p.loaded.path) for p in ensemble.predictors],
        "calibration": chosen.describe(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return Calibration(targets, provenance)


def get_calibration(
    ensemble: Ensemble,
    calibration_file: Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
) -> Calibration:
    """:func:`compute_calibration`, or the cached result of an earlier call."""
    cached = _cache_path(ensemble, calibration_file)
    if cached.is_file():
        try:
            return Calibration.from_dict(json.loads(cached.read_text()))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed and rewritten below
    calibration = compute_calibration(ensemble, calibration_file, format, target_key, skip_invalid)
    cached.parent.mkdir(parents=True, exist_ok=True)
    write_json(cached, calibration.to_dict())
    return calibration


def _calibration_copy(out: Path) -> Path:
    return out.with_name(f"{out.name.split('.')[0]}.calibration.json")


def with_intervals(
    frame: pd.DataFrame,
    calibration: Calibration,
    names: list[str],
    level: float,
) -> pd.DataFrame:
    """``frame`` (of :func:`~matxfer.study.ensemble.ensemble_frame`) with ``_lower`` and
    ``_upper`` columns right after each target's ``_std``."""
    for name, (_, column) in zip(names, prediction_columns(names), strict=True):
        lower, upper = calibration.targets[name].interval(
            frame[column].to_numpy(), frame[f"{column}_std"].to_numpy(), level
        )
        at = frame.columns.get_loc(f"{column}_std") + 1
        frame.insert(at, f"{column}_upper", upper)
        frame.insert(at, f"{column}_lower", lower)
    return frame


def predict_intervals(
    run: Path,
    data: Path,
    out: Path,
    level: float,
    select: str | None = None,
    calibration_file: Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    results: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean, std, lower and upper bound (and members) for every record of ``data``, written
    to ``out`` (CSV) with the calibration beside it; returns the table."""
    check_level(level)
    ensemble = load_members(run, select, results)
    calibration = get_calibration(ensemble, calibration_file, format, target_key, skip_invalid)
    records, _, _ = records_to_predict(data, format, target_key, skip_invalid)
    frame = with_intervals(
        prediction_frame(ensemble, records), calibration, ensemble.target_names, level
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(frame, out)
    write_json(_calibration_copy(out), calibration.summary(level))
    return frame


def _default_out(run: Path, select: str | None, data: Path) -> Path:
    if is_study_dir(run):
        return default_evaluation_path(run, select or "", data)
    folder = run if run.is_dir() else run.parent
    return folder / f"eval_{dataset_name(data)}.json"


def evaluate_intervals(
    run: Path,
    data: Path,
    level: float,
    out: Path | None = None,
    select: str | None = None,
    calibration_file: Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    results: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The ensemble's metrics and its intervals' diagnostics on labelled ``data``.

    Calibration records that are also in ``data`` (by id) are left out of the
    calibration first: a structure must not calibrate its own interval.

    Returns:
        :func:`~matxfer.study.ensemble.evaluate_ensemble`'s result plus ``"intervals"``
        (per target :func:`~matxfer.uncertainty.diagnostics.interval_metrics` and
        ``n_calibration``), ``"calibration"`` and ``"figures"``; saved as JSON at ``out``.
    """
    check_level(level)
    ensemble = load_members(run, select, results)
    names = ensemble.target_names
    calibration = get_calibration(ensemble, calibration_file, format, target_key, skip_invalid)
    records, source, skipped, labels = read_labelled(data, names, format, target_key, skip_invalid)
    evaluated = {r.id for r in records}
    members = ensemble.member_predictions(records)
    mean, std = members.mean(axis=0), members.std(axis=0)
    intervals = {}
    for k, name in enumerate(names):
        cal = calibration.targets[name]
        kept = cal.without(evaluated)
        stats = interval_metrics(kept, labels[:, k], mean[:, k], std[:, k], level)
        intervals[name] = {
            **stats, "n_calibration": kept.n, "calibration_overlap_dropped": cal.n - kept.n,
        }  # fmt: skip
    out = Path(out) if out is not None else _default_out(run, select, data)
    stem = out.name.split(".")[0]
    result: dict[str, Any] = {
        "run": str(run),
        "selection": select,
        "data": source,
        "n": len(records),
        "skipped": skipped,
        **ensemble_metrics(ensemble, labels, members),
        "intervals": intervals,
        "calibration": calibration.summary(level),
        "figures": [str(p) for p in plot_calibration(out.parent, f"{stem}_calibration", intervals)],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    result["output"] = str(out)
    return result


def intervals_table(result: dict[str, Any]) -> Any:
    """A rich table of :func:`evaluate_intervals`' interval diagnostics."""
    from rich.table import Table

    from matxfer.training.outputs import format_metric

    table = Table(
        "target", "level", "n cal", "q", "coverage", "mean width", "miscal. area",
        "Spearman(std, |err|)",
    )  # fmt: skip
    for name, stats in result["intervals"].items():
        table.add_row(
            name,
            f"{stats['level']:g}",
            str(stats["n_calibration"]),
            format_metric(stats["q"], ".3g"),
            format_metric(stats["coverage"], ".3f"),
            format_metric(stats["mean_width"], ".4g"),
            format_metric(stats["miscalibration_area"], ".3f"),
            format_metric(stats["spearman_std_abs_error"], ".3f"),
        )
    return table


def interval_command(
    command: str,
    run: Path,
    data: Path,
    select: str | None,
    out: Path | None,
    level: float | None,
    calibration_file: Path | None,
    format: str | None,
    target_key: str | None,
    skip_invalid: bool,
) -> Any:
    """What ``matxfer predict|evaluate ... --interval`` prints (``None`` without
    ``--interval`` and ``--calibration``: the plain commands go on)."""
    if level is None:
        if calibration_file is not None:
            raise ConfigError("--calibration calibrates intervals: add --interval (e.g. 0.9)")
        return None
    from rich.console import Group
    from rich.text import Text

    from matxfer.study.ensemble import evaluation_table

    options = (format, target_key, skip_invalid)
    if command == "predict":
        if out is None:
            raise ConfigError("predict needs --out")
        frame = predict_intervals(run, data, out, level, select, calibration_file, *options)
        return Text(
            f"{len(frame)} predictions with {level:.0%} intervals "
            f"({len(frame.attrs['members'])} members) written to {out}"
        )
    result = evaluate_intervals(run, data, level, out, select, calibration_file, *options)
    calibrated = result["calibration"]["calibration"]
    return Group(
        evaluation_table(result),
        intervals_table(result),
        Text(
            f"calibrated on {calibrated['n_records']} records ({calibrated['method']}; "
            f"{calibrated['source']}); {result['n']} records evaluated; saved to "
            f"{result['output']}; figure {result['figures'][0]}"
        ),
    )
