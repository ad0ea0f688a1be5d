"""Which labelled records may calibrate an ensemble: none that a member trained on.

Conformal intervals are valid when the calibration records are exchangeable with
the structures they are applied to; a record a member trained on has a smaller
error than a new one and would make the intervals too narrow. Each member's
records are re-derived from its run directory (``run_info.json``'s ``data_spec``
and ``config.yaml``, the inputs of
:func:`~matxfer.training.inputs.prepare_splits`) and checked against the split
hashes the run recorded, so a changed dataset is an error, not a silent leak.

The automatic calibration set (:func:`automatic_calibration_set`), from the
members' common data (a named dataset's pool, or the data file they split):

1. the records no member trained **or validated** on and none tests on: an
   ensemble of study trials (different subsets of one pool) or of seeds on a
   subset of a pool leaves such records, and they are as new to every member as
   the test set is;
2. when (1) gives fewer than :data:`~matxfer.uncertainty.conformal.MIN_CALIBRATION`
   records, (1) plus the validation records no member trained on. This is the case of
   members that share one split of a file (``--ensemble K``, seeds differ): their
   validation split. Validation records chose each member's checkpoint (early
   stopping), which makes their errors slightly optimistic; the method string says so;
3. still too few (a study's trials can cover a small pool: three trials of 800 of
   dc's 950 leave about 14): a :class:`~matxfer.errors.MatxferError` asking for
   ``--calibration FILE``.

A user's ``--calibration FILE`` (:func:`file_calibration_set`) loses the records a
member trained on (matched by id), when the members' records can be re-derived.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from matxfer.data.readers import read_dataset
from matxfer.data.records import Record
from matxfer.data.registry import resolve_data
from matxfer.errors import MatxferError
from matxfer.training.inputs import DataSpec, Splits
from matxfer.training.outputs import data_hash
from matxfer.training.predictor import read_labelled
from matxfer.training.rundir import read_config, read_run_info
from matxfer.transfer.pretrained import resolve_spec
from matxfer.uncertainty.conformal import MIN_CALIBRATION
from matxfer.uncertainty.members import split_config

#: At most this many automatic calibration records (a seeded sample beyond): the
#: quantile's error is already ~1/sqrt(n) ≈ 2 % there, and each costs M predictions.
MAX_CALIBRATION = 2000
#: ``CalibrationSet.method`` values.
UNSEEN = "pool records no member trained or validated on"
UNSEEN_AND_VALIDATION = (
    "pool records no member trained or validated on, plus validation records no member "
    "trained on (they chose the members' checkpoints: slightly optimistic errors)"
)
FILE = "--calibration file"
HINT = "pass --calibration FILE: labelled records (any supported format) no member trained on"


@dataclass
class CalibrationSet:
    """Records to calibrate on and how they were chosen.

    Attributes:
        records: The records.
        method: One of :data:`UNSEEN`, :data:`UNSEEN_AND_VALIDATION`, :data:`FILE`.
        source: Where they came from (dataset path, or the file).
        dropped: Records of the file left out because a member trained on them.
        checked: Whether the members' training records were known (a file's records
            could be checked against them).
    """

    records: list[Record]
    method: str
    source: str
    dropped: int = 0
    checked: bool = True

    def describe(self) -> dict[str, object]:
        return {
            "method": self.method,
            "source": self.source,
            "n_records": len(self.records),
            "dropped_trained_on": self.dropped,
            "checked_against_members": self.checked,
        }


def member_splits(run_dir: str | Path) -> tuple[Splits, DataSpec]:
    """A member's train/validation/test records, re-derived from its run directory.

    Raises:
        MatxferError: The run recorded no data spec (a bare checkpoint, a merged
            pre-training), or the records re-derived now differ from those it
            trained on (the split hashes of ``run_info.json``).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():  # a checkpoint: its run directory, when it is one
        run_dir = run_dir.parent
    info = read_run_info(run_dir, required=False)
    stored = info.get("data_spec")
    if not stored:
        raise MatxferError(
            f"{run_dir}: no data_spec in run_info.json, so the records this member trained "
            f"on are unknown; {HINT}"
        )
    spec = DataSpec.from_dict(stored)
    splits = resolve_spec(spec, split_config(run_dir, read_config(run_dir)))
    for part in ("train", "val"):
        expected = info.get("split_hashes", {}).get(part)
        if expected is not None and data_hash(splits.parts()[part]) != expected:
            raise MatxferError(
                f"{run_dir}: its {part} records re-derived from {spec.data!r} differ from "
                f"those it trained with (the data changed?); {HINT}"
            )
    return splits, spec


def _all_records(spec: DataSpec) -> tuple[list[Record], str]:
    """Every record of a spec's data: a named dataset's (or study folder's) pool, else
    the data file it was split from."""
    named = resolve_data(spec.data, spec.data_dir, skip_invalid=spec.skip_invalid)
    if named is not None:
        return list(named.pool.records), str(named.pool.source)
    dataset = read_dataset(spec.data, spec.format, spec.target_key, spec.skip_invalid)
    return list(dataset.records), str(dataset.source)


def _ids(splits: Sequence[Splits], part: str) -> set[str]:
    return {r.id for s in splits for r in s.parts()[part]}


def automatic_calibration_set(run_dirs: Sequence[str | Path]) -> CalibrationSet:
    """The calibration records of the module docstring's rules for these members.

    Raises:
        MatxferError: A member's records are unknown, members trained on different
            datasets, or too few records are left (each message says to pass
            ``--calibration FILE``).
    """
    derived = [member_splits(run_dir) for run_dir in run_dirs]
    sources = {(str(spec.data), str(spec.data_dir)) for _, spec in derived}
    if len(sources) > 1:
        raise MatxferError(
            f"the members trained on different datasets ({sorted(sources)}): no common pool "
            f"to calibrate on; {HINT}"
        )
    splits = [s for s, _ in derived]
    train, val, test = (_ids(splits, part) for part in ("train", "val", "test"))
    records, source = _all_records(derived[0][1])
    pool = [r for r in records if r.id not in test]
    chosen = [r for r in pool if r.id not in train and r.id not in val]
    method = UNSEEN
    if len(chosen) < MIN_CALIBRATION:
        chosen += [r for r in pool if r.id in val and r.id not in train]
        method = UNSEEN_AND_VALIDATION
    if len(chosen) < MIN_CALIBRATION:
        raise MatxferError(
            f"only {len(chosen)} records of {source} ({len(pool)} outside the test set) are "
            f"free of the {len(train)} records the {len(splits)} member(s) trained on; at least "
            f"{MIN_CALIBRATION} are needed for conformal intervals; {HINT}"
        )
    if len(chosen) > MAX_CALIBRATION:
        keep = np.sort(np.random.default_rng(0).choice(len(chosen), MAX_CALIBRATION, False))
        chosen = [chosen[i] for i in keep]
    return CalibrationSet(chosen, method, source)


def file_calibration_set(
    path: str | Path,
    run_dirs: Sequence[str | Path],
    names: Sequence[str],
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
) -> CalibrationSet:
    """A user's labelled calibration file, without the records a member trained on.

    When a member's records cannot be re-derived (a bare checkpoint), nothing can be
    dropped: ``checked`` is ``False`` and the caller says so.
    """
    records, source, _, _ = read_labelled(path, names, format, target_key, skip_invalid)
    try:
        trained = _ids([member_splits(run_dir)[0] for run_dir in run_dirs], "train")
    except MatxferError:
        return CalibrationSet(records, FILE, source, checked=False)
    kept = [r for r in records if r.id not in trained]
    return CalibrationSet(kept, FILE, source, dropped=len(records) - len(kept))
