"""Files a training run leaves in its directory besides checkpoints.

``metrics.json``, ``predictions_test.csv``, ``parity.png``,
``learning_curve.png`` and ``MODEL_CARD.md``; plus the data hash that
identifies the exact records a model was trained and tested on.

Every file is written atomically (:mod:`matxfer.atomic`). JSON files are
strict: a NaN or infinite number (e.g. R² of labels without spread) is
written as ``null``; readers take ``null`` and the ``NaN`` of files written
by older versions alike (:func:`as_float`, :func:`format_metric`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import platform
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch_geometric
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from matxfer import __version__
from matxfer.atomic import atomic_path, write_text_atomic
from matxfer.data.records import Record


def strict_json_value(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by ``None`` (JSON ``null``).

    Python writes them as ``NaN``/``Infinity``, which strict JSON parsers
    (JavaScript, jq, most other languages) reject.
    """
    if isinstance(data, float | np.floating):
        return float(data) if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json_value(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json_value(value) for value in data]
    return data


def write_json(path: Path, data: Any) -> None:
    """Pretty, strict JSON (NaN and infinities as ``null``), atomically.

    The one writer of matxfer's JSON outputs (metrics, transfer records,
    evaluations, demo results).
    """
    text = json.dumps(strict_json_value(data), indent=2, sort_keys=False, allow_nan=False)
    write_text_atomic(path, text + "\n")


def as_float(value: Any) -> float:
    """A number read from a matxfer JSON file: ``null`` (or old files' ``NaN``) → NaN."""
    return math.nan if value is None else float(value)


def format_metric(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``, or ``"n/a"`` when it is missing or not finite."""
    number = as_float(value)
    return format(number, spec) if math.isfinite(number) else "n/a"


def save_figure(figure: Figure, path: Path) -> None:
    """Save ``figure`` as PNG atomically (a killed run never leaves half an image)."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def data_hash(records: Sequence[Record]) -> str:
    """sha256 over the records' ids, targets and structures, independent of record order.

    Structures enter as lattice matrix and fractional coordinates (rounded to
    1e-6) plus species, so the hash changes whenever any input to training does.
    """
    lines = []
    for record in records:
        structure = record.structure
        content = {
            "id": record.id,
            "targets": {k: float(v) for k, v in sorted(record.targets.items())},
            "lattice": np.round(structure.lattice.matrix, 6).tolist(),
            "species": [str(site.species) for site in structure],
            "frac": np.round(structure.frac_coords, 6).tolist(),
        }
        lines.append(json.dumps(content, sort_keys=True))
    digest = hashlib.sha256()
    for line in sorted(lines):
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def split_hashes_match(
    saved: dict[str, str], train: Sequence[Record], val: Sequence[Record]
) -> bool | None:
    """Whether ``train``/``val`` hash to the ``split_hashes`` a run recorded
    (``None``: it recorded none)."""
    if not saved:
        return None
    return saved.get("train") == data_hash(train) and saved.get("val") == data_hash(val)


def prediction_columns(target_names: Sequence[str]) -> list[tuple[str, str]]:
    """(label column, prediction column) per target: ``target``/``prediction`` for one
    target, ``<name>``/``<name>_prediction`` for several."""
    if len(target_names) == 1:
        return [("target", "prediction")]
    return [(name, f"{name}_prediction") for name in target_names]


def predictions_frame(
    ids: Sequence[str],
    predictions: np.ndarray,
    target_names: Sequence[str],
    labels: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per record: ``id``, then label (when given) and prediction per target.

    Args:
        ids: Record ids.
        predictions: ``[N, P]`` in original units.
        target_names: The P names.
        labels: ``[N, P]`` labels in original units (NaN = missing), or ``None``.
    """
    frame = pd.DataFrame({"id": list(ids)})
    for k, (label_col, pred_col) in enumerate(prediction_columns(target_names)):
        if labels is not None:
            frame[label_col] = labels[:, k]
        frame[pred_col] = predictions[:, k]
    return frame


def plot_parity(
    path: Path,
    labels: np.ndarray,
    predictions: np.ndarray,
    target_names: Sequence[str],
    metrics: dict[str, dict[str, Any]],
    title: str = "test set",
) -> None:
    """Predicted vs true scatter, one panel per target, with R² and MAE in the legend."""
    count = len(target_names)
    # A bare Figure, not pyplot: no global backend switch, works without a display.
    figure = Figure(figsize=(4.2 * count, 4.2))
    axes = figure.subplots(1, count, squeeze=False)
    for k, (name, axis) in enumerate(zip(target_names, axes[0], strict=True)):
        labelled = ~np.isnan(labels[:, k])
        true, pred = labels[labelled, k], predictions[labelled, k]
        stats = metrics[name]["original"]
        r2, mae = format_metric(stats["r2"], ".3f"), format_metric(stats["mae"], ".4g")
        axis.scatter(true, pred, s=10, alpha=0.6, label=f"R² {r2}, MAE {mae}")
        if len(true):
            low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            axis.plot([low, high], [low, high], color="grey", linewidth=1)
        axis.set_xlabel(f"true {name}")
        axis.set_ylabel(f"predicted {name}")
        axis.set_title(f"{name} ({title}, n={int(labelled.sum())})")
        axis.legend(loc="upper left")
    figure.tight_layout()
    save_figure(figure, path)


def csv_log_files(log_dir: Path) -> list[Path]:
    """A run's CSV logs, oldest first: one per interrupted session, then the current one."""
    earlier = sorted(
        log_dir.glob("metrics.session-*.csv"), key=lambda p: int(p.stem.rsplit("-", 1)[1])
    )
    current = log_dir / "metrics.csv"
    return earlier + ([current] if current.is_file() else [])


def keep_csv_log(log_dir: Path) -> None:
    """Before resuming: rename ``metrics.csv``, which Lightning's CSVLogger deletes on start."""
    current = log_dir / "metrics.csv"
    if current.is_file():
        current.rename(log_dir / f"metrics.session-{len(csv_log_files(log_dir)) - 1}.csv")


def epoch_log(log_dir: Path) -> pd.DataFrame:
    """Per-epoch rows of Lightning's CSV logs (train and val metrics merged).

    Args:
        log_dir: The CSV logger's directory (``RUN/logs/csv``).

    An epoch logged twice (by a session killed after logging it and by the
    resumed session) keeps its last entry.
    """
    frames = [pd.read_csv(path) for path in csv_log_files(log_dir)]
    log = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if "epoch" not in log:
        return pd.DataFrame()
    per_epoch = log.drop(columns=["step"], errors="ignore").groupby("epoch").last()
    return per_epoch.reset_index()


def plot_learning_curve(path: Path, log: pd.DataFrame, best_epoch: int | None) -> None:
    """Training and validation loss and validation MAE against epoch, best epoch marked."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for column, label, style in [
        ("train_loss", "train loss", "-"),
        ("val_loss", "val loss", "-"),
        ("val_mae", "val MAE", "--"),
    ]:
        if column in log:
            rows = log.dropna(subset=[column])
            axis.plot(rows["epoch"], rows[column], style, label=label)
    if best_epoch is not None:
        axis.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch {best_epoch}")
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylabel("transformed units")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def software_versions() -> dict[str, str]:
    """Versions of the software that shapes a result."""
    return {
        "matxfer": __version__,
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
        "lightning": version("lightning"),
        "python": platform.python_version(),
    }


#: How the model card words each ``stopped_by`` of metrics.json.
STOP_WORDS = {
    "diverged": "a non-finite loss (training diverged; the best epoch before it is kept)",
    "early_stopping": "early stopping",
    "time_budget": "the time budget (max_minutes)",
    "max_epochs": "reaching the epoch limit",
}


def stop_description(metrics: dict[str, Any]) -> str:
    """How training ended, in words (the model card and the command line)."""
    return STOP_WORDS.get(metrics.get("stopped_by", ""), "an unrecorded reason")


#: Metric → format in the metrics table and the model card.
METRIC_FORMATS = (("r2", ".4f"), ("mae", ".4g"), ("rmse", ".4g"))


def metrics_table(metrics: dict[str, Any], splits: Sequence[str]) -> Any:
    """A rich table of ``metrics.json``: one row per split, target and unit system."""
    from rich.table import Table
    from rich.text import Text

    table = Table("split", "target", "units", "n", "R²", "MAE", "RMSE")
    for split in splits:
        for name, units in metrics.get(split, {}).items():
            for unit, stats in units.items():
                table.add_row(
                    split,
                    Text(name),  # a user's target name: never parsed as markup
                    unit,
                    str(stats["n"]),
                    *(format_metric(stats[key], spec) for key, spec in METRIC_FORMATS),
                )
    return table


def write_model_card(
    path: Path, config_yaml: str, metrics: dict[str, Any], info: dict[str, Any]
) -> None:
    """A short Markdown summary of what was trained on what, and how well.

    Args:
        path: Destination (``RUN/MODEL_CARD.md``).
        config_yaml: The resolved config as YAML.
        metrics: The ``metrics.json`` content.
        info: Data description: ``source``, ``test_source``, ``counts``, ``data_hash``.
    """
    rows = []
    for split in ("train", "val", "test"):
        for name, units in metrics.get(split, {}).items():
            for unit, stats in units.items():
                cells = [format_metric(stats[k], f) for k, f in METRIC_FORMATS]
                rows.append(f"| {split} | {name} | {unit} | {stats['n']} | {' | '.join(cells)} |")
    versions = "\n".join(f"- {k}: {v}" for k, v in software_versions().items())
    counts = ", ".join(f"{k} {v}" for k, v in info.get("counts", {}).items())
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    threads = info.get("cpu_threads")
    device = "GPU" if threads is None else f"CPU, {threads} thread{'s' * (threads != 1)}"
    text = f"""# Model card

ALIGNN property model trained with matxfer ({date}).

## Data

- source: {info.get("source")}
- test set: {info.get("test_source")}
- records: {counts}
- targets: {", ".join(metrics.get("targets", []))}
- data hash (sha256 of ids, targets and structures): `{info.get("data_hash")}`

## Training

Best epoch {metrics.get("best_epoch")} of {metrics.get("epochs_trained")} (lowest validation MAE;
training ended by {stop_description(metrics)});
its weights are `best.ckpt` and produced every number below. Device: {device}.

```yaml
{config_yaml.rstrip()}
```

## Metrics

"transformed" are the units the model was trained in (target transform
`{metrics.get("target_transform")}`, fitted on the training split).

| split | target | units | n | R² | MAE | RMSE |
|---|---|---|---|---|---|---|
{chr(10).join(rows)}

## Versions

{versions}
"""
    write_text_atomic(path, text)
