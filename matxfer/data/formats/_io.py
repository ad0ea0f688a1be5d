"""Opening dataset files robustly: compression sniffing, text decoding, JSON errors.

Every failure becomes a :class:`~matxfer.errors.DataError` that names the file
and says what is wrong with it (truncated, not UTF-8, not JSON at line L ...),
never a raw traceback. Compression is recognised by content, not by suffix, so
a ``.json.gz`` that is plain JSON and a ``.json`` that is gzipped both read.
"""

from __future__ import annotations

import bz2
import codecs
import functools
import gzip
import io
import json
import lzma
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure

from matxfer.data.formats._locate import record_at
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
from matxfer.errors import ConfigError, DataError

_GZIP, _BZ2, _XZ, _ZIP = b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"PK\x03\x04"
_OPENERS = {_GZIP: gzip.open, _BZ2: bz2.open, _XZ: lzma.open}

#: Environment variable that overrides :data:`MAX_DECOMPRESSED_BYTES`.
MAX_DECOMPRESSED_ENV = "MATXFER_MAX_DECOMPRESSED_BYTES"
#: Largest decompressed size read from a compressed file: generous for real datasets
#: (the study's largest file is 12 MB), and it stops a "zip bomb" from filling memory.
MAX_DECOMPRESSED_BYTES = 2 * 1024**3
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


def max_decompressed_bytes() -> int:
    """The decompressed-size limit: ``$MATXFER_MAX_DECOMPRESSED_BYTES``, else 2 GiB."""
    text = os.environ.get(MAX_DECOMPRESSED_ENV, "").strip()
    if not text:
        return MAX_DECOMPRESSED_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(
            f"{MAX_DECOMPRESSED_ENV}={text!r} must be a positive whole number of bytes"
        )
    return limit


def _bounded(data: bytes, limit: int, path: Path) -> bytes:
    """``data`` unless it is longer than ``limit`` (the caller read ``limit + 1`` bytes)."""
    if len(data) > limit:
        raise DataError(
            f"{path}: decompresses to more than {limit:,} bytes, the limit; if the file is "
            f"genuine, raise the limit with {MAX_DECOMPRESSED_ENV} (bytes)"
        )
    return data


def decompress(raw: bytes, path: Path, limit: int | None = None) -> bytes:
    """Undo gzip/bz2/xz compression (sniffed from magic bytes) or open a one-file zip.

    Args:
        raw: The file's bytes.
        path: The file, for messages.
        limit: Largest decompressed size accepted, in bytes (default:
            :func:`max_decompressed_bytes`); a larger output is refused before it
            is held in memory.
    """
    limit = max_decompressed_bytes() if limit is None else limit
    try:
        for magic, opener in _OPENERS.items():
            if raw.startswith(magic):
                with opener(io.BytesIO(raw)) as stream:
                    return _bounded(stream.read(limit + 1), limit, path)
    except EOFError:
        raise DataError(
            f"{path}: compressed file is truncated (ends before its end marker)"
        ) from None
    except (OSError, zlib.error, lzma.LZMAError, ValueError) as error:
        raise DataError(f"{path}: compressed data is corrupt ({error})") from None
    if raw.startswith(_ZIP):
        return _single_zip_member(raw, path, limit)
    return raw


def _single_zip_member(raw: bytes, path: Path, limit: int) -> bytes:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if len(members) != 1:
                raise DataError(
                    f"{path}: zip archive holds {len(members)} files; extract the dataset "
                    "file and pass it directly"
                )
            with archive.open(members[0]) as member:
                return _bounded(member.read(limit + 1), limit, path)
    except NotImplementedError as error:
        raise DataError(
            f"{path}: zip archive cannot be opened here ({error}); extract the dataset file "
            "and pass it directly"
        ) from None
    except RuntimeError as error:  # zipfile's "is encrypted, password required"
        raise DataError(
            f"{path}: zip archive is encrypted ({error}); extract the dataset file and "
            "pass it directly"
        ) from None
    except (zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        raise DataError(f"{path}: zip archive is corrupt or truncated ({error})") from None


def decode_text(data: bytes, path: Path, locate: Callable[[bytes, int], str] | None = None) -> str:
    """UTF-8 text (a leading byte-order mark is allowed).

    Args:
        data: The (decompressed) file content.
        path: The file, for messages.
        locate: Describes where a byte offset lies (e.g. :func:`record_at`), for
            the message about a byte that is not UTF-8.
    """
    if not data.strip():
        raise DataError(f"{path}: file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # The codec counts from after a byte-order mark; the message counts in the file.
        offset = error.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)
        line = data.count(b"\n", 0, offset) + 1
        where = locate(data, offset) if locate is not None else ""
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset}, line {line}"
            f"{where}); is it a binary or differently encoded file?"
        ) from None
    if "\x00" in text:
        raise DataError(f"{path}: not a text file (contains NUL bytes)")
    return text


def read_text(path: Path) -> str:
    """Decompressed, decoded text of ``path``."""
    return decode_text(decompress(read_bytes(path), path), path)


def load_json(path: Path) -> Any:
    """Parse ``path`` as JSON; errors name the line and column, and the record there."""
    text = decode_text(decompress(read_bytes(path), path), path, record_at)
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
            f"{record_at(text, error.pos)}"
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
