r"""Multi-property pre-training (MPT): one model on several property datasets at once.

Devi, Butler & Sai Gautam (npj Comput Mater 2024, arXiv 2406.13142) pre-train
one ALIGNN on the union of several property datasets and fine-tune it on a
property it has (or has not, leave-one-out) seen. Here:

* **Merge.** Property datasets drawn from one database share crystals under
  unrelated ids. :func:`~matxfer.transfer.merge.merge_datasets` (reduced
  formula and volume prefilter, then StructureMatcher) turns the same crystal
  in several datasets into one record with several labels, so no structure is
  counted twice; the :class:`~matxfer.transfer.merge.MergeReport` counts the
  crystals each pair of datasets shares.
* **One head per property.** The model's head has P outputs, one column per
  property. Output column :math:`t` is :math:`\hat y_t = w_t \cdot h + b_t`,
  the :math:`t`-th row of the last Linear applied to the shared crystal
  features :math:`h`: exactly a separate linear head per property, selected
  by the one-hot task vector :math:`e_t` (:math:`\hat y_t = (W h + b) \cdot e_t`).
  With the default head (no hidden layers) nothing but :math:`h` is shared;
  hidden head layers (``head_hidden_layers > 0``) would be shared by all tasks.
* **Masked loss.** :func:`~matxfer.training.losses.masked_l1`, the study's

  .. math::
      L = \frac{1}{N} \sum_{i=1}^{N} \sum_{t=1}^{P}
          \left| \hat y_{it} - y_{it} \right| \delta_{it},

  with :math:`\delta_{it} = 1` only where structure :math:`i` has a label
  for property :math:`t` and :math:`N` the batch size. A head row receives
  gradient only from its own property's labels.
* **Scaling.** Each property's targets are scaled separately: the run's
  :class:`~matxfer.data.transforms.TargetTransform` has P columns, each fitted
  on the labels present in the training split.
* **Test sets.** A property's fixed test records (named datasets) are removed
  from its pool; a property without one has a seeded ``test_fraction`` held
  out. Each property is tested on its own test set (metrics per property in
  ``metrics.json``). With ``exclude_test_structures`` no crystal of *any*
  property's test set, excluded properties included, stays in the
  pre-training data (:func:`~matxfer.transfer.leakage.exclude_structures`).
  The validation set is a seeded ``val_fraction`` of the merged records.
* **Leave-one-out.** ``exclude=("ph",)`` pre-trains on the others; fine-tune
  the run on ``ph`` afterwards (``matxfer finetune``).

Training itself is :func:`matxfer.training.train` on the prepared
:class:`~matxfer.training.inputs.Splits`; the run directory also holds
``merge_report.json``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from rich.table import Table
from rich.text import Text

from matxfer.data.records import Record
from matxfer.data.registry import is_named
from matxfer.data.sampling import sample_described
from matxfer.data.splits import train_val_split
from matxfer.errors import ConfigError, DataError, MatxferError
from matxfer.locking import DirectoryLock
from matxfer.training.config import TrainConfig, resolve_config
from matxfer.training.inputs import Splits, prepare_splits
from matxfer.training.outputs import split_hashes_match, write_json
from matxfer.training.run import TrainResult, train
from matxfer.training.rundir import (
    MERGE_REPORT_FILE,
    check_run_dir,
    read_config,
    read_run_info,
)
from matxfer.transfer.leakage import exclude_structures
from matxfer.transfer.merge import MatchSettings, MergeReport, merge_datasets

#: The study's MPT loss (see the module docstring).
MPT_LOSS = "masked_l1"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class PropertyData:
    """One property's records before merging.

    Attributes:
        name: Property name (the model's output column, the merged label name).
        source: Where its pool came from (and how it was sampled).
        test_source: Where its test set came from.
        pool: Records used for pre-training (its test records removed).
        test: Its test records.
        available: Pool records before test-structure removal and sampling.
        skipped: Invalid records skipped while reading.
        removed_test_structures: Pool records dropped because their crystal is
            in some property's test set (``exclude_test_structures``).
    """

    name: str
    source: str
    test_source: str
    pool: list[Record]
    test: list[Record]
    available: int = 0
    skipped: int = 0
    removed_test_structures: int = 0


@dataclass
class PretrainData:
    """Everything :func:`pretrain_multi` trains and tests on.

    Attributes:
        splits: Merged training and validation records, every property's test
            records, and the target names (one per property, in dataset order).
        merge: What merging the pools did.
        properties: The pre-training properties, by name.
        excluded: Properties left out (leave-one-out).
        exclude_test_structures: Whether test crystals were removed from the pools.
        spec: The data options of :func:`prepare_pretraining` (JSON-ready), which
            re-resolve these records (:func:`recorded_pretraining`).
    """

    splits: Splits
    merge: MergeReport
    properties: dict[str, PropertyData]
    excluded: list[str] = field(default_factory=list)
    exclude_test_structures: bool = False
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``merge_report.json``)."""
        return {
            "spec": self.spec,
            "targets": self.splits.target_names,
            "excluded": self.excluded,
            "exclude_test_structures": self.exclude_test_structures,
            "properties": {
                name: {
                    "source": p.source,
                    "test_source": p.test_source,
                    "pool": len(p.pool),
                    "available": p.available,
                    "test": len(p.test),
                    "skipped": p.skipped,
                    "removed_test_structures": p.removed_test_structures,
                }
                for name, p in self.properties.items()
            },
            "merge": self.merge.to_dict(),
            "counts": self.splits.counts,
        }


def parse_dataset_args(items: Iterable[str]) -> dict[str, str]:
    """``["fe", "gap=data/gaps.json"]`` → ``{"fe": "fe", "gap": "data/gaps.json"}``.

    A bare word must be a named dataset (its name becomes the property name).

    Raises:
        ConfigError: A bad or repeated name, an empty DATA, or a bare word
            that is not a named dataset.
    """
    datasets: dict[str, str] = {}
    for item in items:
        name, sep, data = item.partition("=")
        if not sep:
            if not is_named(item):
                raise ConfigError(
                    f"{item!r} is not a named dataset; write NAME=DATA for other data "
                    f"(e.g. gap={item})"
                )
            data = item
        check_property_name(name)
        if not data:
            raise ConfigError(f"{item!r}: DATA after '=' is empty")
        if name in datasets:
            raise ConfigError(f"property name {name!r} is given twice")
        datasets[name] = data
    return datasets


def check_property_name(name: str) -> None:
    """Refuse names that cannot label a merged record or an output column.

    Raises:
        ConfigError: ``name`` is not letters, digits, ``_`` and ``-``.
    """
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"property name {name!r}: use letters, digits, '_' and '-' only (e.g. ph, band_gap)"
        )


def mpt_config(profile: str = "paper", overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A training config for MPT: ``profile``, the masked L1 loss, then ``overrides``."""
    return resolve_config(profile, {"loss": MPT_LOSS, **(overrides or {})})


def _property_name_of(label: str) -> str:
    # merge_datasets names labels "<dataset>" or "<dataset>.<target>"; names have no ".".
    return label.split(".", 1)[0]


def _load_property(
    name: str, data: str | Path, config: TrainConfig, data_dir: str | Path | None
) -> PropertyData:
    """Pool (test records removed) and test set of one dataset, as ``train`` would split them."""
    splits = prepare_splits(data, config, data_dir=data_dir)
    # prepare_splits also splits train/val; MPT validates on the merged set instead.
    pool = sorted(splits.train + splits.val, key=lambda r: r.index)
    return PropertyData(
        name,
        splits.source,
        splits.test_source,
        pool,
        splits.test,
        available=len(pool),
        skipped=splits.skipped,
    )


def _target_names(merged: Sequence[Record], order: Sequence[str]) -> list[str]:
    labels = dict.fromkeys(label for record in merged for label in record.targets)
    position = {name: i for i, name in enumerate(order)}
    return sorted(labels, key=lambda label: (position[_property_name_of(label)], label))


def prepare_pretraining(
    datasets: Mapping[str, str | Path],
    config: TrainConfig,
    exclude: Iterable[str] = (),
    data_dir: str | Path | None = None,
    size: int | None = None,
    exclude_test_structures: bool = False,
    match: MatchSettings | None = None,
    max_atoms: int | None = None,
) -> PretrainData:
    """Read, filter, sample and merge the pre-training datasets (see the module docstring).

    Args:
        datasets: Property name → dataset file/folder or named dataset.
        config: Supplies ``seed``, ``sampling``, ``val_fraction``, ``test_fraction``.
        exclude: Property names to leave out of pre-training.
        data_dir: Where named datasets live.
        size: Records drawn per property from its pool (``config.sampling``);
            ``None`` keeps every record.
        exclude_test_structures: Drop pool records whose crystal is in any
            property's test set, excluded properties included.
        match: Structure-matching tolerances (default: :class:`MatchSettings`).
        max_atoms: Keep only pool records of at most this many atoms per cell, before
            sampling (``None``: all). Pre-training on small cells costs less per record
            and, for small-cell targets such as phonons, transferred better (README).

    Raises:
        ConfigError: Bad names, an unknown ``exclude``, or nothing left to train on.
        DataError: Unreadable data, or a property without training labels.
    """
    for name in datasets:
        check_property_name(name)
    excluded = list(dict.fromkeys(exclude))
    unknown = [name for name in excluded if name not in datasets]
    if unknown:
        raise ConfigError(f"--exclude {unknown}: not among the datasets {list(datasets)}")
    included = [name for name in datasets if name not in excluded]
    if not included:
        raise ConfigError("every dataset is excluded; nothing is left to pre-train on")
    properties = {name: _load_property(name, datasets[name], config, data_dir) for name in included}
    if max_atoms is not None:
        if max_atoms < 1:
            raise ConfigError(f"--max-atoms {max_atoms}: must be at least 1")
        for name, prop in properties.items():
            kept = [r for r in prop.pool if len(r.structure) <= max_atoms]
            if not kept:
                raise DataError(
                    f"{name}: none of its {len(prop.pool)} pool records has at most "
                    f"{max_atoms} atoms (--max-atoms); raise it or leave {name} out"
                )
            prop.source += f" (cells of at most {max_atoms} atoms: {len(kept)} of {len(prop.pool)})"
            prop.pool = kept

    if exclude_test_structures:
        tests = [r for p in properties.values() for r in p.test]
        for name in excluded:  # the leave-one-out target's test set matters most
            tests += _load_property(name, datasets[name], config, data_dir).test
        for prop in properties.values():
            kept = exclude_structures(prop.pool, tests, match)
            prop.removed_test_structures = len(prop.pool) - len(kept)
            prop.pool = kept
    if size is not None:
        for prop in properties.values():
            prop.pool, prop.source = sample_described(
                prop.pool, size, config.sampling, config.seed, prop.source
            )

    merged, report = merge_datasets({name: p.pool for name, p in properties.items()}, match)
    # Merging one dataset only renames its labels and prefixes its ids ("ph:mp-1"), so the
    # test records of different properties stay distinct and carry their property's label.
    test = [r for name, p in properties.items() for r in merge_datasets({name: p.test}, match)[0]]
    train_records, val_records = train_val_split(merged, config.val_fraction, seed=config.seed)
    names = _target_names(merged, included)
    unlabelled = [n for n in names if not any(n in r.targets for r in train_records)]
    if unlabelled:
        raise DataError(
            f"no training record carries {unlabelled} after the validation split; "
            "use more records (--size) for these properties"
        )
    splits = Splits(
        train_records,
        val_records,
        test,
        names,
        source="merged " + "; ".join(f"{n}: {p.source}" for n, p in properties.items()),
        test_source="; ".join(f"{n}: {p.test_source}" for n, p in properties.items()),
        skipped=sum(p.skipped for p in properties.values()),
    )
    spec = {
        "datasets": {name: str(data) for name, data in datasets.items()},
        "exclude": excluded,
        "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
        "size": size,
        "exclude_test_structures": exclude_test_structures,
        "max_atoms": max_atoms,
    }
    return PretrainData(splits, report, properties, excluded, exclude_test_structures, spec)


def recorded_pretraining(run_dir: str | Path) -> tuple[PretrainData, bool | None]:
    """Re-resolve the records an MPT run trained on (e.g. for a leakage audit).

    Args:
        run_dir: A :func:`pretrain_multi` run directory.

    Returns:
        The data, and whether its training and validation records hash to what
        the run recorded (``None`` when the run recorded no hashes).

    Raises:
        MatxferError: Not an MPT run, or its data can no longer be read.
    """
    run_dir = Path(run_dir)
    try:
        spec = json.loads((run_dir / MERGE_REPORT_FILE).read_text())["spec"]
    except (OSError, ValueError, KeyError) as error:
        raise MatxferError(f"{run_dir}: not a multi-property pre-training run ({error})") from None
    return replay_pretraining(
        spec, read_config(run_dir), read_run_info(run_dir).get("split_hashes", {}), spec["data_dir"]
    )


def replay_pretraining(
    spec: Mapping[str, Any],
    config: TrainConfig,
    split_hashes: dict[str, str],
    data_dir: str | Path | None,
) -> tuple[PretrainData, bool | None]:
    """Prepare again the data a merge ``spec`` (``merge_report.json``'s) describes, under
    ``data_dir``, and whether they match the recorded ``split_hashes`` (``None``: none)."""
    data = prepare_pretraining(
        spec["datasets"],
        config,
        spec["exclude"],
        data_dir,
        spec["size"],
        spec["exclude_test_structures"],
        max_atoms=spec.get("max_atoms"),
    )
    return data, split_hashes_match(split_hashes, data.splits.train, data.splits.val)


def pretrain_multi(
    datasets: Mapping[str, str | Path],
    out: str | Path,
    exclude: Iterable[str] = (),
    config: TrainConfig | None = None,
    data_dir: str | Path | None = None,
    size: int | None = None,
    sampling: str | None = None,
    seed: int | None = None,
    exclude_test_structures: bool = False,
    progress: bool | None = None,
    *,
    max_atoms: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    on_merged: Callable[[PretrainData], None] | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Pre-train one ALIGNN on several merged property datasets (MPT).

    Example: ``pretrain_multi({"ph": "ph", "dc": "dc"}, "runs/mpt", data_dir=...)``.

    Args:
        datasets: Property name → dataset file/folder or named dataset.
        out: Run directory (created); besides :func:`~matxfer.training.train`'s
            outputs it holds ``merge_report.json``.
        exclude: Properties to leave out (leave-one-out pre-training).
        config: Training config (default: :func:`mpt_config`, the ``paper``
            profile with the masked L1 loss). Its ``loss`` is used as given.
        data_dir: Where named datasets live.
        size: Records per property drawn from its pool (``None``: all).
        sampling: ``random``, ``stratified`` or ``normal``; ``None`` keeps the config's.
        seed: Seed of sampling, splits, initialisation; ``None`` keeps the config's.
        exclude_test_structures: Drop pool records whose crystal is in any
            property's test set.
        progress: Progress bars (default: when stderr is a terminal).
        max_atoms: Pre-train only on cells of at most this many atoms (``None``: all).
        resume: Continue the interrupted run in ``out``.
        overwrite: Replace what a non-empty ``out`` holds (an old run).
        on_merged: Called with the prepared data before training starts.
        callbacks: Extra Lightning callbacks.

    Returns:
        The run; ``metrics["test"][name]`` holds each property's test metrics.

    Raises:
        MatxferError: Bad data or options, or an existing run without ``resume``.
    """
    config = config or mpt_config()
    changes = {k: v for k, v in {"sampling": sampling, "seed": seed}.items() if v is not None}
    if changes:
        config = TrainConfig.model_validate({**config.model_dump(), **changes})
    out = Path(out)
    keep = (MERGE_REPORT_FILE,)
    with DirectoryLock(out, purpose="multi-property pre-training"):
        check_run_dir(out, config, resume, overwrite, keep)  # before the minutes of merging
        data = prepare_pretraining(
            datasets, config, exclude, data_dir, size, exclude_test_structures, max_atoms=max_atoms
        )
        write_json(out / MERGE_REPORT_FILE, data.to_dict())
        if on_merged is not None:
            on_merged(data)
        return train(
            data.splits,
            out,
            config=config,
            progress=progress,
            resume=resume,
            callbacks=callbacks,
            keep=keep,
        )


def merge_tables(data: PretrainData) -> list[Table | str]:
    """What to print about the merge: records per property, crystals shared per pair,
    and a one-line summary."""
    names = list(data.properties)
    per_property = Table(
        "property", "used", "of pool", "test", "test crystals removed", title="pre-training data"
    )
    for name, prop in data.properties.items():
        per_property.add_row(
            Text(name),  # user-chosen names: never parsed as markup
            str(len(prop.pool)),
            str(prop.available),
            str(len(prop.test)),
            str(prop.removed_test_structures),
        )
    report = data.merge
    shared = Table("", title="shared crystals")
    for name in names:
        shared.add_column(Text(name))  # a user-chosen name: never parsed as markup
    for a in names:
        cells: list[Text | str] = []
        for b in names:
            if a == b:
                cells.append(Text(str(report.counts[a]), style="dim"))
            else:
                cells.append(str(report.overlaps.get((a, b), report.overlaps.get((b, a), 0))))
        shared.add_row(Text(a), *cells)
    summary = (
        f"{report.input_total} records merged into {report.merged_total} "
        f"({report.seconds:.1f} s): {data.splits.counts['train']} train, "
        f"{data.splits.counts['val']} validation; excluded: {data.excluded or 'none'}"
    )
    return [per_property, shared, summary] if len(names) > 1 else [per_property, summary]
