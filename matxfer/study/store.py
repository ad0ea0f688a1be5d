"""The results store of a study: one Parquet file per finished (or failed) job.

``STUDY_DIR/results/<job_id>.parquet`` holds one row (the columns are listed in
:data:`COLUMNS`), written atomically (temporary file, then rename), so a study
killed at any moment has every finished job exactly once and none half
written. :func:`read_results` reads them as one table with pyarrow; DuckDB, if
installed, can query the folder directly
(``SELECT * FROM 'STUDY_DIR/results/*.parquet'``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from matxfer.atomic import atomic_path
from matxfer.errors import MatxferError

RESULTS_DIR = "results"
#: Every column of the results table, in order (see the report's schema).
COLUMNS: tuple[str, ...] = (
    "job_id", "kind", "status", "error", "target", "source", "pt_job_id", "pt_size", "size",
    "trial", "seed", "strategy", "head", "lr", "sampling", "profile",
    "test_r2", "test_mae", "test_rmse", "test_r2_norm", "test_mae_norm", "test_rmse_norm",
    "val_r2", "val_mae", "val_rmse", "val_r2_norm", "val_mae_norm", "val_rmse_norm",
    "n_test", "best_epoch", "epochs_trained", "stopped_by", "seconds", "threads", "host",
    "matxfer_version", "torch_version", "finished", "run_dir", "settings",
)  # fmt: skip
_FLOATS = {c for c in COLUMNS if c.startswith(("test_", "val_"))} | {"lr", "seconds"}
_INTS = {"pt_size", "size", "trial", "seed", "n_test", "best_epoch", "epochs_trained", "threads"}
SCHEMA = pa.schema(
    [
        (c, pa.float64() if c in _FLOATS else pa.int64() if c in _INTS else pa.string())
        for c in COLUMNS
    ]
)


def results_dir(study_dir: str | Path) -> Path:
    """``STUDY_DIR/results``."""
    return Path(study_dir) / RESULTS_DIR


def write_result(study_dir: str | Path, row: dict[str, Any]) -> Path:
    """Write one job's row atomically; returns its file.

    Raises:
        MatxferError: The row lacks ``job_id`` or has unknown columns.
    """
    unknown = set(row) - set(COLUMNS)
    if unknown or "job_id" not in row:
        raise MatxferError(f"bad result row: unknown columns {sorted(unknown)} or no job_id")
    folder = results_dir(study_dir)
    table = pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS}], schema=SCHEMA)
    path = folder / f"{row['job_id']}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_results(study_dir: str | Path) -> pd.DataFrame:
    """Every job's row as one table (empty, with the columns, when nothing finished).

    Raises:
        MatxferError: A result file is unreadable (named).
    """
    files = sorted(results_dir(study_dir).glob("*.parquet"))
    tables = []
    for path in files:
        try:
            tables.append(pq.read_table(path).cast(SCHEMA))
        except (OSError, pa.ArrowException, ValueError) as error:
            raise MatxferError(
                f"{path}: unreadable result file ({error}); delete it to rerun that job"
            ) from None
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    return pa.concat_tables(tables).to_pandas()


def forget(study_dir: str | Path, job_ids: list[str]) -> None:
    """Remove the stored rows of ``job_ids`` (``study retry``), so they run again."""
    for job_id in job_ids:
        with contextlib.suppress(FileNotFoundError):
            (results_dir(study_dir) / f"{job_id}.parquet").unlink()
