"""The ``idprop`` format: one structure file per record.

* ``idprop``: a folder with ``id_prop.csv`` (``filename,target`` per line, no
  header; the reference ALIGNN's ``train_folder`` layout) beside POSCAR/CIF
  files. Extra numeric columns become further targets ``target_2``,
  ``target_3``...; an empty cell then means "label missing" (a row with no
  label at all is a problem). If the first line's target cells are not
  numbers it is taken as a header and names the targets. Ids are the file names.

Extended XYZ (one frame per record) is read by :mod:`matxfer.data.formats.extxyz`.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from pymatgen.core import Structure

from matxfer.data.formats._io import build_record, read_text, record_id, structure_fields
from matxfer.data.formats.json_tables import collect
from matxfer.data.records import DEFAULT_TARGET, Record
from matxfer.data.validate import InvalidRecordError, as_target, describe_error
from matxfer.errors import DataError, Problem

ID_PROP = "id_prop.csv"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _target_names(first: list[str], folder: Path) -> tuple[list[str], bool]:
    """(target names, whether the first row is a header)."""
    cells = [c.strip() for c in first[1:]]
    looks_like_header = bool(cells) and not any(_is_number(c) for c in cells if c)
    if looks_like_header and not (folder / first[0].strip()).is_file():
        return [c or f"target_{k + 1}" for k, c in enumerate(cells)], True
    n = max(len(cells), 1)
    return [DEFAULT_TARGET] + [f"{DEFAULT_TARGET}_{k}" for k in range(2, n + 1)], False


def _check_poscar_counts(path: Path) -> None:
    """Catch count lines pymatgen would silently truncate to (VASP 5 POSCARs only)."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 8:
        raise InvalidRecordError(f"structure file '{path.name}' is too short for a POSCAR")
    symbols, counts = lines[5].split(), lines[6].split()
    if not (symbols and all(s.isalpha() for s in symbols) and all(c.isdigit() for c in counts)):
        return
    if len(counts) != len(symbols):
        raise InvalidRecordError(
            f"structure file '{path.name}': {len(symbols)} element symbols but "
            f"{len(counts)} atom counts"
        )
    start = 9 if lines[7].strip()[:1] in "sS" else 8  # after "Selective dynamics"
    n_atoms = sum(int(c) for c in counts)
    rows = [line.split() for line in lines[start : start + n_atoms]]
    if len(rows) < n_atoms or any(len(row) < 3 for row in rows):
        raise InvalidRecordError(
            f"structure file '{path.name}': counts give {n_atoms} atoms but fewer "
            "coordinate lines follow"
        )


def read_structure_file(path: Path) -> Structure:
    """One CIF or POSCAR file as a structure.

    Raises:
        InvalidRecordError: The file is unreadable, naming it and pymatgen's reason.
    """
    if path.suffix.lower() == ".vasp" or path.name.upper().startswith(("POSCAR", "CONTCAR")):
        _check_poscar_counts(path)
    try:
        with warnings.catch_warnings():
            # pymatgen warns about every oddity of a CIF; the error below says what matters
            warnings.simplefilter("ignore")
            return Structure.from_file(path)
    except Exception as error:  # pymatgen raises many types for malformed files
        raise InvalidRecordError(
            f"cannot read structure file '{path.name}' ({describe_error(error)}); "
            "use POSCAR (*.vasp, POSCAR*) or CIF (*.cif) files"
        ) from None


def _load_structure(folder: Path, name: str) -> Structure:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise InvalidRecordError(f"structure file '{name}' lies outside {folder}")
    if not path.is_file():
        raise InvalidRecordError(f"structure file '{name}' not found in {folder}")
    return read_structure_file(path)


def read_idprop(path: Path, target_key: str | None = None) -> tuple[list[Record], list[Problem]]:
    """Read an ``id_prop.csv`` folder.

    Args:
        path: The folder, or its ``id_prop.csv``.
        target_key: Keep only this target column (a header name, or
            ``target``/``target_2``/...); it is renamed ``target``.
    """
    folder = path.parent if path.is_file() else path
    csv_path = folder / ID_PROP
    if not csv_path.is_file():
        raise DataError(f"{folder}: no {ID_PROP} (expected lines 'filename,target')")
    source = str(csv_path)
    try:
        lines = list(csv.reader(io.StringIO(read_text(csv_path))))
    except csv.Error as error:
        raise DataError(f"{source}: not valid CSV ({error})") from None
    rows = [(n, row) for n, row in enumerate(lines, start=1) if any(c.strip() for c in row)]
    if not rows:
        raise DataError(f"{source}: no rows")
    names, has_header = _target_names(rows[0][1], folder)
    if has_header:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{source}: only a header line, no records")
    keep = list(range(len(names)))
    if target_key is not None:
        if target_key not in names:
            raise DataError(
                f"{source}: no target column '{target_key}' (columns: {', '.join(names)})"
            )
        keep = [names.index(target_key)]
        names = [DEFAULT_TARGET if k == keep[0] else n for k, n in enumerate(names)]

    def row_id(item: tuple[int, list[str]], index: int) -> str | None:
        cells = item[1]
        return cells[0].strip() or None if cells else None

    def parse(item: tuple[int, list[str]], index: int) -> Record:
        line, cells = item
        if len(cells) != len(names) + 1:
            raise InvalidRecordError(
                f"line {line} has {len(cells)} columns, expected {len(names) + 1}"
            )
        rid = record_id(cells[0])
        targets = {}
        for k in keep:
            text = cells[k + 1].strip()
            if not text:
                continue
            if not _is_number(text):
                raise InvalidRecordError(
                    f"line {line}: target '{names[k]}' is not a number: {text!r}"
                )
            targets[names[k]] = as_target(float(text), names[k])
        if not targets:
            raise InvalidRecordError(f"line {line}: target value missing")
        if len(keep) == 1 and len(targets) != 1:
            raise InvalidRecordError(f"line {line}: target value missing")
        lattice, symbols, frac = structure_fields(_load_structure(folder, rid))
        return build_record(rid, lattice, symbols, frac, False, targets, source, index)

    return collect(rows, source, parse, row_id)
