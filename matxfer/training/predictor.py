"""Using a trained model: predictions on structures or datasets, and evaluation.

Every prediction leaves here in original units (the target transform
stored with the model is inverted); metrics are reported in both original
and transformed units.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from ase import Atoms
from pymatgen.core import Structure
from torch import nn
from torch_geometric.data import Data

from matxfer.data.records import Record
from matxfer.data.transforms import TargetTransform
from matxfer.errors import MatxferError
from matxfer.graphs.data import CrystalGraph
from matxfer.training.checkpoint import LoadedModel, load_model
from matxfer.training.inputs import (
    checked_structures,
    model_inputs,
    read_records,
    records_to_predict,
)
from matxfer.training.loaders import graph_loader
from matxfer.training.metrics import metrics_by_target
from matxfer.training.outputs import predictions_frame, write_csv, write_json

#: Graphs per inference batch (no gradients, so larger than training batches).
PREDICT_BATCH_SIZE = 64


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def predict_graphs(
    model: nn.Module,
    graphs: Sequence[CrystalGraph],
    batch_size: int = PREDICT_BATCH_SIZE,
    device: torch.device | None = None,
    ids: Sequence[str] | None = None,
    source: str = "the model",
) -> np.ndarray:
    """Raw model outputs ``[N, P]`` (transformed units), in graph order, eval mode.

    Args:
        model: Maps a batch to ``[B, P]``.
        graphs: The graphs.
        batch_size: Graphs per batch.
        device: Where to run (default: :func:`default_device`).
        ids: Names of the graphs' records, for the error below.
        source: What the model is (a checkpoint path), for the error below.

    Raises:
        MatxferError: Some prediction is NaN or infinite: no metric or file
            should be computed from it.
    """
    device = device or default_device()
    was_training = model.training
    model.eval().to(device)
    outputs = [model(batch.to(device)).float().cpu() for batch in graph_loader(graphs, batch_size)]
    model.train(was_training)
    if not outputs:
        return np.zeros((0, 0), dtype=np.float64)
    raw = torch.cat(outputs).double().numpy()
    broken = np.flatnonzero(~np.isfinite(raw).all(axis=1))
    if broken.size:
        names = [ids[i] if ids is not None else f"structure #{i}" for i in broken[:5]]
        more = f" and {broken.size - 5} more" if broken.size > 5 else ""
        raise MatxferError(
            f"{source} predicted NaN or infinity for {broken.size} of {len(raw)} structures "
            f"({', '.join(names)}{more}); its weights are unusable (did its training diverge?)"
        )
    return raw


def labels_of(records: Sequence[Record], names: Sequence[str]) -> np.ndarray:
    """``[N, P]`` float64 labels in original units (NaN where missing)."""
    return np.array(
        [[r.targets.get(name, np.nan) for name in names] for r in records], dtype=np.float64
    ).reshape(len(records), len(names))


def split_metrics(
    labels: np.ndarray, predictions: np.ndarray, transform: TargetTransform, names: list[str]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {"original": {...}, "transformed": {...}}}`` from original-unit arrays."""
    original = metrics_by_target(labels, predictions, names)
    transformed = metrics_by_target(
        transform.transform(labels), transform.transform(predictions), names
    )
    return {name: {"original": original[name], "transformed": transformed[name]} for name in names}


class Predictor:
    """A trained model ready to predict in original units.

    Args:
        loaded: Model, transform and graph config from :func:`load_model`.
        device: Where to run (default: GPU if present, else CPU).
    """

    def __init__(self, loaded: LoadedModel, device: torch.device | str | None = None) -> None:
        self.loaded = loaded
        self.device = torch.device(device) if device is not None else default_device()

    @property
    def target_names(self) -> list[str]:
        return self.loaded.target_names

    def __repr__(self) -> str:
        return (
            f"Predictor(checkpoint={str(self.loaded.path)!r}, "
            f"targets={self.target_names}, device={self.device})"
        )

    def predict_graphs(
        self, graphs: Sequence[CrystalGraph], ids: Sequence[str] | None = None
    ) -> np.ndarray:
        """Predictions ``[N, P]`` in original units for prebuilt graphs (``ids``
        name them in errors)."""
        raw = predict_graphs(
            self.loaded.model, graphs, device=self.device, ids=ids, source=str(self.loaded.path)
        )
        return self.loaded.transform.inverse(raw.reshape(len(graphs), -1))

    def predict(
        self,
        structures: Sequence[Structure | Atoms] | Structure | Atoms,
        progress: bool = False,
        ids: Sequence[str] | None = None,
    ) -> np.ndarray:
        """Predictions ``[N, P]`` in original units (P = number of targets, columns in
        :attr:`target_names` order).

        Args:
            structures: pymatgen ``Structure`` s or periodic ASE ``Atoms`` (or one of either).
            progress: Show a progress bar while building graphs.
            ids: Names of the structures, used in error messages (default: their indices).

        Raises:
            DataError: Some structures fail the checks records read from files pass
                (close atoms, too few neighbours, unsupported elements ...); all are listed.
        """
        if isinstance(structures, Structure | Atoms):
            structures = [structures]
        converted = checked_structures(structures, self.loaded.graph_config, ids)
        return self.predict_graphs(self._inputs(converted, progress, ids), ids)

    def _inputs(
        self, structures: Sequence[Structure], progress: bool, ids: Sequence[str] | None
    ) -> list[Data]:
        """The model's input graphs (see :func:`~matxfer.training.inputs.model_inputs`)."""
        loaded = self.loaded
        return model_inputs(loaded.model, structures, loaded.graph_config, progress, ids)

    def predict_records(self, records: Sequence[Record], progress: bool = False) -> np.ndarray:
        """Predictions ``[N, P]`` in original units for records."""
        ids = [r.id for r in records]
        graphs = self._inputs([r.structure for r in records], progress, ids)
        return self.predict_graphs(graphs, ids)


def load_predictor(run_or_ckpt: str | Path, device: torch.device | str | None = None) -> Predictor:
    """A :class:`Predictor` from a run directory (its ``best.ckpt``) or a checkpoint file.

    Raises:
        MatxferError: Missing run/checkpoint, corrupted file, or mismatched weights.
    """
    return Predictor(load_model(run_or_ckpt), device=device)


def dataset_name(data: str | Path) -> str:
    """A file-name-safe short name of a dataset path (``data/ph_test.json.gz`` → ``ph_test``)."""
    name = Path(str(data)).name
    for suffix in (".gz", ".json", ".csv", ".extxyz", ".xyz", ".parquet"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "data"


def read_labelled(
    data: str | Path,
    names: Sequence[str],
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Record], str, int, np.ndarray]:
    """Records of a labelled dataset and their labels ``[N, P]`` for the targets ``names``.

    Returns:
        (records, source, number skipped, labels in original units, NaN = missing).

    Raises:
        MatxferError: Unreadable data, or no record carries any of ``names``.
    """
    records, source, skipped = read_records(data, format, target_key, skip_invalid)
    labels = labels_of(records, names)
    if np.isnan(labels).all():
        carried = sorted({k for r in records for k in r.targets})
        raise MatxferError(
            f"{source}: no record carries the model's target(s) {list(names)} (they carry "
            f"{carried}); pass --target-key, or use `matxfer predict` for unlabelled data"
        )
    return records, source, skipped, labels


def evaluate(
    run_or_ckpt: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of a trained model on a labelled dataset, saved as JSON.

    Args:
        run_or_ckpt: Run directory or checkpoint file.
        data: Labelled dataset file or directory.
        out: JSON destination (default: ``RUN/eval_<data name>.json`` for a run
            directory, else beside the checkpoint).
        format: File format, when the suffix does not tell.
        target_key: Which target the records carry.
        skip_invalid: Skip invalid records instead of failing.
        progress: Show a progress bar while building graphs.

    Returns:
        ``{"data", "checkpoint", "n", "metrics": {target: {"original", "transformed"}}}``
        plus ``"output"``, the JSON path.

    Raises:
        MatxferError: Unreadable inputs, or data without the model's targets.
    """
    predictor = load_predictor(run_or_ckpt)
    names = predictor.target_names
    records, source, skipped, labels = read_labelled(data, names, format, target_key, skip_invalid)
    predictions = predictor.predict_records(records, progress=progress)
    result: dict[str, Any] = {
        "data": source,
        "checkpoint": str(predictor.loaded.path),
        "n": len(records),
        "skipped": skipped,
        "metrics": split_metrics(labels, predictions, predictor.loaded.transform, names),
    }
    if out is None:
        run_dir = predictor.loaded.path.parent
        out = run_dir / f"eval_{dataset_name(data)}.json"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    result["output"] = str(out)
    return result


def predict(
    run_or_ckpt: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """Predictions in original units for every record of a dataset.

    Args:
        run_or_ckpt: Run directory or checkpoint file.
        data: Dataset file or directory, or structure file(s) (CIF, POSCAR: a
            file, or a folder of them without ``id_prop.csv``); labels optional.
        out: CSV destination; ``None`` writes nothing.
        format: File format, when the suffix does not tell.
        target_key: Which target the records carry, if any.
        skip_invalid: Skip invalid records instead of failing.
        progress: Show a progress bar while building graphs.

    Returns:
        One row per record: ``id``, then (label and) prediction per target.
    """
    predictor = load_predictor(run_or_ckpt)
    records, _, _ = records_to_predict(data, format, target_key, skip_invalid)
    predictions = predictor.predict_records(records, progress=progress)
    names = predictor.target_names
    labels = labels_of(records, names)
    frame = predictions_frame(
        [r.id for r in records], predictions, names, None if np.isnan(labels).all() else labels
    )
    if out is not None:
        out = Path(out)
        write_csv(frame, out)  # atomic: a killed run never leaves half a table
    return frame
