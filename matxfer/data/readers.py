"""Read a dataset from any supported file into validated records.

:func:`read_dataset` picks the format from the path (or ``format=``), reads
every record, drops exact duplicates, validates the rest
(:mod:`matxfer.data.validate`) and either refuses the dataset with a
:class:`~matxfer.errors.DataError` listing every problem or, with
``skip_invalid=True``, drops the bad records and lists them in
:attr:`Dataset.skipped`.

Format detection: a folder (or file) named ``id_prop.csv`` → ``idprop``;
``.extxyz``/``.xyz`` (optionally ``.gz``) → ``extxyz``; anything else is read
as JSON (compression sniffed from content) and is ``matbench`` when it is a
``{"columns", "data"}`` table, ``alignn`` when it is a list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matxfer.data.formats import FORMATS, ID_PROP, alignn_records, matbench_records
from matxfer.data.formats._io import (
    atoms_fields,
    build_record,
    load_json,
    record_id,
    structure_fields,
)
from matxfer.data.formats.json_tables import collect
from matxfer.data.records import DEFAULT_TARGET, Record
from matxfer.data.validate import (
    InvalidRecordError,
    ValidationConfig,
    as_target,
    describe_error,
    drop_identical_duplicates,
    validate_records,
)
from matxfer.errors import DataError, MatxferError, Problem

if TYPE_CHECKING:
    from matxfer.data.summary import DatasetSummary

_XYZ_SUFFIXES = (".extxyz", ".xyz", ".extxyz.gz", ".xyz.gz")


@dataclass
class Dataset:
    """Validated records from one source.

    Args:
        records: The valid records, in source order.
        source: Where they came from (file or folder).
        skipped: Problems of the records dropped by ``skip_invalid``.
        name: Dataset name (named datasets) or ``None``.
        format: Format the source was read as.
        duplicates_dropped: Exact repeats of earlier records that were dropped.
    """

    records: list[Record]
    source: str
    skipped: list[Problem] = field(default_factory=list)
    name: str | None = None
    format: str | None = None
    duplicates_dropped: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    @property
    def ids(self) -> list[str]:
        """Record ids in order."""
        return [r.id for r in self.records]

    def summary(self) -> DatasetSummary:
        """Counts, elements, sizes and target ranges (:func:`~matxfer.data.summary.summarize`)."""
        from matxfer.data.summary import summarize

        return summarize(self.records)

    def __repr__(self) -> str:
        label = f"{self.name!r}, " if self.name else ""
        return (
            f"Dataset({label}{len(self.records)} records from {self.source!r}, "
            f"{len(self.skipped)} skipped)"
        )


def detect_format(path: Path) -> str:
    """The format name of ``path`` judged by its name; ``"json"`` means "sniff the JSON".

    Args:
        path: File or folder.
    """
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / ID_PROP).is_file():
            return "idprop"
        raise DataError(
            f"{path}: folder without {ID_PROP}; pass a dataset file, an id_prop folder, "
            "or a named dataset"
        )
    name = path.name.lower()
    if name == ID_PROP:
        return "idprop"
    if name.endswith(_XYZ_SUFFIXES):
        return "extxyz"
    if name.endswith((".cif", ".vasp", ".csv")) or name.startswith(("poscar", "contcar")):
        raise DataError(
            f"{path}: a single structure or CSV file is not a dataset; put the structure "
            f"files in a folder with an {ID_PROP} of 'filename,target' lines and pass the folder"
        )
    return "json"


def _json_format(data: object, path: Path) -> str:
    if isinstance(data, list):
        return "alignn"
    if isinstance(data, dict) and "columns" in data and "data" in data:
        return "matbench"
    raise DataError(
        f"{path}: cannot tell the format: JSON is neither a list of records (alignn) nor a "
        f"columns/data table (matbench); choose one of {', '.join(FORMATS)} with format="
    )


def _read(
    path: Path, format: str | None, target_key: str | None, require_target: bool
) -> tuple[str, list, list]:
    if format is not None and format not in FORMATS:
        raise DataError(f"unknown format '{format}'; choose one of {', '.join(FORMATS)}")
    detected = detect_format(path)
    if format is None and detected != "json":
        format = detected
    if format in ("extxyz", "idprop"):
        records, problems = FORMATS[format](path, target_key)
        return format, records, problems
    if detected == "idprop":
        raise DataError(f"{path}: an id_prop folder cannot be read as format '{format}'")
    data = load_json(path)
    format = format or _json_format(data, path)
    if format == "alignn":
        records, problems = alignn_records(data, str(path), target_key, require_target)
    else:
        records, problems = matbench_records(data, str(path), target_key)
    return format, records, problems


def finish_dataset(
    records: list[Record],
    problems: list[Problem],
    source: str,
    skip_invalid: bool = False,
    validation: ValidationConfig | None = None,
    name: str | None = None,
    format: str | None = None,
) -> Dataset:
    """Deduplicate and validate read records, then refuse or trim the dataset.

    Args:
        records: Records that parsed.
        problems: Problems of records that did not parse.
        source: Source for messages.
        skip_invalid: Drop invalid records instead of refusing the dataset.
        validation: Thresholds (default: :class:`ValidationConfig` ()).
        name: Dataset name.
        format: Format name.
    """
    records, dropped = drop_identical_duplicates(records)
    problems = problems + validate_records(records, validation)
    problems.sort(key=lambda p: (p.index is None, p.index or 0))
    bad = {p.index for p in problems}
    total = len(records) + len({p.index for p in problems} - {r.index for r in records})
    if problems and not skip_invalid:
        raise DataError(
            f"{source}: {len(bad)} of {total} records are invalid "
            "(skip_invalid=True / --skip-invalid drops them)",
            problems,
        )
    kept = [r for r in records if r.index not in bad]
    if not kept:
        raise DataError(f"{source}: no valid records", problems)
    return Dataset(kept, source, problems, name, format, len(dropped))


def read_dataset(
    path: str | Path,
    format: str | None = None,
    target_key: str | None = None,
    skip_invalid: bool = False,
    validation: ValidationConfig | None = None,
    name: str | None = None,
) -> Dataset:
    """Read, check and return a dataset.

    Args:
        path: Dataset file, or an ``id_prop.csv`` folder.
        format: ``"alignn"``, ``"idprop"``, ``"matbench"`` or ``"extxyz"``
            (default: detected from the path and content).
        target_key: Field/column holding the target (default: ``"target"`` for
            alignn, the only numeric column for matbench; for extxyz ``"target"``
            when every frame has it, else the only numeric per-frame field).
            Single-target records name their target ``"target"``.
        skip_invalid: Drop invalid records (listed in ``Dataset.skipped``)
            instead of raising.
        validation: Check thresholds (default: :class:`ValidationConfig` ()); with
            ``require_targets=False``, ALIGNN records without a target are read
            unlabelled.
        name: Optional dataset name.

    Raises:
        DataError: The source cannot be read, or holds invalid records and
            ``skip_invalid`` is false; ``.problems`` lists every one.
    """
    path = Path(path).expanduser()
    try:
        required = (validation or ValidationConfig()).require_targets
        format, records, problems = _read(path, format, target_key, required)
    except MatxferError:
        raise
    except Exception as error:  # an unforeseen failure still names the file
        raise DataError(f"{path}: could not be read ({describe_error(error)})") from error
    return finish_dataset(records, problems, str(path), skip_invalid, validation, name, format)


def records_from_structures(
    structures: Sequence[Any],
    targets: Sequence[float],
    ids: Sequence[str] | None = None,
    name: str = DEFAULT_TARGET,
    source: str = "<memory>",
    validation: ValidationConfig | None = None,
) -> list[Record]:
    """Records from in-memory pymatgen ``Structure`` s or ASE ``Atoms``.

    Structures are rebuilt from their lattice, element symbols and
    coordinates (oxidation states and site properties are dropped) and
    checked like records read from files.

    Args:
        structures: pymatgen Structures and/or ASE Atoms.
        targets: One value per structure.
        ids: One id per structure (default: ``"0"``, ``"1"``, ...).
        name: Target name (default: ``"target"``).
        source: Source named in problem messages.
        validation: Check thresholds (default: :class:`ValidationConfig` ()).

    Raises:
        DataError: Lengths differ, or any record is invalid (all are listed).
    """
    if len(targets) != len(structures):
        raise DataError(f"{len(structures)} structures but {len(targets)} targets")
    if ids is not None and len(ids) != len(structures):
        raise DataError(f"{len(structures)} structures but {len(ids)} ids")
    labels = [str(i) for i in range(len(structures))] if ids is None else list(ids)

    def parse(item: tuple[Any, float, str], index: int) -> Record:
        structure, value, label = item
        rid = record_id(label)
        target = as_target(value, name)
        if hasattr(structure, "get_chemical_symbols") and hasattr(structure, "cell"):
            lattice, symbols, coords = atoms_fields(structure)
            return build_record(rid, lattice, symbols, coords, True, {name: target}, source, index)
        lattice, symbols, coords = structure_fields(structure)
        return build_record(rid, lattice, symbols, coords, False, {name: target}, source, index)

    def item_id(item: tuple[Any, float, str], index: int) -> str | None:
        try:
            return record_id(item[2])
        except InvalidRecordError:
            return None

    items = list(zip(structures, targets, labels, strict=True))
    records, problems = collect(items, source, parse, item_id)
    return finish_dataset(records, problems, source, False, validation).records
