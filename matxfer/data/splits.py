"""Test, train/validation and trial splits of a list of records.

The study (Devi, Butler & Sai Gautam, arXiv 2406.13142) holds out a fixed
test set, draws five random fine-tuning subsets per size (``trials.json``)
and splits each subset 90/10 into training and validation records. This
module does each of those steps as a small pure function of records and a
seed. Every split keeps the records of each part in their original pool
order, so a split is fully determined by the pool, the fraction and the seed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from matxfer.data.records import Record
from matxfer.errors import ConfigError, DataError, MatxferError, Problem

#: How many offending ids an error message quotes before "...".
_EXAMPLES = 5


def _quote(ids: Sequence[str]) -> str:
    """First few ids joined for an error message."""
    shown = ", ".join(ids[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")


def _source_of(records: Sequence[Record]) -> str:
    return records[0].source if records else "<memory>"


def index_by_id(records: Sequence[Record]) -> dict[str, Record]:
    """Map record id → record, refusing duplicate ids.

    Args:
        records: Records whose ids should be unique.

    Raises:
        DataError: Two or more records share an id (one problem per repeat).
    """
    by_id: dict[str, Record] = {}
    problems = []
    for record in records:
        if record.id in by_id:
            problems.append(Problem(record.source, record.index, record.id, "duplicate id"))
        else:
            by_id[record.id] = record
    if problems:
        raise DataError(f"{len(problems)} record id(s) occur more than once", problems)
    return by_id


def check_no_overlap(
    first: Iterable[Record],
    second: Iterable[Record],
    first_name: str = "training",
    second_name: str = "test",
) -> None:
    """Refuse two record sets that share ids (e.g. training records leaking into the test set).

    Args:
        first: One set of records, e.g. the training pool.
        second: The other set, e.g. the fixed test set.
        first_name: What ``first`` is, for the error message.
        second_name: What ``second`` is, for the error message.

    Raises:
        DataError: Some ids are in both sets; one problem per shared record.
    """
    second_ids = {r.id for r in second}
    shared = [r for r in first if r.id in second_ids]
    if shared:
        problems = [
            Problem(r.source, r.index, r.id, f"also in the {second_name} set") for r in shared
        ]
        raise DataError(
            f"{len(shared)} {first_name} record(s) are also in the {second_name} set "
            f"(ids {_quote([r.id for r in shared])}); remove them or use remove_test_records",
            problems,
        )


def remove_test_records(pool: Sequence[Record], test: Iterable[Record | str]) -> list[Record]:
    """Drop from ``pool`` every record whose id belongs to the fixed test set.

    Args:
        pool: Candidate training/validation records.
        test: The test records, or just their ids.

    Returns:
        The pool records not in the test set, in pool order; the result is
        guaranteed disjoint from ``test``.
    """
    test_ids = {t if isinstance(t, str) else t.id for t in test}
    return [r for r in pool if r.id not in test_ids]


def split_count(n: int, fraction: float) -> int:
    """Size of the held-out part when ``n`` records are split by ``fraction``.

    Rounds half up (``800 * 0.1`` → 80, ``25 * 0.1`` → 3), then keeps at
    least one record on each side, so 10 records at 0.1 give 9 + 1.

    Args:
        n: Number of records to split (at least 2).
        fraction: Share of the held-out part, strictly between 0 and 1.
    """
    # Rounding to 9 decimals first removes float noise such as 0.1 * 800 = 80.00000000000001.
    held_out = math.floor(round(n * fraction, 9) + 0.5)
    return min(max(held_out, 1), n - 1)


def _random_split(
    records: Sequence[Record], fraction: float, seed: int, what: str
) -> tuple[list[Record], list[Record]]:
    """Split off a seeded random ``fraction`` of ``records``; both parts keep record order."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} fraction must be strictly between 0 and 1, got {fraction}")
    if len(records) < 2:
        raise DataError(
            f"cannot split {len(records)} record(s) into {what} and the rest: need at least 2"
        )
    index_by_id(records)
    n_held = split_count(len(records), fraction)
    held = np.zeros(len(records), dtype=bool)
    held[np.random.default_rng(seed).permutation(len(records))[:n_held]] = True
    rest = [r for r, h in zip(records, held, strict=True) if not h]
    held_out = [r for r, h in zip(records, held, strict=True) if h]
    return rest, held_out


def test_split(
    records: Sequence[Record], fraction: float, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """Hold out a random test set when no fixed one is given.

    Args:
        records: All labelled records.
        fraction: Share of records for the test set, in (0, 1).
        seed: Seed of the permutation; the same seed gives the same split.

    Returns:
        ``(rest, test)``, each in the original record order.
    """
    return _random_split(records, fraction, seed, "test")


# A function named test_* would otherwise be collected by pytest wherever it is imported.
test_split.__test__ = False  # type: ignore[attr-defined]


def train_val_split(
    records: Sequence[Record], val_fraction: float = 0.1, seed: int = 0
) -> tuple[list[Record], list[Record]]:
    """Split fine-tuning records into training and validation records.

    The study uses 90/10: 800 records give 720 training and 80 validation
    records; tiny sets still get one validation record (10 → 9 + 1).

    Args:
        records: The fine-tuning records (test set already removed).
        val_fraction: Share of records for validation, in (0, 1) (default: 0.1).
        seed: Seed of the permutation; the same seed gives the same split.

    Returns:
        ``(train, val)``, each in the original record order.
    """
    return _random_split(records, val_fraction, seed, "validation")


def load_trials(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read the study's ``trials.json``: trial → subset size → record ids.

    The file looks like ``{"1": {"10": [jid, ...], "100": [...]}, "2": ...}``;
    ids may be numbers or strings and are returned as strings.

    Args:
        path: The JSON file.

    Raises:
        DataError: The file is missing, is not JSON, or is not laid out as above.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: trials file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read trials file: {exc}") from None
    layout = 'expected {"<trial>": {"<size>": [id, ...]}}'
    if not isinstance(raw, dict):
        raise DataError(f"{path}: {layout}, found a {type(raw).__name__} at the top level")
    trials: dict[str, dict[str, list[str]]] = {}
    for trial, sizes in raw.items():
        if not isinstance(sizes, dict):
            raise DataError(f"{path}: trial {trial!r}: {layout}, found {type(sizes).__name__}")
        trials[str(trial)] = {}
        for size, ids in sizes.items():
            if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
                raise DataError(f"{path}: trial {trial!r} size {size!r}: {layout}")
            trials[str(trial)][str(size)] = [str(i) for i in ids]
    return trials


def trial_subset(
    records: Sequence[Record],
    trials: dict[str, dict[str, list[str]]],
    trial: int | str,
    size: int | str,
) -> list[Record]:
    """The records of one of the study's fine-tuning subsets.

    Args:
        records: The pool the trial ids were drawn from.
        trials: As returned by :func:`load_trials`.
        trial: Trial number, e.g. ``1`` or ``"1"``.
        size: Subset size, e.g. ``800`` or ``"800"``.

    Returns:
        The records in the order of the trial's id list.

    Raises:
        MatxferError: The trial or size is not in ``trials`` (lists those that are).
        DataError: Some trial ids are not in ``records``.
    """
    trial_key, size_key = str(trial), str(size)
    if trial_key not in trials:
        raise MatxferError(f"trial {trial_key!r} not found; available trials: {sorted(trials)}")
    sizes = trials[trial_key]
    if size_key not in sizes:
        available = sorted(sizes, key=lambda s: (len(s), s))
        raise MatxferError(
            f"size {size_key!r} not found in trial {trial_key!r}; available sizes: {available}"
        )
    by_id = index_by_id(records)
    ids = sizes[size_key]
    missing = [i for i in ids if i not in by_id]
    if missing:
        source = _source_of(records)
        raise DataError(
            f"{len(missing)} of {len(ids)} ids of trial {trial_key} size {size_key} are not in "
            f"the pool {source} (e.g. {_quote(missing)}); is it the pool of the same property?",
            [Problem(source, None, i, "trial id not in pool") for i in missing[:_EXAMPLES]],
        )
    return [by_id[i] for i in ids]
