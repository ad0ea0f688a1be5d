"""What a study needs to know about its datasets before anything trains.

:func:`dataset_facts` reads only what planning needs (record counts, mean
atoms per structure, the sizes of the study's trials, a content hash), so a
spec with a size larger than the pool or a trial that does not exist fails
at ``matxfer study plan`` within seconds, and every job id carries the hash
of the data it trains on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from matxfer.data.registry import resolve_data
from matxfer.data.splits import load_trials
from matxfer.errors import ConfigError, DataError, MatxferError


@dataclass(frozen=True)
class DatasetFacts:
    """Counts and identity of one dataset as a study uses it.

    Attributes:
        name: What the spec called it.
        pool_size: Records available for training and validation.
        test_size: Records of the fixed test set (0: none; a split of the pool is used).
        mean_atoms: Mean atoms per structure in the pool (cost estimates).
        trials: Trial → available subset sizes (empty without ``trials.json``).
        sha256: Hash of the pool, test and trials files together.
    """

    name: str
    pool_size: int
    test_size: int
    mean_atoms: float
    trials: dict[int, tuple[int, ...]]
    sha256: str


def _records(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise DataError(f"{path}: cannot read dataset ({error})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records")
    return data


def _mean_atoms(records: list[dict]) -> float:
    counts = [
        len(r["atoms"]["elements"])
        for r in records
        if isinstance(r, dict) and isinstance(r.get("atoms"), dict) and "elements" in r["atoms"]
    ]
    return sum(counts) / len(counts) if counts else 10.0


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stamp(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    stats = [(p, p.stat()) for p in paths if p.exists()]
    return tuple((str(p), s.st_mtime_ns, s.st_size) for p, s in stats)


def dataset_facts(name: str, data_dir: str | None) -> DatasetFacts:
    """Facts of a named dataset, a study-layout folder or a dataset file.

    Cached per process while the files' modification times and sizes stay the same.

    Raises:
        ConfigError: ``name`` is neither a dataset name nor an existing path.
        DataError: The files cannot be read.
    """
    path = Path(name).expanduser()
    files = [path] if path.exists() else []
    if path.is_dir():
        files = sorted(path.iterdir())
    elif not path.exists():
        try:
            named = resolve_data(name, data_dir, download=False)
        except MatxferError:
            named = None  # reported by _dataset_facts
        if named is not None:
            files = [p for p in (named.pool_path, named.test_path, named.trials_path) if p]
    return _dataset_facts(name, data_dir, _stamp(files))


@cache
def _dataset_facts(
    name: str, data_dir: str | None, stamp: tuple[tuple[str, int, int], ...]
) -> DatasetFacts:
    path = Path(name).expanduser()
    try:
        named = resolve_data(name, data_dir, download=False)
    except MatxferError as error:
        raise ConfigError(
            f"dataset {name!r} is not available under data_dir {data_dir}: {error}"
        ) from None
    if named is None and not path.exists():
        from matxfer.data.registry import dataset_names

        raise ConfigError(
            f"unknown dataset {name!r}: not a file or folder, nor one of {dataset_names()}"
        )
    if named is None:  # a plain file: read (and validate) it
        from matxfer.training.inputs import read_records

        records, _, _ = read_records(path)
        return DatasetFacts(
            name,
            len(records),
            0,
            sum(len(r.structure) for r in records) / max(len(records), 1),
            {},
            _hash_files([path] if path.is_file() else sorted(path.iterdir())),
        )
    if named.pool_path.name.endswith((".json", ".json.gz")):
        pool = _records(named.pool_path)
        pool_size, mean_atoms = len(pool), _mean_atoms(pool)
    else:  # a downloaded public file in another format
        records = named.pool.records
        pool_size = len(records)
        mean_atoms = sum(len(r.structure) for r in records) / max(pool_size, 1)
    test_size = len(_records(named.test_path)) if named.test_path is not None else 0
    trials: dict[int, tuple[int, ...]] = {}
    if named.trials_path is not None:
        for trial, subsets in load_trials(named.trials_path).items():
            if trial.isdigit():
                trials[int(trial)] = tuple(sorted(int(s) for s in subsets if s.isdigit()))
    files = [p for p in (named.pool_path, named.test_path, named.trials_path) if p is not None]
    return DatasetFacts(name, pool_size, test_size, mean_atoms, trials, _hash_files(files))
