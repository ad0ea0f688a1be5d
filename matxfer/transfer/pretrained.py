"""What a pre-trained run knows about itself: checkpoint hash, training records, re-training.

A fine-tuned model is only as interpretable as what its pre-trained model saw.
:func:`matxfer.training.train` records its data options in
``RUN/run_info.json`` (``data_spec``) and its config in ``RUN/config.yaml``, so
from a pre-training run directory

* :func:`pretraining_records` re-resolves the records it trained on (checked
  against the stored hashes), for the leakage audit of
  :mod:`~matxfer.transfer.leakage`;
* :func:`pretrain_excluding` repeats the pre-training without the crystals of
  a fine-tuning test set, so transfer can be measured on unseen crystals. The
  pre-training size is kept: a seeded sample of the same size is drawn from the
  pool without those crystals (a pre-training on a fixed trial subset shrinks
  instead). The result is an ordinary run directory, reused when it exists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from matxfer.data.readers import read_dataset
from matxfer.data.records import Record
from matxfer.data.registry import resolve_data, sha256_of
from matxfer.data.sampling import sample_described
from matxfer.data.splits import train_val_split
from matxfer.errors import MatxferError
from matxfer.locking import locks_directory
from matxfer.training.checkpoint import BEST_CHECKPOINT, LAST_CHECKPOINT
from matxfer.training.config import TrainConfig
from matxfer.training.inputs import DataSpec, Splits, prepare_splits
from matxfer.training.outputs import data_hash, split_hashes_match, write_json
from matxfer.training.rundir import (
    CONFIG_FILE,
    MERGE_REPORT_FILE,
    check_start,
    is_finished,
    read_config,
    read_run_info,
)
from matxfer.training.shipped import (
    ShippedModel,
    shipped_leakage_reason,
    shipped_model,
    shipped_name_of,
)
from matxfer.transfer.leakage import audit_leakage, exclude_structures
from matxfer.transfer.merge import MatchSettings

#: Written into a :func:`pretrain_excluding` run: which crystals were left out.
EXCLUSION_FILE = "excluded_structures.json"


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint file (identifies the exact pre-trained weights)."""
    return sha256_of(Path(path))


def run_dir_of(checkpoint: Path) -> Path | None:
    """The training run a checkpoint file belongs to (its folder has ``config.yaml``)."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder if (folder / CONFIG_FILE).is_file() else None


@dataclass
class PretrainingData:
    """Records a model was pre-trained on.

    Attributes:
        records: Training + validation records (what the weights were fitted to).
        description: Where they came from, in words.
        spec: The data options that re-resolve them (``None`` for ``--pretrain-data``).
        verified: Whether they hash to what the run recorded (``None``: nothing to check).
    """

    records: list[Record]
    description: str
    spec: dict[str, Any] | None = None
    verified: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no records)."""
        return {
            "description": self.description,
            "records": len(self.records),
            "spec": self.spec,
            "verified": self.verified,
        }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MatxferError(f"{path}: unreadable ({error})") from None


def run_data_spec(run_dir: Path) -> dict[str, Any] | None:
    """The data options stored by ``train`` in ``run_info.json`` (``None`` if absent)."""
    return read_run_info(run_dir, required=False).get("data_spec")


def resolve_spec(
    spec: dict[str, Any] | DataSpec, config: TrainConfig, whole_pool: bool = False
) -> Splits:
    """Splits of a stored data spec under ``config``.

    Args:
        spec: The data options (``run_info.json``'s ``data_spec``, see
            :meth:`~matxfer.training.inputs.DataSpec.to_dict`).
        config: Supplies seed, sampling and split fractions.
        whole_pool: Ignore the spec's sample ``size`` (a trial subset is kept).
    """
    data = spec if isinstance(spec, DataSpec) else DataSpec.from_dict(spec)
    if whole_pool and data.trial is None:
        data = replace(data, size=None)
    return prepare_splits(data, config)


def _all_records(data: str | Path, data_dir: str | Path | None) -> list[Record]:
    """A named dataset's (or study folder's) pool, else every record of a dataset file."""
    named = resolve_data(data, data_dir)
    return list((named.pool if named is not None else read_dataset(data)).records)


def _multi_property_records(run_dir: Path) -> PretrainingData:
    """The merged records of a :func:`~matxfer.transfer.multitask.pretrain_multi` run."""
    # Imported here: multitask imports Lightning (via training.run), which the audit of a
    # single-property run does not need.
    from matxfer.transfer.multitask import recorded_pretraining

    try:
        data, verified = recorded_pretraining(run_dir)
    except MatxferError as error:
        raise MatxferError(
            f"cannot re-read the pre-training data of {run_dir} ({error}); "
            "pass it with --pretrain-data, or skip the audit with --no-audit"
        ) from None
    names = ", ".join(f"{name} {len(prop.pool)}" for name, prop in data.properties.items())
    return PretrainingData(
        data.splits.train + data.splits.val,
        f"multi-property pre-training on {names} (merged by crystal)",
        data.to_dict()["spec"],
        verified,
    )


def _records_by_id(pool: Sequence[Record], ids: Sequence[str]) -> list[Record]:
    by_id = {r.id: r for r in pool}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise MatxferError(f"{len(missing)} recorded pre-training ids are missing: {missing[:5]}")
    return [by_id[i] for i in ids]


def _recorded_splits(run_dir: Path) -> tuple[list[Record], list[Record], str, dict[str, Any]]:
    """(train, val, description, spec) of a run, from its data spec or exclusion record."""
    spec = run_data_spec(run_dir)
    config = read_config(run_dir)
    if spec is not None:
        splits = resolve_spec(spec, config)
        return splits.train, splits.val, splits.source, spec
    exclusion = _read_json(run_dir / EXCLUSION_FILE)
    full = resolve_spec(exclusion["spec"], config, whole_pool=True)
    pool = full.train + full.val
    return (
        _records_by_id(pool, exclusion["train_ids"]),
        _records_by_id(pool, exclusion["val_ids"]),
        exclusion["source"],
        exclusion["spec"],
    )


def shipped_pretraining(model: ShippedModel, data_dir: str | Path | None = None) -> PretrainingData:
    """The records ``model`` was trained on, re-resolved under ``data_dir``.

    Raises:
        MatxferError: The study's datasets are not under ``data_dir`` (or the default
            data directory), or they do not hash to what the model was trained on.
    """
    # Imported here: multitask imports Lightning (via training.run).
    from matxfer.transfer.multitask import replay_pretraining

    data = model.card["data"]
    config = TrainConfig.model_validate(model.card["recipe"]["config"])
    spec = data["spec"]
    merged, verified = replay_pretraining(spec, config, data.get("split_hashes") or {}, data_dir)
    if verified is False:
        raise MatxferError(
            f"the datasets under {data_dir or 'the default data directory'} are not the ones "
            f"shipped model {model.name!r} was trained on (their records hash differently)"
        )
    names = ", ".join(f"{n} {p['used']}" for n, p in data["properties"].items())
    return PretrainingData(
        merged.splits.train + merged.splits.val,
        f"shipped model {model.name}: {names} (merged by crystal)",
        spec,
        verified,
    )


def pretraining_records(
    pretrained: str | Path,
    pretrain_data: str | Path | Sequence[Record] | None = None,
    data_dir: str | Path | None = None,
) -> PretrainingData | None:
    """The records a pre-trained model was trained on, for the leakage audit.

    Args:
        pretrained: The pre-training run directory or one of its checkpoints, or a
            shipped model's weights file (its records are re-read under ``data_dir``).
        pretrain_data: The pre-training dataset, when the run does not record
            it (a bare checkpoint): all its records
            count (for a named dataset or study folder: its pool); or the
            records themselves.
        data_dir: Where named datasets live (for ``pretrain_data`` and shipped models).

    Returns:
        The records, or ``None`` when neither the run nor ``pretrain_data`` tells.

    Raises:
        MatxferError: Unreadable ``pretrain_data``, or recorded data that can
            no longer be read (moved or deleted).
    """
    if isinstance(pretrain_data, str | Path):
        records = _all_records(pretrain_data, data_dir)
        return PretrainingData(records, f"all {len(records)} pool records of {pretrain_data}")
    if pretrain_data is not None:
        return PretrainingData(list(pretrain_data), f"{len(pretrain_data)} records given")
    shipped = shipped_name_of(pretrained)
    if shipped is not None:
        return shipped_pretraining(shipped_model(shipped), data_dir)
    run_dir = run_dir_of(Path(pretrained))
    if run_dir is not None and (run_dir / MERGE_REPORT_FILE).is_file():
        return _multi_property_records(run_dir)
    if run_dir is None or not (run_data_spec(run_dir) or (run_dir / EXCLUSION_FILE).is_file()):
        return None
    try:
        train, val, source, spec = _recorded_splits(run_dir)
    except (MatxferError, KeyError) as error:
        raise MatxferError(
            f"cannot re-read the pre-training data of {run_dir} ({error}); "
            "pass it with --pretrain-data, or skip the audit with --no-audit"
        ) from None
    verified = split_hashes_match(read_run_info(run_dir).get("split_hashes", {}), train, val)
    return PretrainingData(train + val, source, spec, verified)


@dataclass
class ExcludedPretraining:
    """A pre-training run repeated without some crystals.

    Attributes:
        run_dir: The new run directory.
        checkpoint: Its ``best.ckpt``.
        excluded: Ids of the pool records left out (their crystal was in ``exclude``).
        reused: Whether an existing finished run was reused.
    """

    run_dir: Path
    checkpoint: Path
    excluded: list[str] = field(default_factory=list)
    reused: bool = False


def excluded_splits(
    spec: dict[str, Any],
    config: TrainConfig,
    exclude: Sequence[Record],
    settings: MatchSettings | None = None,
) -> tuple[Splits, list[str]]:
    """Pre-training splits of ``spec`` without the crystals of ``exclude``, size kept.

    Returns:
        The splits and the ids of the pool records removed.
    """
    full = resolve_spec(spec, config, whole_pool=True)
    pool = sorted(full.train + full.val, key=lambda r: r.index)
    kept = exclude_structures(pool, exclude, settings)
    kept_ids = {r.id for r in kept}
    removed = [r.id for r in pool if r.id not in kept_ids]
    source = f"{full.source} without {len(removed)} crystals of the fine-tuning test set"
    size = spec.get("size") if spec.get("trial") is None else None
    if size is not None:
        kept, source = sample_described(kept, size, config.sampling, config.seed, source)
    train, val = train_val_split(kept, config.val_fraction, seed=config.seed)
    return Splits(
        train, val, full.test, full.target_names, source, full.test_source, full.skipped
    ), removed


@locks_directory("out", purpose="pre-training without the test crystals")
def pretrain_excluding(
    pretrained: str | Path,
    exclude: Sequence[Record],
    out: str | Path,
    *,
    settings: MatchSettings | None = None,
    progress: bool | None = None,
) -> ExcludedPretraining:
    """Repeat a pre-training run without the crystals of ``exclude`` (e.g. an FT test set).

    Same config (seed, sampling, size, model) and data options as the original
    run; see the module docstring for how the size is kept. A finished run in
    ``out`` made from the same records is reused, an interrupted one resumed.

    Args:
        pretrained: The original pre-training run directory (or a checkpoint in it).
        exclude: Records whose crystals the new pre-training must not see.
        out: Run directory of the new pre-training.
        settings: Structure-matching tolerances.
        progress: Progress bars.

    Raises:
        MatxferError: ``pretrained`` is not a run that recorded its data
            (e.g. a bare checkpoint or a multi-property run), or ``out`` holds
            a run on other records.
    """
    from matxfer.training.run import train

    shipped = shipped_name_of(pretrained)
    if shipped is not None:
        raise MatxferError(
            f"{shipped!r} is a shipped model, which is not re-trained here: its training data "
            "already leave out every crystal of the study's seven fixed test sets (matxfer "
            f"models show {shipped}); to leave out your own test crystals, pre-train with "
            "matxfer pretrain-multi --exclude-test-structures"
        )
    run_dir = run_dir_of(Path(pretrained))
    spec = run_data_spec(run_dir) if run_dir is not None else None
    if run_dir is None or spec is None:
        raise MatxferError(
            f"{pretrained}: excluding test structures re-runs the pre-training, which needs a "
            "run directory made by `matxfer train` (it records its data and config); for "
            "multi-property pre-training use `matxfer pretrain-multi --exclude-test-structures`"
        )
    config = read_config(run_dir)
    splits, removed = excluded_splits(spec, config, exclude, settings)
    out = Path(out)
    expected = data_hash(splits.train + splits.val + splits.test)
    if is_finished(out):
        cached = read_run_info(out).get("data_hash")
        if cached != expected:
            raise MatxferError(
                f"{out} holds a pre-training on other records; remove it or choose another --out"
            )
        return ExcludedPretraining(out, out / BEST_CHECKPOINT, removed, reused=True)
    resume = (out / LAST_CHECKPOINT).is_file()
    check_start(out, resume, overwrite=not resume)  # a run killed before its first epoch
    # Written first, so that even an interrupted run can be audited (pretraining_records).
    write_json(
        out / EXCLUSION_FILE,
        {
            "original_run": str(run_dir.resolve()),
            "spec": spec,
            "source": splits.source,
            "num_excluded": len(removed),
            "excluded": removed,
            "train_ids": [r.id for r in splits.train],
            "val_ids": [r.id for r in splits.val],
        },
    )
    train(splits, out, config=config, progress=progress, resume=resume, keep=(EXCLUSION_FILE,))
    return ExcludedPretraining(out, out / BEST_CHECKPOINT, removed)


def leakage_entry(
    pretrained: Path,
    splits: Splits,
    pretrain_data: str | Path | Sequence[Record] | None,
    data_dir: str | Path | None,
) -> dict[str, Any]:
    """The ``leakage`` entry of a fine-tuning's ``transfer.json``: how many of ``splits``'
    crystals the pre-training of ``pretrained`` saw, or why that was not audited.

    Raises:
        MatxferError: The pre-training data cannot be read (a shipped model without
            the study's data is not an error: its entry says why).
    """
    try:
        pt = pretraining_records(pretrained, pretrain_data, data_dir)
    except MatxferError as error:
        shipped = shipped_name_of(pretrained)
        if shipped is None or pretrain_data is not None:
            raise
        # A shipped model works offline; only its audit needs the study's data.
        return {"audited": False, "reason": shipped_leakage_reason(shipped, error)}
    if pt is None:
        return {
            "audited": False,
            "reason": "the pre-training data are unknown (a bare checkpoint, or a run that "
            "did not record them): pass --pretrain-data",
        }
    report = audit_leakage(pt.records, splits.train + splits.val, splits.test)
    return {
        "audited": True,
        "summary": str(report),
        "pretraining_data": pt.to_dict(),
        **report.to_dict(),
    }
