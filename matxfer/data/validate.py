"""Checks every record passes before it may become a graph.

Each check is one function that either returns a clean value or raises
:class:`InvalidRecordError` with a reason a materials scientist can act on.
Readers call the ``as_*`` converters on raw file content; :func:`validate_records`
runs the structural checks on finished :class:`~matxfer.data.records.Record` s,
so records built in memory are held to the same rules as records read from files.

Choices made here:

* Targets must be real, finite numbers. Numeric strings (``"1.0"``), booleans,
  ``null``, lists, ``NaN`` and ``Infinity`` (which Python's JSON parser accepts)
  are rejected, each with its own reason.
* Element symbols are case-sensitive (``"fe"`` is rejected, not guessed);
  dummy species (``"X"``), isotopes (``"D"``, ``"T"``) and elements beyond
  Z = 100 (no CGCNN atom features, the 92-number embedding ALIGNN uses) are
  rejected.
* Atoms closer than :attr:`ValidationConfig.min_distance` (periodic images
  included, so a tiny one-atom cell overlaps itself) make a record invalid.
* Sparse structures: like the reference ALIGNN, graph building widens the
  neighbour cutoff until every atom has ``max_neighbors`` neighbours, but it
  stops at ``GraphConfig.max_cutoff`` (30 Å). A structure in which some atom
  still has fewer neighbours within that radius (an isolated atom or molecule in
  a huge vacuum box) is rejected here rather than failing later;
  :class:`ValidationConfig` takes both limits from
  :class:`~matxfer.graphs.config.GraphConfig`.
* Duplicate ids: exact duplicates (same id, targets and structure) are not
  problems (readers drop all but the first, see :func:`drop_identical_duplicates`);
  the same id with a different target or structure is a problem on every
  occurrence, because there is no way to know which one is right.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from matxfer.data.records import Record
from matxfer.errors import Problem
from matxfer.graphs.config import GraphConfig

#: Highest atomic number with CGCNN atom features (jarvis ``atom_init.json``: Z = 1..100).
MAX_SUPPORTED_Z = 100

#: Element symbol -> Z for every element of the periodic table (no isotopes or dummies).
ATOMIC_NUMBERS: dict[str, int] = {Element.from_Z(z).symbol: z for z in range(1, 119)}

#: Longest accepted lattice vector in Å; longer ones are unit mistakes, not crystals.
MAX_LATTICE_LENGTH = 1e4

#: Most atoms per structure accepted by default (validation and graph building): far
#: above the study's crystals (at most a few hundred atoms), and it keeps one
#: pathological supercell from costing minutes and gigabytes.
MAX_ATOMS = 5000

_ISOTOPES = {"D": "H", "T": "H"}
_PBC = np.ones(3, dtype=np.int64)
# Densest sphere packing (fcc/hcp) fraction; used to reject impossible densities early.
_MAX_PACKING = math.pi / (3 * math.sqrt(2))
# Radius of the first, cheap neighbour search; dense crystals pass the neighbour check there.
_SHORT_RADIUS = 6.0


class InvalidRecordError(ValueError):
    """One record fails one check; ``str(error)`` is the reason."""


def describe_error(error: BaseException, limit: int = 200) -> str:
    """``"Type: message"`` on one line (problem lines must stay one line each)."""
    message = " ".join(str(error).split())
    if len(message) > limit:
        message = message[: limit - 3] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


#: The graph settings records are checked for unless told otherwise.
_GRAPH_DEFAULTS = GraphConfig()


@dataclass(frozen=True)
class ValidationConfig:
    """Thresholds of the record checks.

    Args:
        min_distance: Closest allowed approach of two atoms, periodic images
            included, in Å (default: ``0.5``).
        min_volume: Smallest allowed cell volume in Å^3; smaller means a
            singular or collapsed lattice (default: ``0.1``).
        neighbor_cutoff: Radius in Å within which every atom needs
            ``min_neighbors`` neighbours (default: the default
            ``GraphConfig.max_cutoff``, 30 Å).
        min_neighbors: Neighbours every atom needs within ``neighbor_cutoff``
            (default: the default ``GraphConfig.max_neighbors``, 12).
        max_atoms: Most atoms a structure may have (default: :data:`MAX_ATOMS`).
        require_targets: Every record needs a target; ``False`` lets records of
            prediction inputs come without one (default: ``True``).
    """

    min_distance: float = 0.5
    min_volume: float = 0.1
    neighbor_cutoff: float = _GRAPH_DEFAULTS.max_cutoff
    min_neighbors: int = _GRAPH_DEFAULTS.max_neighbors
    max_atoms: int = MAX_ATOMS
    require_targets: bool = True

    @classmethod
    def for_graphs(cls, graph: GraphConfig) -> ValidationConfig:
        """Config whose neighbour check matches a graph configuration: a structure
        passes exactly when ``graph`` can give every atom its neighbours."""
        return cls(neighbor_cutoff=graph.max_cutoff, min_neighbors=graph.max_neighbors)


def _type_name(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def as_target(value: object, name: str) -> float:
    """A target value as a finite float.

    Args:
        value: The value as read (any type).
        name: Target name, for the message.
    """
    if value is None:
        raise InvalidRecordError(f"target '{name}' is null (missing value)")
    if isinstance(value, bool | np.bool_):
        raise InvalidRecordError(f"target '{name}' is a boolean ({value}), not a number")
    if isinstance(value, str):
        raise InvalidRecordError(f"target '{name}' is a string ({value!r}), not a number")
    if isinstance(value, list | tuple | dict | np.ndarray):
        raise InvalidRecordError(
            f"target '{name}' is {_type_name(value)}, not a single number "
            "(one value per target; choose the field with target_key)"
        )
    if not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidRecordError(f"target '{name}' is {_type_name(value)}, not a number")
    number = float(value)
    if math.isnan(number):
        raise InvalidRecordError(f"target '{name}' is NaN")
    if math.isinf(number):
        raise InvalidRecordError(f"target '{name}' is infinite ({number})")
    return number


def _numbers_only(rows: object, what: str) -> None:
    """Reject non-numbers in a nested list (numpy would coerce '1.0' and True)."""
    if not isinstance(rows, list | tuple):
        raise InvalidRecordError(f"{what} must be a list, got {_type_name(rows)}")
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple):
            raise InvalidRecordError(
                f"{what} row {i} must be a list of 3 numbers, got {_type_name(row)}"
            )
        for x in row:
            if type(x) not in (int, float) and not isinstance(x, np.integer | np.floating):
                raise InvalidRecordError(
                    f"{what} row {i} holds {_type_name(x)} {x!r}, not a number"
                )


def as_lattice(value: object) -> np.ndarray:
    """The lattice as a finite 3x3 float array (rows are the lattice vectors in Å)."""
    if isinstance(value, np.ndarray):
        matrix = value.astype(float)
    else:
        _numbers_only(value, "lattice_mat")
        if len(value) != 3 or any(len(row) != 3 for row in value):  # type: ignore[arg-type]
            shape = [len(row) for row in value]  # type: ignore[union-attr]
            raise InvalidRecordError(f"lattice_mat must be 3x3, got rows of lengths {shape}")
        matrix = np.asarray(value, dtype=float)
    if matrix.shape != (3, 3):
        raise InvalidRecordError(f"lattice_mat must be 3x3, got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise InvalidRecordError("lattice_mat holds NaN or infinite values")
    return matrix


def check_volume(lattice: np.ndarray, config: ValidationConfig) -> None:
    """Reject zero-length lattice vectors and singular or collapsed cells.

    A negative determinant (left-handed basis) is fine: the volume is ``|det|``.
    """
    largest = np.abs(lattice).max(axis=1)  # checked before squaring, which could overflow
    if largest.max() > MAX_LATTICE_LENGTH:
        axis = "abc"[int(np.argmax(largest))]
        raise InvalidRecordError(
            f"lattice vector {axis} is over {MAX_LATTICE_LENGTH:g} Å long (wrong units?)"
        )
    lengths = np.linalg.norm(lattice, axis=1)
    for axis, length in zip("abc", lengths, strict=True):
        if length == 0.0:
            raise InvalidRecordError(f"lattice vector {axis} has zero length")
    volume = abs(float(np.linalg.det(lattice)))
    if volume < 1e-8 * float(np.prod(lengths)):
        raise InvalidRecordError(
            f"lattice is singular (vectors are coplanar; volume {volume:.3g} Å^3)"
        )
    if volume < config.min_volume:
        raise InvalidRecordError(
            f"cell volume {volume:.3g} Å^3 is below {config.min_volume} Å^3 "
            "(lattice vectors are coplanar or collapsed)"
        )


def as_coords(value: object, n_atoms: int) -> np.ndarray:
    """Atomic coordinates as a finite (n_atoms, 3) float array."""
    if isinstance(value, np.ndarray):
        coords = value.astype(float)
    else:
        _numbers_only(value, "coords")
        lengths = {len(row) for row in value}  # type: ignore[union-attr]
        if lengths - {3}:
            raise InvalidRecordError(
                f"coords must be rows of 3 numbers, got rows of lengths {sorted(lengths)}"
            )
        coords = np.asarray(value, dtype=float).reshape(-1, 3)
    if coords.ndim != 2 or coords.shape[1] != 3:
        raise InvalidRecordError(f"coords must be N x 3, got shape {coords.shape}")
    if len(coords) != n_atoms:
        raise InvalidRecordError(f"{len(coords)} coordinate rows for {n_atoms} elements")
    if not np.isfinite(coords).all():
        raise InvalidRecordError("coords hold NaN or infinite values")
    return coords


def as_element(symbol: object) -> str:
    """A supported element symbol (exact case), or a reason why not."""
    if not isinstance(symbol, str):
        raise InvalidRecordError(f"element {symbol!r} is {_type_name(symbol)}, not a symbol")
    if symbol in ATOMIC_NUMBERS:
        z = ATOMIC_NUMBERS[symbol]
        if z > MAX_SUPPORTED_Z:
            raise InvalidRecordError(
                f"element '{symbol}' (Z={z}) has no atom features "
                f"(supported: Z 1-{MAX_SUPPORTED_Z})"
            )
        return symbol
    if symbol in _ISOTOPES:
        raise InvalidRecordError(
            f"isotope symbol '{symbol}' is not supported; write '{_ISOTOPES[symbol]}'"
        )
    hint = symbol.strip().capitalize()
    if hint in ATOMIC_NUMBERS and hint != symbol:
        raise InvalidRecordError(
            f"unknown element {symbol!r} (symbols are case-sensitive: '{hint}'?)"
        )
    raise InvalidRecordError(f"unknown element {symbol!r}")


def as_elements(value: object) -> list[str]:
    """The list of element symbols, one per atom."""
    if not isinstance(value, list | tuple):
        raise InvalidRecordError(f"elements must be a list of symbols, got {_type_name(value)}")
    return [as_element(symbol) for symbol in value]


def check_not_empty(n_atoms: int) -> None:
    """Reject structures without atoms."""
    if n_atoms == 0:
        raise InvalidRecordError("structure has no atoms")


def check_atom_count(n_atoms: int, max_atoms: int) -> None:
    """Reject structures with more than ``max_atoms`` atoms (validation and graph building)."""
    if n_atoms > max_atoms:
        raise InvalidRecordError(
            f"structure has {n_atoms} atoms, over the limit of {max_atoms} (max_atoms; "
            "raise it with ValidationConfig(max_atoms=...) / build_graphs(max_atoms=...))"
        )


def _reduced(lattice: np.ndarray) -> np.ndarray:
    """LLL-reduce flat or skewed cells, whose image search would otherwise explode."""
    # Lattice-plane spacings are the inverse lengths of the reciprocal vectors.
    spacings = 1.0 / np.linalg.norm(np.linalg.inv(lattice), axis=0)
    if spacings.min() < 1.0:
        return Lattice(lattice).get_lll_reduced_lattice().matrix
    return lattice


def check_min_distance(lattice: np.ndarray, cart: np.ndarray, config: ValidationConfig) -> None:
    """Reject atoms closer than ``config.min_distance``, periodic images included."""
    threshold = config.min_distance
    volume = abs(float(np.linalg.det(lattice)))
    if volume / len(cart) < (4 / 3) * math.pi * (threshold / 2) ** 3 / _MAX_PACKING:
        raise InvalidRecordError(
            f"cell too dense: {volume / len(cart):.3g} Å^3 per atom cannot keep atoms "
            f"{threshold} Å apart"
        )
    lattice = _reduced(lattice)
    lengths = np.linalg.norm(lattice, axis=1)
    if lengths.min() < threshold:
        raise InvalidRecordError(
            f"shortest lattice vector is {lengths.min():.3g} Å, below the {threshold} Å minimum "
            "distance: every atom overlaps its own periodic image"
        )
    i, j, offsets, distances = find_points_in_spheres(
        cart, cart, threshold, _PBC, lattice, tol=1e-8
    )
    pair = ~((i == j) & ~offsets.any(axis=1))  # drop each atom paired with itself
    if not pair.any():
        return
    k = int(np.argmin(np.where(pair, distances, np.inf)))
    a, b, d = int(i[k]), int(j[k]), float(distances[k])
    if a == b:
        raise InvalidRecordError(
            f"atom {a} is {d:.3g} Å from its own periodic image (minimum {threshold} Å)"
        )
    raise InvalidRecordError(f"atoms {a} and {b} are {d:.3g} Å apart (minimum {threshold} Å)")


def _images_within(lattice: np.ndarray, radius: float) -> int:
    """A lower bound on the lattice points (origin included) within ``radius`` of the origin.

    Points n1*a + n2*b + n3*c with |n_i| * |a_i| <= radius / 3 lie inside the
    sphere (triangle inequality), as do the points on the line of the
    shortest vector.
    """
    if radius < 0:
        return 0
    lengths = np.linalg.norm(lattice, axis=1)
    per_axis = np.floor(radius / (3 * lengths)).astype(int)
    box = int(np.prod(2 * per_axis + 1))
    line = 2 * int(np.floor(radius / lengths.min())) + 1
    return max(box, line)


def _neighbor_lower_bound(lattice: np.ndarray, cart: np.ndarray, radius: float, needed: int) -> int:
    """Neighbours every atom has at least, within ``radius`` (no neighbour search).

    Its own periodic images, and the images of every atom that are within
    ``radius - diameter``, where ``diameter`` bounds the largest distance
    between two atoms of the cell: the diagonal of their bounding box, O(N)
    where the exact diameter needs an N x N x 3 array (tens of GB for a
    30,000-atom supercell). Stops early once ``needed`` is reached.
    """
    own = _images_within(lattice, radius) - 1
    if own >= needed:
        return own
    diameter = float(np.linalg.norm(cart.max(axis=0) - cart.min(axis=0)))
    return max(own, len(cart) * _images_within(lattice, radius - diameter) - 1)


def _neighbor_counts(lattice: np.ndarray, cart: np.ndarray, radius: float) -> np.ndarray:
    i, j, offsets, _ = find_points_in_spheres(cart, cart, radius, _PBC, lattice, tol=1e-8)
    pair = ~((i == j) & ~offsets.any(axis=1))
    return np.bincount(i[pair], minlength=len(cart))


def check_neighbors(lattice: np.ndarray, cart: np.ndarray, config: ValidationConfig) -> None:
    """Reject structures where an atom has too few neighbours within the widest cutoff.

    Cheap tests first: when a lower bound on the neighbour count already
    suffices (cells with edges up to 10 Å, or many atoms in a compact cell),
    or every atom has its neighbours within a short radius (any dense
    crystal), the full-radius neighbour search is never run.
    """
    radius, needed = config.neighbor_cutoff, config.min_neighbors
    lattice = _reduced(lattice)
    if _neighbor_lower_bound(lattice, cart, radius, needed) >= needed:
        return
    for search in sorted({min(radius, _SHORT_RADIUS), radius}):
        counts = _neighbor_counts(lattice, cart, search)
        if counts.min() >= needed:
            return
    worst = int(np.argmin(counts))
    raise InvalidRecordError(
        f"atom {worst} has only {int(counts[worst])} neighbours within {radius} Å "
        f"(graphs need {needed}); the cell is mostly vacuum"
    )


def check_structure(structure: Structure, config: ValidationConfig) -> None:
    """All structural checks on one pymatgen structure."""
    check_not_empty(len(structure))
    check_atom_count(len(structure), config.max_atoms)
    try:
        numbers = structure.atomic_numbers
    except AttributeError:
        raise InvalidRecordError(
            "structure is disordered (partial occupancies are not supported)"
        ) from None
    for site, z in zip(structure, numbers, strict=True):
        if not 1 <= z <= MAX_SUPPORTED_Z:
            as_element(str(site.specie))  # raises with the specific reason
    lattice = as_lattice(structure.lattice.matrix)
    check_volume(lattice, config)
    cart = structure.cart_coords
    if not np.isfinite(cart).all():
        raise InvalidRecordError("coords hold NaN or infinite values")
    check_min_distance(lattice, cart, config)
    check_neighbors(lattice, cart, config)


def check_targets(targets: dict[str, float]) -> None:
    """Every target finite; at least one present."""
    if not targets:
        raise InvalidRecordError("record has no target values")
    for name, value in targets.items():
        as_target(value, name)


def _same_content(a: Record, b: Record) -> bool:
    if a.targets != b.targets or len(a.structure) != len(b.structure):
        return False
    if [s.species_string for s in a.structure] != [s.species_string for s in b.structure]:
        return False
    return bool(
        np.allclose(a.structure.lattice.matrix, b.structure.lattice.matrix, atol=1e-6)
        and np.allclose(a.structure.frac_coords, b.structure.frac_coords, atol=1e-6)
    )


def drop_identical_duplicates(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Split ``records`` into (first occurrences, exact repeats of an earlier record).

    Args:
        records: Records, possibly with repeated ids.
    """
    first: dict[str, Record] = {}
    kept: list[Record] = []
    dropped: list[Record] = []
    for record in records:
        earlier = first.get(record.id)
        if earlier is None:
            first[record.id] = record
            kept.append(record)
        elif _same_content(earlier, record):
            dropped.append(record)
        else:
            kept.append(record)  # a conflict: validate_records reports it
    return kept, dropped


def duplicate_id_problems(records: Sequence[Record]) -> list[Problem]:
    """One problem for every record whose id is shared with a different record."""
    by_id: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_id[record.id].append(record)
    problems = []
    for record_id, group in by_id.items():
        if len(group) < 2 or all(_same_content(group[0], other) for other in group[1:]):
            continue
        places = ", ".join(str(r.index) for r in group)
        for record in group:
            problems.append(
                Problem(
                    record.source,
                    record.index,
                    record_id,
                    f"id '{record_id}' is used by records {places} with different "
                    "targets or structures",
                )
            )
    return problems


def validate_records(
    records: Sequence[Record], config: ValidationConfig | None = None
) -> list[Problem]:
    """Every problem of every record, in input order.

    Args:
        records: Records from any reader or built in memory.
        config: Thresholds (default: :class:`ValidationConfig` ()).
    """
    config = config or ValidationConfig()
    problems = []
    for record in records:
        try:
            if record.targets or config.require_targets:
                check_targets(record.targets)
            check_structure(record.structure, config)
        except InvalidRecordError as error:
            problems.append(Problem(record.source, record.index, record.id, str(error)))
        except Exception as error:  # one odd record must not abort the whole check
            reason = f"could not be checked ({describe_error(error)})"
            problems.append(Problem(record.source, record.index, record.id, reason))
    return problems + duplicate_id_problems(records)
