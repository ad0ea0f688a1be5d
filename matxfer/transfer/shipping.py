"""Shipped models and their data: a card from a pre-training run, the records for an audit.

:mod:`matxfer.training.shipped` stores and finds the models shipped in the
package. This module knows what they were trained on, which is a multi-property
pre-training (:func:`~matxfer.transfer.multitask.pretrain_multi`) run:

* :func:`card_from_run` writes the model card of such a run: the datasets and
  their sha256, records per property, the test crystals removed, the exact
  command, training time, and the test metrics of the float16 weights as shipped
  (measured on each property's test set, which pre-training never saw);
* :func:`~matxfer.transfer.pretrained.shipped_pretraining` re-resolves the records
  a shipped model was trained on from the card's recorded options, for the leakage
  audit of ``finetune --from mpt7``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from matxfer.data.registry import resolve_data, sha256_of
from matxfer.errors import MatxferError
from matxfer.training.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    load_model,
    read_checkpoint,
)
from matxfer.training.metrics import regression_metrics
from matxfer.training.predictor import Predictor, labels_of
from matxfer.training.rundir import MERGE_REPORT_FILE, read_config, read_metrics, read_run_info
from matxfer.training.shipped import ShippedModel, pack
from matxfer.transfer.multitask import PretrainData, recorded_pretraining

#: Licence and attribution of the study's data, which every shipped model is trained on.
STUDY_DATA_LICENSE = (
    "Weights: MIT, like matxfer. Training data: the Matminer/Matbench subsets of Materials "
    "Project data (CC BY 4.0) and the experimental band gaps matched to structures, as "
    "published with Devi, Butler & Sai Gautam, npj Comput. Mater. 2024 (arXiv 2406.13142); "
    "cite Materials Project (Jain et al., APL Mater. 1, 011002, 2013) and the study."
)


def _architecture(model_config: dict[str, Any]) -> str:
    return (
        f"ALIGNN, {model_config['alignn_layers']} ALIGNN + {model_config['gcn_layers']} GCN "
        f"layers × {model_config['hidden_features']}, {model_config['norm']} norm"
    )


def _dataset_hashes(data: PretrainData, data_dir: str | Path | None) -> dict[str, dict[str, str]]:
    hashes = {}
    for name in [*data.properties, *data.excluded]:
        named = resolve_data(data.spec["datasets"][name], data_dir)
        if named is None:
            continue
        files = {"pool": named.pool_path, "test": named.test_path}
        hashes[name] = {part: sha256_of(path) for part, path in files.items() if path is not None}
    return hashes


def test_metrics(
    checkpoint: str | Path, data: PretrainData
) -> dict[str, dict[str, float | int | None]]:
    """Test R², MAE, RMSE and count per property, each on its own test set.

    Args:
        checkpoint: The model (a checkpoint, e.g. the shipped float16 file).
        data: The pre-training data whose ``splits.test`` holds every property's
            test records, each labelled with its own property only.
    """
    predictor = Predictor(load_model(checkpoint))
    names = predictor.target_names
    test = data.splits.test
    predicted = predictor.predict_records(test)
    labels = labels_of(test, names)
    result: dict[str, dict[str, float | int | None]] = {}
    for k, name in enumerate(names):
        values = regression_metrics(labels[:, k], predicted[:, k])
        result[name] = {
            key: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for key, v in values.items()
        }
    return result


def card_from_run(
    run_dir: str | Path,
    name: str,
    summary: str,
    command: str,
    machine: str,
    directory: Path | None = None,
) -> ShippedModel:
    """Pack a finished multi-property pre-training run as shipped model ``name``.

    Writes the float16 weights and the card (see the module docstring); the card's
    test metrics are measured with the packed weights, beside the run's own float32
    ones.

    Args:
        run_dir: A finished :func:`~matxfer.transfer.multitask.pretrain_multi` run.
        name: The shipped name (``mpt7``, ``mpt7-no-ph``, ``fe`` ...).
        summary: One line saying what the model is.
        command: The exact command that trained it.
        machine: Where it was trained, in words (for the time it took).
        directory: Where to write (default: the package's folder).

    Raises:
        MatxferError: Not a finished multi-property run, or its data can no longer be read.
    """
    from matxfer.training.run import trained_seconds

    run_dir = Path(run_dir)
    data, verified = recorded_pretraining(run_dir)
    if verified is False:
        raise MatxferError(f"{run_dir}: its data no longer hash to what the run trained on")
    report = json.loads((run_dir / MERGE_REPORT_FILE).read_text())
    config = read_config(run_dir)
    run_metrics = read_metrics(run_dir)
    checkpoint = read_checkpoint(run_dir / BEST_CHECKPOINT)
    info = checkpoint["matxfer"]
    spec = {**report["spec"], "data_dir": None}  # resolved under the user's --data-dir
    properties = {
        prop: {
            "source": f"{spec['datasets'][prop]} pool",
            "pool": item["available"],
            "removed_test_structures": item["removed_test_structures"],
            "used": item["pool"],
            "test": item["test"],
        }
        for prop, item in report["properties"].items()
    }
    card = {
        "summary": summary,
        "properties": list(info["target_names"]),
        "data": {
            "description": (
                "The study's datasets (Materials Project and experimental band gaps, as "
                "published with arXiv 2406.13142), every crystal of the seven fixed test "
                "sets removed by structure match"
                if report["exclude_test_structures"]
                else "The study's datasets (arXiv 2406.13142)"
            )
            + (
                f"; cells of at most {spec['max_atoms']} atoms"
                if spec.get("max_atoms") is not None
                else ""
            )
            + (
                f"; {config.sampling} samples of at most {spec['size']} records per property "
                f"(seed {config.seed})"
                if spec["size"] is not None
                else "; every record left"
            )
            + ", merged by crystal.",
            "properties": properties,
            "excluded_properties": report["excluded"],
            "merged": report["merge"]["merged_total"],
            "train": report["counts"]["train"],
            "val": report["counts"]["val"],
            "spec": spec,
            "split_hashes": read_run_info(run_dir).get("split_hashes", {}),
            "dataset_sha256": _dataset_hashes(data, report["spec"]["data_dir"]),
        },
        "recipe": {
            "command": command,
            "architecture": _architecture(info["model_config"]),
            "config": config.model_dump(mode="json"),
            "epochs": run_metrics.get("epochs_trained"),
            "best_epoch": run_metrics.get("best_epoch"),
            "seed": config.seed,
            "seconds": round(trained_seconds(run_dir / LAST_CHECKPOINT), 3),
            "machine": machine,
            "matxfer_version": info.get("matxfer_version"),
            "torch_version": info.get("torch_version"),
            "python": platform.python_version(),
        },
        "metrics": {
            "description": "Each property's fixed test set of the study (no test crystal "
            "was in pre-training), normalised units; the float16 weights as shipped. "
            "`float32` holds the run's own figures before packing.",
            "test": {},
            "float32": {
                prop: {k: values["original"][k] for k in ("r2", "mae", "n")}
                for prop, values in run_metrics["test"].items()
            },
        },
        "license": STUDY_DATA_LICENSE,
    }
    model = pack(checkpoint, name, card, directory)
    card["metrics"]["test"] = test_metrics(model.weights, data)
    return pack(checkpoint, name, card, directory)
