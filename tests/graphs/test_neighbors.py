"""The k-nearest atom graph on crystals whose neighbours can be counted by hand."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matxfer.errors import DataError, MatxferError
from matxfer.graphs import GraphConfig, build_graph, build_graphs, k_nearest_edges
from matxfer.graphs.neighbors import NeighborError, k_nearest_edges_batch


def _vectors(structure: Structure, k: int) -> Counter[tuple[int, int, tuple[float, ...]]]:
    src, dst, vec = k_nearest_edges(structure.frac_coords, structure.lattice.matrix, k)
    return Counter(
        (s, d, tuple(np.round(v, 6) + 0.0))
        for s, d, v in zip(src.tolist(), dst.tolist(), vec, strict=True)
    )


def test_simple_cubic_shells_and_duplicated_self_bonds(simple_cubic: Structure) -> None:
    # a = 3: 6 neighbours at a, 12 at a*sqrt(2). The 12th is in the second shell,
    # and its ties are kept, so 18 neighbours. Every neighbour is the atom's own
    # image, and the reference keeps image I and -I as separate bonds, each in
    # both directions: every neighbour vector appears exactly twice.
    edges = _vectors(simple_cubic, 12)
    assert sum(edges.values()) == 36
    assert set(edges.values()) == {2}
    lengths = sorted(np.linalg.norm(np.array([v for _, _, v in edges]), axis=1).round(6))
    assert lengths == [3.0] * 6 + [round(3 * np.sqrt(2), 6)] * 12
    assert {(s, d) for s, d, _ in edges} == {(0, 0)}


@pytest.mark.parametrize(("k", "neighbours"), [(6, 6), (7, 18), (18, 18), (19, 26)])
def test_ties_at_kth_distance_are_kept(simple_cubic: Structure, k: int, neighbours: int) -> None:
    # Shells of simple cubic: 6 at a, 12 at a*sqrt(2), 8 at a*sqrt(3).
    assert sum(_vectors(simple_cubic, k).values()) == 2 * neighbours


def test_two_atoms_bond_across_the_cell_boundary() -> None:
    # x = 0.5 Å and x = 9.5 Å in a 10 Å cell: 1 Å apart through the boundary.
    pair = Structure(Lattice.cubic(10.0), ["H", "H"], [[0.05, 0.5, 0.5], [0.95, 0.5, 0.5]])
    edges = _vectors(pair, 1)
    assert edges == Counter({(0, 1, (-1.0, 0.0, 0.0)): 1, (1, 0, (1.0, 0.0, 0.0)): 1})


def test_one_sided_neighbours_become_undirected_bonds() -> None:
    # Atom 2 sits 1.2 Å from atom 1; atom 0 is 1.0 Å from atom 1. With k = 1
    # atom 2 picks atom 1 but atom 1 picks atom 0: the bond 1-2 still appears
    # in both directions, as the reference's union of neighbour lists does.
    chain = Structure(
        Lattice.cubic(20.0), ["C", "C", "C"], [[0.0, 0, 0], [0.05, 0, 0], [0.11, 0, 0]]
    )
    edges = _vectors(chain, 1)
    assert {(s, d) for s, d, _ in edges} == {(0, 1), (1, 0), (1, 2), (2, 1)}
    assert edges[(1, 2, (1.2, 0.0, 0.0))] == 1


def test_unwrapped_coordinates_give_the_same_bonds(
    random_crystal: Callable[..., Structure],
) -> None:
    crystal = random_crystal(seed=1)
    shifted = Structure(
        crystal.lattice,
        crystal.species,
        crystal.frac_coords + np.array([[1, 0, -2]] + [[0, 0, 0]] * 4),
    )
    assert _vectors(crystal, 12) == _vectors(shifted, 12)


def _per_atom_distances(structure: Structure) -> list[tuple[float, ...]]:
    graph = build_graph(structure)
    lengths = graph.edge_length.double().numpy()
    src = graph.edge_index[0].numpy()
    return sorted(tuple(np.sort(lengths[src == atom]).round(5)) for atom in range(len(structure)))


def _per_atom_cosines(structure: Structure) -> list[tuple[float, ...]]:
    graph = build_graph(structure)
    centre = graph.edge_index[1].numpy()[graph.lg_edge_index[0].numpy()]
    cos = graph.angle_cos.double().numpy()
    return sorted(tuple(np.sort(cos[centre == atom]).round(4)) for atom in range(len(structure)))


def test_supercell_repeats_every_atom_environment(
    random_crystal: Callable[..., Structure],
) -> None:
    crystal = random_crystal(seed=2)
    supercell = crystal.make_supercell([2, 1, 1], in_place=False)
    single = _per_atom_distances(crystal)
    assert _per_atom_distances(supercell) == sorted(single + single)
    single_cos = _per_atom_cosines(crystal)
    assert _per_atom_cosines(supercell) == sorted(single_cos + single_cos)


def test_equivalent_lattice_basis_gives_the_same_graph(
    random_crystal: Callable[..., Structure],
) -> None:
    crystal = random_crystal(seed=3)
    # A unimodular change of basis: same lattice points, skewed cell vectors.
    change = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 1]])
    skewed = Structure(
        Lattice(change @ crystal.lattice.matrix),
        crystal.species,
        crystal.frac_coords @ np.linalg.inv(change),
    )
    assert not np.allclose(skewed.lattice.matrix, crystal.lattice.matrix)
    assert _per_atom_distances(skewed) == _per_atom_distances(crystal)
    assert _per_atom_cosines(skewed) == _per_atom_cosines(crystal)


def brute_force_bonds(structure: Structure, k: int) -> Counter[tuple[int, int, tuple[int, ...]]]:
    """The k-nearest rule by exhaustive search over images -2..2 (no ties in these cells)."""
    frac, lattice = structure.frac_coords, structure.lattice.matrix
    images = np.array([(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)])
    chosen = set()
    for i in range(len(frac)):
        candidates = [
            (float(np.linalg.norm((frac[j] + image - frac[i]) @ lattice)), j, tuple(image))
            for j in range(len(frac))
            for image in images.tolist()
            if j != i or any(image)
        ]
        candidates.sort()
        kth = candidates[k - 1][0]
        for distance, j, image in candidates:
            if distance <= kth:
                # canonical bond: smaller atom first (image negated on a swap)
                key = (i, j, image) if i <= j else (j, i, tuple(-x for x in image))
                chosen.add(key)
    bonds: Counter[tuple[int, int, tuple[int, ...]]] = Counter()
    for a, b, image in chosen:
        bonds[(a, b, image)] += 1
        bonds[(b, a, tuple(-x for x in image))] += 1
    return bonds


def our_bonds(structure: Structure, k: int) -> Counter[tuple[int, int, tuple[int, ...]]]:
    frac, lattice = structure.frac_coords, structure.lattice.matrix
    src, dst, vec = k_nearest_edges(frac, lattice, k)
    image = np.rint(vec @ np.linalg.inv(lattice) - (frac[dst] - frac[src])).astype(int)
    return Counter(zip(src.tolist(), dst.tolist(), map(tuple, image.tolist()), strict=True))


def test_matches_exhaustive_search(random_crystal: Callable[..., Structure]) -> None:
    for seed in range(3):
        crystal = random_crystal(seed=seed, n_atoms=4)
        assert our_bonds(crystal, 12) == brute_force_bonds(crystal, 12)


def test_one_remote_atom_widens_alone() -> None:
    # A dense 3x3x3 cluster and one atom ~14 Å from it in a 20 Å cell: only
    # the remote atom's 12 neighbours lie beyond the first search radius.
    grid = np.array([[x, y, z] for x in range(3) for y in range(3) for z in range(3)])
    jitter = np.random.default_rng(0).uniform(-0.004, 0.004, size=grid.shape)  # no ties
    frac = np.vstack([0.08 * grid + jitter, [[0.58, 0.58, 0.58]]])
    cell = Structure(Lattice.cubic(20.0), ["C"] * 27 + ["Si"], frac)
    bonds = our_bonds(cell, 12)
    assert bonds == brute_force_bonds(cell, 12)
    assert sum(count for (a, _, _), count in bonds.items() if a == 27) >= 12


def test_sparse_atom_widens_the_search() -> None:
    # A 13 Å cubic cell with one atom: the 12th neighbour is at 13*sqrt(2) Å,
    # far beyond the first search radius.
    sparse = Structure(Lattice.cubic(13.0), ["Ar"], [[0, 0, 0]])
    lengths = np.linalg.norm(k_nearest_edges(sparse.frac_coords, sparse.lattice.matrix)[2], axis=1)
    assert lengths.max() == pytest.approx(13 * np.sqrt(2))
    assert len(lengths) == 36


def test_atom_without_neighbours_within_max_cutoff_is_an_error() -> None:
    isolated = Structure(Lattice.cubic(40.0), ["Ar"], [[0, 0, 0]])
    with pytest.raises(NeighborError, match="max_cutoff"):
        k_nearest_edges(isolated.frac_coords, isolated.lattice.matrix, 12, 30.0)


def test_batch_reports_only_the_bad_crystals(simple_cubic: Structure) -> None:
    good = (simple_cubic.frac_coords, simple_cubic.lattice.matrix)
    isolated = (np.zeros((1, 3)), 40.0 * np.eye(3))
    flat = (np.zeros((1, 3)), np.diag([3.0, 3.0, 0.0]))
    not_finite = (np.array([[0.0, np.nan, 0.0]]), 3.0 * np.eye(3))
    batch = k_nearest_edges_batch([good, isolated, good, flat, not_finite])
    assert sorted(batch.errors) == [1, 3, 4]
    assert "max_cutoff" in batch.errors[1]
    assert "volume" in batch.errors[3]
    assert "finite" in batch.errors[4]
    assert np.diff(batch.edge_ptr).tolist() == [36, 0, 36, 0, 0]


def test_build_graphs_names_failing_structures(simple_cubic: Structure) -> None:
    isolated = Structure(Lattice.cubic(40.0), ["Ar"], [[0, 0, 0]])
    disordered = Structure(Lattice.cubic(3.0), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(DataError) as caught:
        build_graphs(
            [simple_cubic, isolated, disordered], GraphConfig(), progress=False, ids=["a", "b", "c"]
        )
    problems = caught.value.problems
    assert [(p.index, p.record_id) for p in problems] == [(1, "b"), (2, "c")]
    assert "max_cutoff" in problems[0].reason
    assert "partially occupied" in problems[1].reason
    with pytest.raises(MatxferError, match="partially occupied"):
        build_graph(disordered)
