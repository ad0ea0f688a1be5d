"""ALIGNN's ``k-nearest`` atom graph: edge lists from a vectorised neighbour search.

The rule, read from the reference (``alignn/graphs.py``: ``nearest_neighbor_edges``
with ``use_canonize=True``, then ``build_undirected_edgedata``, as
``Graph.atom_dgl_multigraph`` calls them):

1. Each atom *i* takes every periodic image of every atom *j* whose distance
   ``d`` satisfies ``0.15 Å < d <= d_k(i)``, where ``d_k(i)`` is *i*'s k-th
   smallest such distance. Ties at ``d_k`` are kept by exact float comparison.
   The reference finds ``d_k`` by searching within ``cutoff`` and, if some atom
   has fewer than k neighbours there, repeating with a wider cutoff. The result
   therefore depends only on each ``d_k``, never on ``cutoff``: we search a
   smaller radius estimated from the density and widen only for atoms that lack
   k neighbours, which gives the same edges.
2. Each chosen triple (i, j, image) is put in canonical form (smaller atom index
   first, image negated on a swap); duplicates are dropped, and every canonical
   bond yields two directed edges, i→j with ``r`` and j→i with ``-r``. A bond from
   an atom to its own image (i = j) is not merged with its reverse (image −I is a
   different key), so such bonds appear twice in each direction, exactly as in
   the reference.

Distances used for the choice are computed with the reference's own arithmetic
(jarvis ``Atoms.get_all_neighbors``: positions from fractional coordinates times
the lattice rounded to 5 decimals, image shifts from the exact lattice), so
near-ties at ``d_k`` fall the same way: in 149 of the first 300 fe structures
some atom's next neighbour lies within 1e-6 relative of ``d_k``, and computing
positions with the exact lattice changes the edge set of 124 of them. With this
arithmetic the edges equal the reference's in every structure tested (1,000 fe,
300 each of bg, gv, ph, dc, pz, ebg). For records given in Cartesian
coordinates the reference uses those positions as given, not the rounded
lattice; a Structure does not tell which form its input had, so there (jarvis2d)
36 of 300 structures differ from the reference at such near-ties. Bond vectors
use the exact lattice (they differ from the reference's by up to ~1e-5 Å).

Neighbour search library, measured on the first 1,000 fe pool structures
(13.6 atoms average), one core, microseconds per structure:

========================================  =========  =====================
library                                    r = 8 Å    density radius (~5 Å)
========================================  =========  =====================
pymatgen ``find_points_in_spheres`` (C)         84           49
vesin 0.6.2 (C++, ``n_threads=1``)             191           93
ASE ``primitive_neighbor_list`` (Python)    18,266        5,055
========================================  =========  =====================

pymatgen's is fastest here and already a dependency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymatgen.optimization.neighbors import find_points_in_spheres

from matxfer.errors import MatxferError

#: Pairs closer than this are not bonds (jarvis ``get_all_neighbors(bond_tol=0.15)``).
MIN_BOND_LENGTH = 0.15
#: jarvis ``Lattice`` rounds its matrix to this many decimals for atom positions.
_REFERENCE_LATTICE_DECIMALS = 5
#: First search radius = this factor × radius of a sphere holding k + 1 atoms at
#: the structure's mean density. About 1 atom in 1,400 (fe pool) then needs a
#: second search; 1.1-1.2 measured ~10% faster overall than 1.3, 1.45 ~25% slower.
_RADIUS_FACTOR = 1.2
_RADIUS_GROWTH = 1.5
#: Slack between the search radius and the k-th distance that proves the search
#: found every atom at that distance (search and reference arithmetic differ by
#: rounding only).
_COMPLETENESS_MARGIN = 1e-6
_PBC = np.ones(3, dtype=np.int64)


class NeighborError(MatxferError):
    """A structure has no valid k-nearest graph (too sparse or degenerate cell)."""


@dataclass
class EdgeBatch:
    """The ``k-nearest`` graphs of several crystals as one disjoint graph.

    Attributes:
        src: ``[E]`` int64 source atoms (indices into all atoms of the batch), sorted.
        dst: ``[E]`` int64 destination atoms, same structure as their source.
        vec: ``[E, 3]`` float64 bond vectors ``r_dst + image - r_src`` (Å).
        atom_ptr: ``[S + 1]`` int64; crystal s owns atoms ``atom_ptr[s]:atom_ptr[s + 1]``.
        edge_ptr: ``[S + 1]`` int64; crystal s owns edges ``edge_ptr[s]:edge_ptr[s + 1]``.
        errors: Crystal index → why it has no graph (it then has no edges).
    """

    src: np.ndarray
    dst: np.ndarray
    vec: np.ndarray
    atom_ptr: np.ndarray
    edge_ptr: np.ndarray
    errors: dict[int, str]


def k_nearest_edges(
    frac_coords: np.ndarray,
    lattice: np.ndarray,
    max_neighbors: int = 12,
    max_cutoff: float = 30.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of the reference ALIGNN's ``k-nearest`` atom graph of one crystal.

    Args:
        frac_coords: ``[N, 3]`` fractional coordinates (any image; not wrapped).
        lattice: ``[3, 3]`` lattice matrix in Å, rows are lattice vectors.
        max_neighbors: k, neighbours kept per atom before ties and symmetrisation.
        max_cutoff: Largest search radius in Å.

    Returns:
        ``(src, dst, vec)``: ``[E]`` int64 source and destination atom indices,
        sorted by source, and ``[E, 3]`` float64 bond vectors
        ``r_dst + image - r_src`` (Å).

    Raises:
        NeighborError: The cell is degenerate or some atom lacks k neighbours
            within ``max_cutoff``.
    """
    batch = k_nearest_edges_batch([(frac_coords, lattice)], max_neighbors, max_cutoff)
    if batch.errors:
        raise NeighborError(batch.errors[0])
    return batch.src, batch.dst, batch.vec


def k_nearest_edges_batch(
    cells: Sequence[tuple[np.ndarray, np.ndarray]],
    max_neighbors: int = 12,
    max_cutoff: float = 30.0,
) -> EdgeBatch:
    """:func:`k_nearest_edges` of many crystals at once (one vectorised pass).

    Args:
        cells: ``(frac_coords [N, 3], lattice [3, 3])`` per crystal.
        max_neighbors: k.
        max_cutoff: Largest search radius in Å; a crystal with an atom whose
            k-th neighbour lies farther gets an entry in ``errors``.
    """
    fracs = [np.ascontiguousarray(frac, dtype=np.float64).reshape(-1, 3) for frac, _ in cells]
    matrices = np.array([lattice for _, lattice in cells], dtype=np.float64).reshape(-1, 3, 3)
    sizes = np.array([len(frac) for frac in fracs], dtype=np.int64)
    atom_ptr = np.concatenate([[0], np.cumsum(sizes)])
    src, dst, image, errors = _chosen_neighbors(
        fracs, matrices, atom_ptr, max_neighbors, max_cutoff
    )
    a, b, image = _canonical_bonds(src, dst, image, atom_ptr)
    owner = np.repeat(np.arange(len(cells)), sizes)
    frac_all = np.concatenate(fracs) if fracs else np.zeros((0, 3))
    vec = np.einsum("ij,ijk->ik", frac_all[b] - frac_all[a] + image, matrices[owner[a]])
    src = np.concatenate([a, b])
    order = np.argsort(src, kind="stable")
    src = src[order]
    dst = np.concatenate([b, a])[order]
    vec = np.concatenate([vec, -vec])[order]
    edge_ptr = np.searchsorted(src, atom_ptr)
    return EdgeBatch(src, dst, vec, atom_ptr, edge_ptr, errors)


def _chosen_neighbors(
    fracs: list[np.ndarray],
    matrices: np.ndarray,
    atom_ptr: np.ndarray,
    k: int,
    max_cutoff: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """Every atom's neighbours out to its k-th distance: ``(i, j, integer image)``, errors."""
    n_cells = len(fracs)
    sizes = np.diff(atom_ptr)
    volumes = np.abs(np.linalg.det(matrices)) if n_cells else np.zeros(0)
    positions = [
        np.dot(frac, rounded)
        for frac, rounded in zip(
            fracs, np.around(matrices, _REFERENCE_LATTICE_DECIMALS), strict=True
        )
    ]
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = _RADIUS_FACTOR * (3 * (k + 1) * volumes / (4 * math.pi * sizes)) ** (1 / 3)
    radius = np.minimum(radius, max_cutoff)
    errors = {
        s: f"cell volume {volumes[s]:.3g} Å^3 with {sizes[s]} atoms: not a crystal"
        for s in range(n_cells)
        if sizes[s] == 0 or not np.isfinite(volumes[s]) or volumes[s] < 1e-6
    }
    errors.update(
        {
            s: "coordinates are not finite numbers"
            for s in range(n_cells)
            if not np.isfinite(fracs[s]).all()
        }
    )
    active = np.ones(atom_ptr[-1], dtype=bool)  # atoms searched in this pass
    for s in errors:
        active[atom_ptr[s] : atom_ptr[s + 1]] = False
    centers: dict[int, np.ndarray | None] = {s: None for s in range(n_cells) if s not in errors}
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while centers:
        i, j, image, offset = _search(positions, matrices, atom_ptr, radius, centers)
        # The reference's distance, operation for operation (bit-identical ties).
        distance = np.sum(offset**2, axis=-1) ** 0.5
        bond = distance > MIN_BOND_LENGTH
        i, j, image, distance = i[bond], j[bond], image[bond], distance[bond]
        kth = _kth_smallest(distance, i, int(atom_ptr[-1]), k)
        complete = kth <= np.repeat(radius, sizes) - _COMPLETENESS_MARGIN
        keep = complete[i] & (distance <= kth[i])
        found.append((i[keep], j[keep], image[keep]))
        again = np.flatnonzero(active & ~complete)
        owners = np.searchsorted(atom_ptr, again, side="right") - 1
        active[:] = False
        centers = {}
        for s in np.unique(owners).tolist():
            mine = again[owners == s]
            if radius[s] >= max_cutoff:
                errors[s] = (
                    f"atom {mine[0] - atom_ptr[s]} has fewer than {k} neighbours within "
                    f"max_cutoff = {max_cutoff} Å (isolated atom or too much vacuum?)"
                )
                continue
            radius[s] = min(radius[s] * _RADIUS_GROWTH, max_cutoff)
            active[mine] = True
            centers[s] = mine - atom_ptr[s]
    i, j, image = (
        (np.concatenate(parts) for parts in zip(*found, strict=True))
        if found
        else (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    )
    if errors:
        failed = np.zeros(atom_ptr[-1], dtype=bool)
        for s in errors:
            failed[atom_ptr[s] : atom_ptr[s + 1]] = True
        ok = ~failed[i]
        i, j, image = i[ok], j[ok], image[ok]
    return i, j, np.rint(image).astype(np.int64), errors


def _kth_smallest(values: np.ndarray, groups: np.ndarray, n_groups: int, k: int) -> np.ndarray:
    """Exact k-th smallest value of each group (``inf`` where a group has fewer than k)."""
    if np.any(groups[1:] < groups[:-1]):
        order = np.argsort(groups, kind="stable")
        values, groups = values[order], groups[order]
    count = np.bincount(groups, minlength=n_groups)
    first = np.cumsum(count) - count
    width = max(int(count.max(initial=0)), k)
    if n_groups * width <= 4 * len(values) + 100_000:
        # One row per group, padded with inf: a partial sort per row beats a full
        # lexsort of all values by an order of magnitude.
        table = np.full((n_groups, width), np.inf)
        table[groups, np.arange(len(groups)) - first[groups]] = values
        return np.partition(table, k - 1, axis=1)[:, k - 1]
    kth = np.full(n_groups, np.inf)
    enough = count >= k
    kth[enough] = values[np.lexsort((values, groups))[first[enough] + k - 1]]
    return kth


def _search(
    positions: list[np.ndarray],
    matrices: np.ndarray,
    atom_ptr: np.ndarray,
    radius: np.ndarray,
    centers: dict[int, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs within each crystal's radius: global ``(i, j)``, image, offset vector."""
    parts = []
    for s, chosen in centers.items():
        position = positions[s]
        around = position if chosen is None else position[chosen]
        i, j, image, _ = find_points_in_spheres(
            position, around, float(radius[s]), _PBC, matrices[s], tol=1e-8
        )
        if chosen is not None:
            i = chosen[i]
        parts.append((i + atom_ptr[s], j + atom_ptr[s], image, np.dot(image, matrices[s])))
    i, j, image, shift = (np.concatenate(column) for column in zip(*parts, strict=True))
    everywhere = np.concatenate(positions)
    return i, j, image, shift + everywhere[j] - everywhere[i]


def _canonical_bonds(
    src: np.ndarray, dst: np.ndarray, image: np.ndarray, atom_ptr: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique bonds (a <= b, image of b) as in the reference's ``canonize_edge``."""
    swap = dst < src
    a = np.where(swap, dst, src)
    b = np.where(swap, src, dst)
    image = np.where(swap[:, None], -image, image)
    # One int64 key per (a, b, image) so duplicates fall out of a 1-D unique;
    # b is stored relative to a (same crystal, b >= a) to keep keys small.
    bound = int(np.abs(image).max(initial=0))
    width = 2 * bound + 1
    span = int(np.diff(atom_ptr).max(initial=1))
    if int(atom_ptr[-1]) * span * width**3 >= 2**62:
        raise NeighborError(f"images up to {bound} cells away: too many to index")
    shifted = image + bound
    key = ((a * span + (b - a)) * width + shifted[:, 0]) * width + shifted[:, 1]
    key = key * width + shifted[:, 2]
    _, first = np.unique(key, return_index=True)
    return a[first], b[first], image[first]
