"""From what the user names (files, named datasets, structures) to labelled graphs.

:func:`prepare_splits` is the one place that decides which records train,
validate and test a model:

* a named dataset (``ph``, resolved under ``data_dir``) or a folder in the
  study layout, with ``trial`` and ``size``: the study's fine-tuning subset,
  its fixed test set, a seeded 90/10 train/validation split;
* the same without ``trial``: its pool (optionally sampled down to ``size``)
  and its fixed test set;
* a file: its records; the test set is ``test`` when given, else a seeded
  ``test_fraction`` of the file.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ase import Atoms
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from matxfer.data import Dataset, ValidationConfig, read_dataset, resolve_data
from matxfer.data.formats.folders import read_structure_file
from matxfer.data.records import Record, target_names
from matxfer.data.sampling import sample_described
from matxfer.data.splits import (
    check_no_overlap,
    remove_test_records,
    test_split,
    train_val_split,
    trial_subset,
)
from matxfer.data.validate import InvalidRecordError, check_structure, describe_error
from matxfer.errors import ConfigError, DataError, MatxferError, Problem
from matxfer.graphs import build_graphs
from matxfer.graphs.config import GraphConfig
from matxfer.graphs.data import CrystalGraph
from matxfer.paths import graph_cache_dir
from matxfer.training.config import TrainConfig
from matxfer.training.loaders import with_targets

if TYPE_CHECKING:
    from torch import nn
    from torch_geometric.data import Data

#: Suffixes of single-structure files that ``predict`` reads without labels.
STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar")

#: Fewer training records than this draw a warning (the study's smallest size, 10, has 9).
FEW_TRAINING_RECORDS = 5


@dataclass(frozen=True)
class DataSpec:
    """Which data a run trains and tests on: what :func:`prepare_splits` turns into records.

    Stored as ``data_spec`` in the run's ``run_info.json`` (:meth:`to_dict`) so that
    fine-tuning from the run can re-resolve the records it trained on (leakage audit,
    pre-training repeated without the fine-tuning test crystals). How records are
    sampled and split (seed, fractions, ``sampling``) belongs to the run's
    :class:`~matxfer.training.config.TrainConfig`, stored in ``config.yaml``.

    Attributes:
        data: Dataset file/directory, a folder in the study layout (``pool.json.gz``,
            ``test.json.gz``, ``trials.json``) or a named dataset (``ph``, ``dc``, ...).
        test: Test dataset file; wins over a named dataset's fixed test set.
        data_dir: Where named datasets live (e.g. ``../shared/datasets``).
        trial: The study's trial number (named datasets and study folders; needs ``size``).
        size: Number of training + validation records.
        target_key: Which target a file's records carry (see the readers).
        format: File format, when the suffix does not tell.
        skip_invalid: Skip invalid records (reported) instead of failing.
    """

    data: str | Path
    test: str | Path | None = None
    data_dir: str | Path | None = None
    trial: int | None = None
    size: int | None = None
    target_key: str | None = None
    format: str | None = None
    skip_invalid: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``run_info.json``, existing paths made absolute (a name stays)."""

        def portable(path: str | Path | None) -> str | None:
            if path is None:
                return None
            full = Path(path).expanduser()
            return str(full.resolve()) if full.exists() else str(path)  # a name, e.g. "fe"

        return {
            **asdict(self),
            "data": portable(self.data),
            "test": portable(self.test),
            "data_dir": portable(self.data_dir),
        }

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> DataSpec:
        """The spec :meth:`to_dict` wrote (missing keys take their defaults).

        Raises:
            MatxferError: ``stored`` names no ``data`` or holds keys a spec does not have.
        """
        unknown = sorted(set(stored) - cls.__dataclass_fields__.keys())
        if unknown or not stored.get("data"):
            raise MatxferError(
                f"not a data spec: {dict(stored)!r} (needs 'data'; unknown keys {unknown}; "
                f"allowed: {sorted(cls.__dataclass_fields__)})"
            )
        return cls(**{**stored, "skip_invalid": bool(stored.get("skip_invalid", False))})


def as_data_spec(data: DataSpec | str | Path, **options: Any) -> DataSpec:
    """``data`` as a :class:`DataSpec`: a spec as it is, else a spec of ``data`` and the
    loose data options (the keyword form ``train(data, out, trial=1, size=100)`` keeps)."""
    if not isinstance(data, DataSpec):
        return DataSpec(data, **options)
    given = {key: value for key, value in options.items() if value not in (None, False)}
    if given:
        raise ConfigError(f"data options {sorted(given)} given with a DataSpec; set them in it")
    return data


@dataclass
class Splits:
    """The records of one run and where they came from.

    Attributes:
        train: Training records.
        val: Validation records (early stopping, best-epoch choice).
        test: Test records (never used for training decisions).
        target_names: Target names, the column order of every array.
        source: Description of the training data.
        test_source: Description of the test data.
        skipped: Number of invalid records skipped while reading.
        spec: The options these records were prepared from (``None``: prepared
            otherwise, e.g. merged multi-property records).
        counts: Records per part.
    """

    train: list[Record]
    val: list[Record]
    test: list[Record]
    target_names: list[str]
    source: str
    test_source: str
    skipped: int = 0
    spec: DataSpec | None = None
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {split: len(records) for split, records in self.parts().items()}

    def parts(self) -> dict[str, list[Record]]:
        """``{"train": ..., "val": ..., "test": ...}``."""
        return {"train": self.train, "val": self.val, "test": self.test}


def _part(dataset: Dataset) -> tuple[list[Record], str, int]:
    return list(dataset.records), str(dataset.source), len(dataset.skipped)


def read_records(
    data: str | Path,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    require_targets: bool = True,
) -> tuple[list[Record], str, int]:
    """Read a dataset file or directory: (records, source, number skipped); with
    ``require_targets=False``, ALIGNN records without a label are kept unlabelled."""
    validation = ValidationConfig(require_targets=require_targets)
    return _part(read_dataset(data, format, target_key, skip_invalid, validation))


def prepare_splits(
    data: DataSpec | str | Path,
    config: TrainConfig,
    test: str | Path | None = None,
    data_dir: str | Path | None = None,
    trial: int | None = None,
    size: int | None = None,
    target_key: str | None = None,
    format: str | None = None,
    skip_invalid: bool = False,
) -> Splits:
    """Train/validation/test records of a run (see the module docstring for the rules).

    Args:
        data: What to read (:class:`DataSpec`), or its ``data`` with the other
            options (``test`` to ``skip_invalid``, see :class:`DataSpec`) given loose.
        config: Supplies ``seed``, ``val_fraction``, ``test_fraction``, ``sampling``.

    Raises:
        MatxferError: Inconsistent options, or data problems from the readers.
    """
    spec = as_data_spec(
        data, test=test, data_dir=data_dir, trial=trial, size=size,
        target_key=target_key, format=format, skip_invalid=skip_invalid,
    )  # fmt: skip
    data, test, trial, size = spec.data, spec.test, spec.trial, spec.size
    target_key, format, skip_invalid = spec.target_key, spec.format, spec.skip_invalid
    if trial is not None and size is None:
        raise ConfigError("--trial needs --size (the study's subset sizes: 10, 100, 200, 500, 800)")
    named = resolve_data(data, spec.data_dir, skip_invalid=skip_invalid)
    fixed_test: list[Record] | None = None
    test_source = ""
    skipped = 0
    if named is not None:
        pool, source, skipped = _part(named.pool)
        if test is None and named.test is not None:
            fixed_test, test_source, n = _part(named.test)
            skipped += n
        if trial is not None:
            if named.trials is None:
                raise MatxferError(f"dataset {data!r} has no trials.json; drop --trial")
            pool = trial_subset(pool, named.trials, trial, size)
            source += f" (trial {trial}, size {size})"
            size = None
    elif trial is not None:
        raise ConfigError(
            "--trial applies to named datasets (e.g. `ph --data-dir DIR`) or study folders only"
        )
    else:
        pool, source, skipped = read_records(data, format, target_key, skip_invalid)
    if test is not None:
        fixed_test, test_source, n = read_records(test, format, target_key, skip_invalid)
        skipped += n
    if fixed_test is None:
        test_seed = config.seed if config.test_seed is None else config.test_seed
        pool, fixed_test = test_split(pool, config.test_fraction, seed=test_seed)
        test_source = f"{config.test_fraction:g} of {source} held out (seed {test_seed})"
    else:
        before = len(pool)
        pool = remove_test_records(pool, fixed_test)
        if len(pool) < before:
            source += f" ({before - len(pool)} records also in the test set removed)"
        check_no_overlap(pool, fixed_test)
    if size is not None:
        pool, source = sample_described(pool, size, config.sampling, config.seed, source)
    train, val = train_val_split(pool, config.val_fraction, seed=config.seed)
    names = target_names(train)
    if not names:
        raise DataError(f"{source}: the training records carry no target values")
    if len(train) < FEW_TRAINING_RECORDS:
        warnings.warn(
            f"{source}: only {len(train)} training record(s) after holding out test and "
            "validation records; a model and metrics from so few mean little",
            UserWarning,
            stacklevel=2,
        )
    return Splits(train, val, fixed_test, names, source, test_source, skipped, spec)


def _is_structure_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(STRUCTURE_SUFFIXES) or name.startswith(("poscar", "contcar"))


def structure_files(path: str | Path) -> list[Path] | None:
    """Structure files ``path`` names: itself, or those in a folder without ``id_prop.csv``;
    ``None`` when it is not such a file or folder (e.g. a dataset file)."""
    path = Path(path).expanduser()
    if path.is_file() and _is_structure_file(path):
        return [path]
    if path.is_dir() and not (path / "id_prop.csv").is_file():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_structure_file(p))
        return files or None
    return None


def read_unlabelled(files: Sequence[Path], skip_invalid: bool = False) -> tuple[list[Record], int]:
    """Records without targets from structure files (CIF, POSCAR), id = file name.

    Raises:
        DataError: Unreadable or invalid structures (all listed), unless ``skip_invalid``.
    """
    records, problems = [], []
    for index, path in enumerate(files):
        try:
            structure = read_structure_file(path)
            check_structure(structure, ValidationConfig())
        except InvalidRecordError as error:
            problems.append(Problem(str(path), None, path.name, str(error)))
            continue
        records.append(Record(path.name, structure, {}, str(path), index))
    if problems and not skip_invalid:
        raise DataError(
            f"{len(problems)} of {len(files)} structure files are invalid "
            "(--skip-invalid drops them)",
            problems,
        )
    return records, len(problems)


def records_to_predict(
    data: str | Path,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
) -> tuple[list[Record], str, int]:
    """Records of ``data`` for prediction: structure files or a dataset (any format the
    readers take; ALIGNN records may lack labels). Returns (records, source, skipped)."""
    files = structure_files(data)
    if files is not None:
        records, skipped = read_unlabelled(files, skip_invalid)
        return records, str(data), skipped
    return read_records(data, format, target_key, skip_invalid, require_targets=False)


def _as_structure(item: object) -> Structure:
    """A pymatgen Structure from a Structure or a periodic ASE Atoms."""
    if isinstance(item, Structure):
        return item
    if isinstance(item, Atoms):
        if not all(item.pbc) or item.cell.rank != 3:
            raise InvalidRecordError(
                f"ASE Atoms without a periodic 3-D cell (pbc={item.pbc.tolist()}); "
                "ALIGNN needs crystals"
            )
        return AseAtomsAdaptor.get_structure(item)
    raise InvalidRecordError(
        f"expected a pymatgen Structure or ASE Atoms, got {type(item).__name__}"
    )


def checked_structures(
    items: Sequence[Structure | Atoms],
    graph_config: GraphConfig,
    ids: Sequence[str] | None = None,
) -> list[Structure]:
    """pymatgen Structures from Structures or periodic ASE Atoms, each held to the checks
    of records read from files (:func:`~matxfer.data.validate.check_structure`, with the
    neighbour limits of ``graph_config``), so in-memory input fails as clearly as a file.

    Args:
        items: The structures.
        graph_config: The model's graph parameters.
        ids: Names of the structures, for the problems (default: their positions).

    Raises:
        DataError: One problem, naming the structure's index (and id), per bad item.
    """
    if ids is not None and len(ids) != len(items):
        raise DataError(f"{len(items)} structures but {len(ids)} ids")
    config = ValidationConfig.for_graphs(graph_config)
    out, problems = [], []
    for index, item in enumerate(items):
        name = ids[index] if ids is not None else None
        try:
            structure = _as_structure(item)
            check_structure(structure, config)
        except InvalidRecordError as error:
            problems.append(Problem("structures", index, name, str(error)))
            continue
        except Exception as error:  # one odd structure must not hide the others' problems
            reason = f"could not be checked ({describe_error(error)})"
            problems.append(Problem("structures", index, name, reason))
            continue
        out.append(structure)
    if problems:
        raise DataError(f"{len(problems)} of {len(items)} structures are invalid", problems)
    return out


def graphs_of(
    structures: Sequence[Structure],
    graph_config: GraphConfig,
    progress: bool = False,
    ids: Sequence[str] | None = None,
) -> list[CrystalGraph]:
    """Build (or read from matxfer's graph cache) the graphs of ``structures``.

    Args:
        structures: The crystals.
        graph_config: Graph parameters.
        progress: Show a progress bar.
        ids: Record ids, to name failing structures in errors.
    """
    return build_graphs(
        list(structures), graph_config, cache_dir=graph_cache_dir(), progress=progress, ids=ids
    )


def model_inputs(
    model: nn.Module | None,
    structures: Sequence[Structure],
    graph_config: GraphConfig,
    progress: bool = False,
    ids: Sequence[str] | None = None,
) -> list[Data]:
    """The inputs ``model`` reads: its own ``featurize(structures, progress, ids)`` when it
    has one (another architecture's graphs, e.g. CHGNet's), else ALIGNN's graphs built
    with ``graph_config`` (:func:`graphs_of`)."""
    featurize = getattr(model, "featurize", None)
    if callable(featurize):
        return featurize(list(structures), progress=progress, ids=ids)
    return graphs_of(structures, graph_config, progress, ids)


def labelled_graphs(
    records: Sequence[Record],
    names: Sequence[str],
    graph_config: GraphConfig,
    progress: bool = False,
    model: nn.Module | None = None,
) -> list[CrystalGraph]:
    """Graphs of ``records`` carrying their targets as ``y`` ``[1, P]`` (original units);
    ``model``: build the inputs it reads (see :func:`model_inputs`; default: ALIGNN's)."""
    structures = [r.structure for r in records]
    graphs = model_inputs(model, structures, graph_config, progress, [r.id for r in records])
    return with_targets(graphs, records, names)
