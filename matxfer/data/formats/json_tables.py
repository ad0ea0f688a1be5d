"""JSON dataset formats: ALIGNN/JARVIS record lists and Matbench/Matminer tables.

* ALIGNN / JARVIS: a JSON list of ``{"jid": ..., "target": ..., "atoms":
  {"lattice_mat", "coords", "elements", "cartesian"}}`` (the layout of the
  study's files and of JARVIS-DFT downloads). ``"id"`` is accepted in place of
  ``"jid"``; ``cartesian`` defaults to false (fractional coordinates).
* Matbench / Matminer: a pandas ``orient="split"`` table ``{"index", "columns",
  "data"}`` whose structure column holds pymatgen ``Structure.as_dict()``
  dictionaries. The structure dictionaries are read field by field (not via
  ``Structure.from_dict``) so each malformed field gets its own reason.

Both readers return records plus one :class:`~matxfer.errors.Problem` per bad
record; only a file that cannot be read at all raises.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matxfer.data.formats._io import build_record, load_json, record_id
from matxfer.data.records import DEFAULT_TARGET, Record
from matxfer.data.validate import InvalidRecordError, as_target, describe_error
from matxfer.errors import DataError, Problem

#: Columns taken as record ids in Matbench/Matminer tables, in order of preference.
ID_COLUMNS = ("material_id", "mpid", "jid", "id")


def _keys(mapping: dict) -> str:
    names = [str(k) for k in mapping]
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null" if value is None else type(value).__name__


def collect(
    items: list,
    source: str,
    parse: Callable[[Any, int], Record],
    item_id: Callable[[Any, int], str | None],
) -> tuple[list[Record], list[Problem]]:
    """Parse every item; a failure of one item becomes one problem."""
    records: list[Record] = []
    problems: list[Problem] = []
    for index, item in enumerate(items):
        try:
            records.append(parse(item, index))
        except InvalidRecordError as error:
            problems.append(Problem(source, index, item_id(item, index), str(error)))
        except Exception as error:  # a record no check foresaw must not crash the read
            reason = f"could not be read ({describe_error(error)})"
            problems.append(Problem(source, index, item_id(item, index), reason))
    return records, problems


# ---------------------------------------------------------------- ALIGNN / JARVIS


def _alignn_id(item: object, index: int) -> str | None:
    if not isinstance(item, dict):
        return None
    try:
        return record_id(item.get("jid", item.get("id")))
    except InvalidRecordError:
        return None


def _alignn_record(
    item: object, index: int, key: str, source: str, require_target: bool = True
) -> Record:
    if not isinstance(item, dict):
        raise InvalidRecordError(
            f"record is {_kind(item)}, expected an object with jid, atoms, {key}"
        )
    if "jid" not in item and "id" not in item:
        raise InvalidRecordError(f"record has no 'jid' or 'id' field (fields: {_keys(item)})")
    rid = record_id(item["jid"] if "jid" in item else item["id"])
    if require_target and key not in item:
        raise InvalidRecordError(
            f"record has no target field '{key}' (fields: {_keys(item)}; "
            "target_key / --target-key names another)"
        )
    labelled = require_target or item.get(key) is not None
    targets = {DEFAULT_TARGET: as_target(item[key], key)} if labelled else {}
    atoms = item.get("atoms")
    if atoms is None:
        raise InvalidRecordError(
            "record has no 'atoms' field" if "atoms" not in item else "atoms is null"
        )
    if not isinstance(atoms, dict):
        raise InvalidRecordError(f"atoms is {_kind(atoms)}, expected an object")
    for field in ("lattice_mat", "coords", "elements"):
        if field not in atoms:
            raise InvalidRecordError(f"atoms has no '{field}' field (fields: {_keys(atoms)})")
    cartesian = atoms.get("cartesian", False)
    if not isinstance(cartesian, bool):
        raise InvalidRecordError(f"atoms.cartesian must be true or false, got {cartesian!r}")
    return build_record(
        rid, atoms["lattice_mat"], atoms["elements"], atoms["coords"], cartesian,
        targets, source, index,
    )  # fmt: skip


def alignn_records(
    data: object, source: str, target_key: str | None = None, require_target: bool = True
) -> tuple[list[Record], list[Problem]]:
    """Records from parsed ALIGNN/JARVIS JSON.

    Args:
        data: The parsed JSON document.
        source: File name for messages.
        target_key: Field holding the target (default: ``"target"``). The
            record's target is named ``"target"`` whichever field it came from.
        require_target: ``False`` reads a record whose target field is missing or
            null as unlabelled (structures to predict) instead of as a problem.
    """
    if isinstance(data, dict):
        if "columns" in data and "data" in data:
            raise DataError(
                f"{source}: this is a Matbench/pandas table; read it with format 'matbench'"
            )
        raise DataError(
            f"{source}: expected a JSON list of records (ALIGNN format), got an object "
            f"with keys {_keys(data)}"
        )
    if not isinstance(data, list):
        raise DataError(f"{source}: expected a JSON list of records, got {_kind(data)}")
    if not data:
        raise DataError(f"{source}: the record list is empty")
    key = target_key or DEFAULT_TARGET
    return collect(
        data, source, lambda item, i: _alignn_record(item, i, key, source, require_target),
        _alignn_id,
    )  # fmt: skip


def read_alignn(path: Path, target_key: str | None = None) -> tuple[list[Record], list[Problem]]:
    """Read an ALIGNN/JARVIS ``.json`` / ``.json.gz`` file (see :func:`alignn_records`)."""
    return alignn_records(load_json(path), str(path), target_key)


# ---------------------------------------------------------------- Matbench / Matminer


def _is_structure_dict(value: object) -> bool:
    return isinstance(value, dict) and "lattice" in value and "sites" in value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def structure_dict_fields(struct: object) -> tuple[object, list, list, bool]:
    """(lattice matrix, element symbols, coords, cartesian) of a pymatgen structure dict."""
    if not isinstance(struct, dict):
        raise InvalidRecordError(
            f"structure is {_kind(struct)}, expected a pymatgen structure object"
        )
    lattice = struct.get("lattice")
    if lattice is None:
        raise InvalidRecordError("structure has no lattice (a molecule?)")
    matrix = lattice.get("matrix") if isinstance(lattice, dict) else lattice
    if matrix is None:
        raise InvalidRecordError("structure lattice has no 'matrix'")
    sites = struct.get("sites")
    if not isinstance(sites, list):
        raise InvalidRecordError(f"structure 'sites' is {_kind(sites)}, expected a list")
    elements, coords = [], []
    cartesian = not all(isinstance(s, dict) and "abc" in s for s in sites)
    for i, site in enumerate(sites):
        if not isinstance(site, dict):
            raise InvalidRecordError(f"site {i} is {_kind(site)}, expected an object")
        species = site.get("species")
        if not isinstance(species, list) or not species:
            raise InvalidRecordError(f"site {i} has no species list")
        if len(species) > 1 or not isinstance(species[0], dict):
            raise InvalidRecordError(
                f"site {i} is disordered ({len(species)} species); not supported"
            )
        occupancy = species[0].get("occu", 1.0)
        if not _is_number(occupancy) or not math.isclose(occupancy, 1.0, abs_tol=1e-6):
            raise InvalidRecordError(
                f"site {i} has occupancy {occupancy!r}; partial occupancy is not supported"
            )
        elements.append(species[0].get("element"))
        position = site.get("xyz" if cartesian else "abc")
        if position is None:
            raise InvalidRecordError(f"site {i} has neither 'abc' nor 'xyz' coordinates")
        coords.append(position)
    return matrix, elements, coords, cartesian


def _find_column(columns: list[str], rows: list, test: Callable[[object], bool]) -> list[str]:
    """Columns whose first non-null value (in the first rows) passes ``test``."""
    found = []
    for c, name in enumerate(columns):
        values = [row[c] for row in rows[:20] if isinstance(row, list) and len(row) > c]
        first = next((v for v in values if v is not None), None)
        if first is not None and test(first):
            found.append(name)
    return found


def _target_column(columns: list[str], rows: list, target_key: str | None, source: str) -> str:
    if target_key is not None:
        if target_key not in columns:
            raise DataError(f"{source}: no column '{target_key}' (columns: {', '.join(columns)})")
        return target_key
    numeric = [c for c in _find_column(columns, rows, _is_number) if c not in ID_COLUMNS]
    if len(numeric) == 1:
        return numeric[0]
    if not numeric:
        raise DataError(f"{source}: no numeric target column (columns: {', '.join(columns)})")
    raise DataError(
        f"{source}: several numeric columns could be the target ({', '.join(numeric)}); "
        "choose one with target_key / --target-key"
    )


def matbench_records(
    data: object, source: str, target_key: str | None = None
) -> tuple[list[Record], list[Problem]]:
    """Records from a parsed pandas ``split`` table with a pymatgen structure column.

    Args:
        data: The parsed JSON document.
        source: File name for messages.
        target_key: Target column; by default the only numeric column besides
            the structure and id columns. The record's target keeps the name
            ``"target"`` so datasets of different origin line up.
    """
    if isinstance(data, list):
        raise DataError(f"{source}: this is a list of records; read it with format 'alignn'")
    if not isinstance(data, dict) or "columns" not in data or "data" not in data:
        found = f"an object with keys {_keys(data)}" if isinstance(data, dict) else _kind(data)
        raise DataError(
            f"{source}: expected a pandas 'split' table with columns and data, got {found}"
        )
    columns, rows, index = data["columns"], data["data"], data.get("index")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise DataError(f"{source}: 'columns' must be a list of column names")
    if not isinstance(rows, list):
        raise DataError(f"{source}: 'data' must be a list of rows, got {_kind(rows)}")
    if not rows:
        raise DataError(f"{source}: the table has no rows")
    if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
        raise DataError(f"{source}: 'index' does not have one entry per row")
    structure_columns = ["structure"] if "structure" in columns else []
    structure_columns = structure_columns or _find_column(columns, rows, _is_structure_dict)
    if not structure_columns:
        raise DataError(
            f"{source}: no structure column (columns: {', '.join(columns)}); "
            "composition-only tables cannot be turned into crystal graphs"
        )
    s_col = columns.index(structure_columns[0])
    t_col = columns.index(_target_column(columns, rows, target_key, source))
    id_col = next((columns.index(c) for c in ID_COLUMNS if c in columns), None)

    def row_id(row: object, i: int) -> str | None:
        try:
            if id_col is not None and isinstance(row, list) and len(row) > id_col:
                return record_id(row[id_col])
            return record_id(index[i] if index is not None else i)
        except InvalidRecordError:
            return None

    def parse(row: object, i: int) -> Record:
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidRecordError(f"row is not a list of {len(columns)} values (one per column)")
        rid = row_id(row, i)
        if rid is None:
            raise InvalidRecordError("row has no usable id")
        target = as_target(row[t_col], columns[t_col])
        lattice, elements, coords, cartesian = structure_dict_fields(row[s_col])
        return build_record(
            rid, lattice, elements, coords, cartesian, {DEFAULT_TARGET: target}, source, i
        )

    return collect(rows, source, parse, row_id)


def read_matbench(path: Path, target_key: str | None = None) -> tuple[list[Record], list[Problem]]:
    """Read a Matbench/Matminer ``.json.gz`` table (see :func:`matbench_records`)."""
    return matbench_records(load_json(path), str(path), target_key)
