"""Datasets: reading any supported format, validating records, named datasets.

Public API: :func:`read_dataset` -> :class:`Dataset`, :func:`records_from_structures`,
:func:`validate_records` with :class:`ValidationConfig`, :func:`resolve_named` ->
:class:`NamedDataset`, :func:`summarize`, plus the splitting, sampling and
target-scaling helpers of :mod:`~matxfer.data.splits`, :mod:`~matxfer.data.sampling`
and :mod:`~matxfer.data.transforms`. The last needs torch and is imported on first
use, so reading and checking data stays quick to start.
"""

from typing import Any

from matxfer.data.readers import (
    Dataset,
    detect_format,
    read_dataset,
    records_from_structures,
)
from matxfer.data.records import DEFAULT_TARGET, Record, target_names, target_values
from matxfer.data.registry import (
    DATASETS,
    DatasetSpec,
    NamedDataset,
    check_dataset,
    dataset_spec,
    default_data_dir,
    fetch,
    resolve_data,
    resolve_named,
)
from matxfer.data.sampling import STRATEGIES, sample
from matxfer.data.splits import (
    check_no_overlap,
    load_trials,
    remove_test_records,
    test_split,
    train_val_split,
    trial_subset,
)
from matxfer.data.summary import DatasetSummary, TargetStats, summarize
from matxfer.data.validate import ValidationConfig, validate_records

_TORCH_EXPORTS = {"TargetTransform", "TargetScaler"}


def __getattr__(name: str) -> Any:
    # Deferred so that `import matxfer.data` does not pay for importing torch.
    if name in _TORCH_EXPORTS:
        from matxfer.data import transforms

        return getattr(transforms, name)
    raise AttributeError(f"module 'matxfer.data' has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "DEFAULT_TARGET",
    "STRATEGIES",
    "Dataset",
    "DatasetSpec",
    "DatasetSummary",
    "NamedDataset",
    "Record",
    "TargetScaler",
    "TargetStats",
    "TargetTransform",
    "ValidationConfig",
    "check_dataset",
    "check_no_overlap",
    "dataset_spec",
    "default_data_dir",
    "detect_format",
    "fetch",
    "load_trials",
    "read_dataset",
    "records_from_structures",
    "remove_test_records",
    "resolve_data",
    "resolve_named",
    "sample",
    "summarize",
    "target_names",
    "target_values",
    "test_split",
    "train_val_split",
    "trial_subset",
    "validate_records",
]
