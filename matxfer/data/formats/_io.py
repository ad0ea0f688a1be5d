"""Opening dataset files robustly: compression sniffing, text decoding, JSON errors.

Every failure becomes a :class:`~matxfer.errors.DataError` that names the file
and says what is wrong with it (truncated, not UTF-8, not JSON at line L ...),
never a raw traceback. Compression is recognised by content, not by suffix, so
a ``.json.gz`` that is plain JSON and a ``.json`` that is gzipped both read.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import json
import lzma
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure

from matxfer.data.records import Record
from matxfer.data.validate import (
    InvalidRecordError,
    ValidationConfig,
    as_coords,
    as_elements,
    as_lattice,
    check_not_empty,
    check_volume,
)
from matxfer.errors import DataError

_GZIP, _BZ2, _XZ, _ZIP = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04"
# Parsing only needs an invertible lattice; the user's volume threshold applies later.
_PARSE_CONFIG = ValidationConfig(min_volume=1e-8)


def read_bytes(path: Path) -> bytes:
    """The raw bytes of ``path``, with a readable error if it cannot be read."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None


def decompress(raw: bytes, path: Path) -> bytes:
    """Undo gzip/bz2/xz compression (sniffed from magic bytes) or open a one-file zip."""
    try:
        if raw.startswith(_GZIP):
            return gzip.decompress(raw)
        if raw.startswith(_BZ2):
            return bz2.decompress(raw)
        if raw.startswith(_XZ):
            return lzma.decompress(raw)
    except EOFError:
        raise DataError(
            f"{path}: compressed file is truncated (ends before its end marker)"
        ) from None
    except (OSError, zlib.error, lzma.LZMAError, ValueError) as error:
        raise DataError(f"{path}: compressed data is corrupt ({error})") from None
    if raw.startswith(_ZIP):
        return _single_zip_member(raw, path)
    return raw


def _single_zip_member(raw: bytes, path: Path) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise DataError(
                    f"{path}: zip archive holds {len(members)} files; extract the dataset "
                    "file and pass it directly"
                )
            return archive.read(members[0])
    except (zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise DataError(f"{path}: zip archive is corrupt or truncated ({error})") from None


def decode_text(data: bytes, path: Path) -> str:
    """UTF-8 text (a leading byte-order mark is allowed)."""
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
            "is it a binary or differently encoded file?"
        ) from None
    if "\x00" in text:
        raise DataError(f"{path}: not a text file (contains NUL bytes)")
    return text


def read_text(path: Path) -> str:
    """Decompressed, decoded text of ``path``."""
    return decode_text(decompress(read_bytes(path), path), path)


def load_json(path: Path) -> Any:
    """Parse ``path`` as JSON; errors name the line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        hint = ""
        if error.msg.startswith("Extra data"):
            hint = " (unexpected content after the JSON value)"
        elif error.pos >= len(text.rstrip()) - 1:
            hint = " (the file ends early: truncated?)"
        elif text.lstrip()[:1] not in ("[", "{"):
            hint = " (this does not look like JSON; wrong file or format?)"
        raise DataError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}{hint}"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None


@functools.cache
def _composition(symbol: str) -> Composition:
    # Shared per element: pymatgen builds one Composition per site otherwise (a third
    # of the reading time); Compositions are immutable, so sharing them is safe.
    return Composition({Element(symbol): 1})


def record_id(value: object) -> str:
    """A record id as a non-empty string (ints become their decimal text)."""
    if value is None:
        raise InvalidRecordError("id is null")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRecordError(f"id must be a string or an integer, got {value!r}")
    text = str(value).strip()
    if not text:
        raise InvalidRecordError("id is empty")
    return text


def build_record(
    record_id: str,
    lattice: object,
    elements: object,
    coords: object,
    cartesian: bool,
    targets: dict[str, float],
    source: str,
    index: int,
) -> Record:
    """A :class:`Record` from raw file content, after the parse-level checks.

    Fractional coordinates are wrapped into [0, 1); structural checks (close
    atoms, sparse cells) run later in :func:`~matxfer.data.validate.validate_records`.

    Args:
        record_id: Id as a string.
        lattice: 3x3 lattice vectors (rows) in Å.
        elements: One element symbol per atom.
        coords: N x 3 positions, fractional unless ``cartesian``.
        cartesian: Whether ``coords`` are Cartesian Å.
        targets: Target name -> value (already checked).
        source: File the record came from.
        index: Position in that file.
    """
    matrix = as_lattice(lattice)
    species = as_elements(elements)
    check_not_empty(len(species))
    positions = as_coords(coords, len(species))
    check_volume(matrix, _PARSE_CONFIG)
    frac = np.linalg.solve(matrix.T, positions.T).T if cartesian else positions
    if np.abs(frac).max() > 1e6:
        raise InvalidRecordError(
            "an atom lies over a million cells outside the cell (wrong units or cartesian flag?)"
        )
    frac = np.mod(frac, 1.0)
    frac[frac >= 1.0 - 1e-12] = 0.0  # mod of a tiny negative number rounds to 1.0
    structure = Structure(Lattice(matrix), [_composition(symbol) for symbol in species], frac)
    return Record(id=record_id, structure=structure, targets=targets, source=source, index=index)


def structure_fields(structure: object) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(lattice matrix, element symbols, fractional coords) of a pymatgen Structure.

    Oxidation states and site properties are dropped; disordered sites are refused.
    """
    if not isinstance(structure, Structure):
        raise InvalidRecordError(f"expected a pymatgen Structure, got {type(structure).__name__}")
    if not structure.is_ordered:
        raise InvalidRecordError("structure is disordered (partial occupancies are not supported)")
    symbols = [getattr(site.specie, "symbol", str(site.specie)) for site in structure]
    return structure.lattice.matrix, symbols, structure.frac_coords


def atoms_fields(atoms: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(cell, element symbols, Cartesian positions) of an ASE ``Atoms``.

    A frame periodic in no direction, or without a full 3D cell, is refused;
    partially periodic frames with a full cell (slabs, 2D materials with
    vacuum) are treated as 3D crystals, as ALIGNN does.
    """
    cell = np.asarray(atoms.cell.array, dtype=float)
    if not np.asarray(atoms.pbc).any() or abs(np.linalg.det(cell)) < 1e-8:
        raise InvalidRecordError(
            f"frame is not a periodic crystal (pbc={np.asarray(atoms.pbc).tolist()}, "
            f"cell volume {abs(np.linalg.det(cell)):.3g} Å^3); give it a 3D cell"
        )
    return cell, list(atoms.get_chemical_symbols()), np.asarray(atoms.positions, dtype=float)
