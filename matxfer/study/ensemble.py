"""Ensembles of a study's runs: average the models a selection picks.

The study trains the same setting several times (its five trials, or seeds);
averaging those models gives a better prediction than any one of them and a
spread that says how much they disagree. For structure :math:`i` and the
:math:`M` selected models' predictions :math:`\\hat y_{mi}`:

.. math::
    \\bar y_i = \\frac{1}{M}\\sum_m \\hat y_{mi}, \\qquad
    s_i = \\sqrt{\\frac{1}{M}\\sum_m (\\hat y_{mi} - \\bar y_i)^2}

(the population std over members, as in deep ensembles; 0 for one member). On
a labelled set, :func:`evaluate_ensemble` reports the metrics of
:math:`\\bar y` and the Spearman rank correlation of :math:`s_i` with
:math:`|\\bar y_i - y_i|`: positive when the spread flags the larger errors.

Runs are chosen with :func:`matxfer.study.selection.select_runs`
(``'ft=ph,pt=fe,size=800'``); prediction reuses
:class:`~matxfer.training.predictor.Predictor` (graphs built once per graph setting).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matxfer.data.records import Record
from matxfer.errors import MatxferError
from matxfer.study.selection import is_study_dir, select_runs, study_table
from matxfer.training.inputs import model_inputs, records_to_predict
from matxfer.training.metrics import metrics_by_target
from matxfer.training.outputs import prediction_columns, predictions_frame, write_csv, write_json
from matxfer.training.predictor import (
    Predictor,
    dataset_name,
    labels_of,
    load_predictor,
    read_labelled,
    split_metrics,
)

#: Folder of a study where ensemble evaluations are saved by default.
ENSEMBLE_DIR = "ensembles"


@dataclass
class Ensemble:
    """The selected runs of a study, loaded.

    Attributes:
        runs: Their rows of the results table (``job_id``, ``run_dir``, settings ...).
        predictors: One per run, in the same order.
        target_names: The members' outputs (the first member's names).
    """

    runs: pd.DataFrame
    predictors: list[Predictor]
    target_names: list[str]

    @property
    def job_ids(self) -> list[str]:
        return [str(job) for job in self.runs["job_id"]]

    def member_predictions(self, records: Sequence[Record], progress: bool = False) -> np.ndarray:
        """Every member's predictions ``[M, N, P]`` in original units."""
        ids = [r.id for r in records]
        structures = [r.structure for r in records]
        graphs: dict[str, list] = {}  # one build (or cache read) per graph setting
        stacked = []
        for predictor in self.predictors:
            loaded = predictor.loaded
            # A model that builds its own inputs (e.g. CHGNet's graphs) shares them with none.
            own = callable(getattr(loaded.model, "featurize", None))
            key = f"model {id(loaded.model)}" if own else loaded.graph_config.model_dump_json()
            if key not in graphs:
                graphs[key] = model_inputs(
                    loaded.model, structures, loaded.graph_config, progress, ids
                )
            stacked.append(predictor.predict_graphs(graphs[key], ids))
        return np.stack(stacked)


def load_ensemble(
    study_dir: str | Path, selection: str, results: pd.DataFrame | None = None
) -> Ensemble:
    """Select finished runs of a study and load their best checkpoints.

    Args:
        study_dir: The study directory.
        selection: ``'ft=ph,pt=fe,size=800'`` (see :data:`~matxfer.study.selection.SELECT_KEYS`).
        results: The results table, when already read (default: read ``study_dir``).

    Raises:
        ConfigError: Unknown selection key or malformed selection.
        MatxferError: Nothing selected (the message lists the available values),
            runs of several FT targets, members with different outputs, or a run
            directory without a checkpoint.
    """
    table = study_table(study_dir) if results is None else results
    runs = select_runs(table, selection)
    targets = sorted(set(runs["target"].astype(str)))
    if len(targets) > 1:
        raise MatxferError(
            f"--select {selection!r} picks runs of {len(targets)} targets ({', '.join(targets)}); "
            "an ensemble averages one property: add ft=<target>"
        )
    return ensemble_of(runs, f"{study_dir}")


def ensemble_of(runs: pd.DataFrame, where: str) -> Ensemble:
    """Load the best checkpoints of ``runs`` (columns ``job_id``, ``run_dir``) as an ensemble.

    Args:
        runs: One row per member.
        where: What holds the runs (a study directory), for the errors.

    Raises:
        MatxferError: A run without a directory or checkpoint, or members with
            different outputs.
    """
    predictors = []
    for _, run in runs.iterrows():
        if pd.isna(run["run_dir"]):
            raise MatxferError(f"run {run['job_id']} of {where} has no run_dir in its results")
        try:
            predictors.append(load_predictor(run["run_dir"]))
        except MatxferError as error:
            raise MatxferError(f"run {run['job_id']} of {where}: {error}") from None
    names = predictors[0].target_names
    for predictor, job in zip(predictors, runs["job_id"], strict=True):
        if len(predictor.target_names) != len(names) or (
            len(names) > 1 and predictor.target_names != names
        ):
            raise MatxferError(
                f"run {job} predicts {predictor.target_names}, run {runs['job_id'].iloc[0]} "
                f"predicts {names}: ensemble members need the same outputs"
            )
    return Ensemble(runs.reset_index(drop=True), predictors, names)


def ensemble_frame(
    ids: Sequence[str],
    members: np.ndarray,
    names: Sequence[str],
    job_ids: Sequence[str],
    labels: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per structure: ``id``, (label,) the mean prediction, its ``_std`` and each
    member's ``_<job_id>``, per target (column names of
    :func:`~matxfer.training.outputs.prediction_columns`: ``prediction``, ``prediction_std``,
    ``prediction_<job_id>`` for one target).

    Args:
        ids: Record ids.
        members: ``[M, N, P]`` predictions in original units.
        names: The P target names.
        job_ids: The M members' job ids.
        labels: ``[N, P]`` labels (NaN = missing), or ``None``.
    """
    frame = predictions_frame(ids, members.mean(axis=0), names, labels)
    spread = members.std(axis=0)
    for k, (_, column) in enumerate(prediction_columns(names)):
        frame[f"{column}_std"] = spread[:, k]
        for job, member in zip(job_ids, members, strict=True):
            frame[f"{column}_{job}"] = member[:, k]
    return frame


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation over the pairs where both are finite (NaN when fewer
    than three pairs or either side is constant)."""
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return float("nan")
    return float(pd.Series(x[both]).corr(pd.Series(y[both]), method="spearman"))


def predict_ensemble(
    study_dir: str | Path,
    data: str | Path,
    selection: str,
    out: str | Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
    results: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Ensemble predictions (mean, std, members) for every record of ``data``.

    Args:
        study_dir: The study directory.
        data: Dataset, or structure file(s) as for ``matxfer predict``; labels optional.
        selection: Which runs (:func:`load_ensemble`).
        out: CSV destination; ``None`` writes nothing.
        format, target_key, skip_invalid, progress: As for
            :func:`matxfer.training.predictor.predict`.
        results: The results table, when already read.

    Returns:
        :func:`ensemble_frame`'s table; ``frame.attrs["members"]`` lists the job ids.
    """
    ensemble = load_ensemble(study_dir, selection, results)
    records, _, _ = records_to_predict(data, format, target_key, skip_invalid)
    frame = prediction_frame(ensemble, records, progress)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_csv(frame, out)
    return frame


def prediction_frame(
    ensemble: Ensemble, records: Sequence[Record], progress: bool = False
) -> pd.DataFrame:
    """:func:`ensemble_frame` of ``ensemble``'s predictions for ``records`` (their labels
    too, when they carry any); ``frame.attrs["members"]`` lists the job ids."""
    members = ensemble.member_predictions(records, progress)
    labels = labels_of(records, ensemble.target_names)
    frame = ensemble_frame(
        [r.id for r in records],
        members,
        ensemble.target_names,
        ensemble.job_ids,
        None if np.isnan(labels).all() else labels,
    )
    frame.attrs["members"] = ensemble.job_ids
    return frame


def _selection_slug(selection: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", selection.replace("=", "-")).strip("_") or "all"


def default_evaluation_path(study_dir: str | Path, selection: str, data: str | Path) -> Path:
    """``STUDY/ensembles/eval_<selection>_<data>.json``: where an ensemble's evaluation goes."""
    name = f"eval_{_selection_slug(selection)}_{dataset_name(data)}.json"
    return Path(study_dir) / ENSEMBLE_DIR / name


def ensemble_metrics(ensemble: Ensemble, labels: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    """``{"ensemble": {target: {"r2", "mae", "rmse", "n", "spearman_std_abs_error"}},
    "members": [{"job_id", "run_dir", "metrics"}]}`` of member predictions ``[M, N, P]``
    against ``labels`` ``[N, P]`` (original units; each member's ``transformed`` in its own
    transform's units)."""
    names = ensemble.target_names
    mean, spread = members.mean(axis=0), members.std(axis=0)
    metrics = metrics_by_target(labels, mean, names)
    for k, name in enumerate(names):
        metrics[name]["spearman_std_abs_error"] = spearman(
            spread[:, k], np.abs(mean[:, k] - labels[:, k])
        )
    return {
        "ensemble": metrics,
        "members": [
            {
                "job_id": job,
                "run_dir": str(run_dir),
                "metrics": split_metrics(labels, predicted, predictor.loaded.transform, names),
            }
            for job, run_dir, predictor, predicted in zip(
                ensemble.job_ids,
                ensemble.runs["run_dir"],
                ensemble.predictors,
                members,
                strict=True,
            )
        ],
    }


def evaluate_ensemble(
    study_dir: str | Path,
    data: str | Path,
    selection: str,
    out: str | Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
    results: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Metrics of the ensemble and of each member on a labelled dataset, saved as JSON.

    Args:
        study_dir: The study directory.
        data: Labelled dataset file or directory.
        selection: Which runs (:func:`load_ensemble`).
        out: JSON destination (default: ``STUDY/ensembles/eval_<selection>_<data>.json``).
        format, target_key, skip_invalid, progress: As for
            :func:`matxfer.training.predictor.evaluate`.
        results: The results table, when already read.

    Returns:
        ``{"study", "selection", "data", "n", "skipped", "ensemble": {target: {"r2", "mae",
        "rmse", "n", "spearman_std_abs_error"}}, "members": [{"job_id", "run_dir",
        "metrics": {target: {"original", "transformed"}}}]}`` plus ``"output"``. Metrics
        are in original units (each member's ``transformed`` in its own transform's units).
    """
    ensemble = load_ensemble(study_dir, selection, results)
    names = ensemble.target_names
    records, source, skipped, labels = read_labelled(data, names, format, target_key, skip_invalid)
    members = ensemble.member_predictions(records, progress)
    result: dict[str, Any] = {
        "study": str(study_dir),
        "selection": selection,
        "data": source,
        "n": len(records),
        "skipped": skipped,
        **ensemble_metrics(ensemble, labels, members),
    }
    if out is None:
        out = default_evaluation_path(study_dir, selection, data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    result["output"] = str(out)
    return result


def evaluation_table(result: dict[str, Any]) -> Any:
    """A rich table of :func:`evaluate_ensemble`'s result: the ensemble, then each member."""
    from rich.table import Table

    from matxfer.training.outputs import format_metric

    table = Table("model", "target", "n", "R²", "MAE", "RMSE", "Spearman(std, |err|)")
    rows = [("ensemble", result["ensemble"])]
    rows += [
        (m["job_id"], {t: units["original"] for t, units in m["metrics"].items()})
        for m in result["members"]
    ]
    for model, by_target in rows:
        for name, stats in by_target.items():
            rho = stats.get("spearman_std_abs_error")
            table.add_row(
                model,
                name,
                str(stats["n"]),
                format_metric(stats["r2"], ".4f"),
                format_metric(stats["mae"], ".4g"),
                format_metric(stats["rmse"], ".4g"),
                "" if rho is None else format_metric(rho, ".3f"),
            )
    return table


def study_command(
    command: str,
    run: Path,
    data: Path,
    select: str | None,
    out: Path | None,
    format: str | None,
    target_key: str | None,
    skip_invalid: bool,
) -> Any:
    """What ``matxfer predict|evaluate RUN DATA`` prints when RUN is a study, else ``None``.

    The commands stay thin: with ``--select`` or a study directory they hand over here
    and print the returned renderable; otherwise they go on with a single run.
    """
    if not is_study_dir(run):
        if select is None:
            return None
        raise MatxferError(
            f"--select picks runs of a study, but {run} is not a study directory (one with "
            "study.json, spec.yaml or results/*.parquet); drop --select for a single run"
        )
    from rich.console import Group
    from rich.text import Text

    if command == "predict":
        frame = predict_ensemble(run, data, select or "", out, format, target_key, skip_invalid)
        members = len(frame.attrs["members"])
        return Text(f"{len(frame)} ensemble predictions ({members} members) written to {out}")
    result = evaluate_ensemble(run, data, select or "", out, format, target_key, skip_invalid)
    return Group(
        evaluation_table(result),
        Text(f"{result['n']} records; metrics saved to {result['output']}"),
    )
