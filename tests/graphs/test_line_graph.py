"""Line graph (DGL ``line_graph(shared=True)`` semantics) and bond-angle cosines."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from pymatgen.core import Structure
from torch_geometric.data import Batch

from matxfer.graphs import GraphConfig, bond_cosines, build_graph, line_graph


def dgl_line_graph_pairs(src: list[int], dst: list[int]) -> list[tuple[int, int]]:
    """DGL's loop (``coo_linegraph.cc``): (u→v) joins every other (v→w), backtracking on."""
    return [
        (e1, e2)
        for e1 in range(len(src))
        for e2 in range(len(src))
        if e1 != e2 and dst[e1] == src[e2]
    ]


def test_dgl_documentation_example() -> None:
    # dgl.transforms.LineGraph docs: edges ([0, 1, 1], [1, 0, 2]) give line-graph
    # edges (tensor([0, 0, 1]), tensor([1, 2, 0])) with backtracking.
    pairs = line_graph(np.array([0, 1, 1]), np.array([1, 0, 2]), 3)
    assert pairs.tolist() == [[0, 0, 1], [1, 2, 0]]


def test_self_loop_is_not_paired_with_itself() -> None:
    # Two parallel self-loops at atom 0 (a bond to its own image, as the
    # reference stores it twice) and one edge 0→1: each loop pairs with the
    # other loop and with 0→1, never with itself.
    pairs = line_graph(np.array([0, 0, 0]), np.array([0, 0, 1]), 2)
    assert sorted(map(tuple, pairs.T.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 2)]


def test_three_atom_chain_pairs_and_angle() -> None:
    # Edges: e0 = 0→1, e1 = 1→0, e2 = 1→2, e3 = 2→1; the angle at atom 1 is 60°.
    src, dst = np.array([0, 1, 1, 2]), np.array([1, 0, 2, 1])
    half_root3 = np.sqrt(3) / 2
    vec = np.array([[1.0, 0, 0], [-1.0, 0, 0], [-0.5, half_root3, 0], [0.5, -half_root3, 0]])
    pairs = line_graph(src, dst, 3)
    assert [tuple(p) for p in pairs.T.tolist()] == [(0, 1), (0, 2), (1, 0), (2, 3), (3, 1), (3, 2)]
    cos = dict(zip(map(tuple, pairs.T.tolist()), bond_cosines(vec, pairs).tolist(), strict=True))
    assert cos[(0, 2)] == pytest.approx(0.5)  # angle at 1 between 1→0 and 1→2
    assert cos[(3, 1)] == pytest.approx(0.5)
    assert cos[(0, 1)] == pytest.approx(1.0)  # backtracking: the same bond twice
    assert cos[(2, 3)] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_the_loop_definition_on_random_multigraphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    src, dst = rng.integers(0, 7, size=40), rng.integers(0, 7, size=40)  # unsorted, multi-edges
    pairs = line_graph(src, dst, 7)
    expected = dgl_line_graph_pairs(src.tolist(), dst.tolist())
    assert Counter(map(tuple, pairs.T.tolist())) == Counter(expected)


def test_simple_cubic_angle_spectrum(simple_cubic: Structure) -> None:
    # k = 6: bonds ±x, ±y, ±z, each twice (self-image bonds are doubled), all
    # self-loops at atom 0. Each of the 12 bonds v1 pairs with the 11 others v2,
    # cos = -v1·v2: 2 × (+1) (v2 = -v1), 1 × (-1) (v2 = v1, its twin), 8 × 0.
    graph = build_graph(simple_cubic, GraphConfig(max_neighbors=6))
    assert graph.num_triplets == 132
    spectrum = Counter(np.round(graph.angle_cos.numpy(), 6).tolist())
    assert spectrum == {1.0: 24, -1.0: 12, 0.0: 96}


def test_rocksalt_angles(rocksalt: Structure) -> None:
    # Conventional NaCl cell, k = 6: each ion has 6 opposite ions at a/2 along ±x, ±y, ±z.
    graph = build_graph(rocksalt, GraphConfig(max_neighbors=6))
    assert graph.edge_index.size(1) == 8 * 6
    assert torch.allclose(graph.edge_length, torch.full((48,), 2.82))
    spectrum = Counter(np.round(graph.angle_cos.numpy(), 6).tolist())
    assert spectrum == {1.0: 48, -1.0: 48, 0.0: 192}


def test_batched_line_graph_indices_point_into_own_graph(
    simple_cubic: Structure, rocksalt: Structure
) -> None:
    graphs = [build_graph(simple_cubic), build_graph(rocksalt)]
    batch = Batch.from_data_list(graphs)
    first = graphs[0].edge_index.size(1)
    assert batch.lg_edge_index[:, graphs[0].num_triplets :].min() >= first
    # Bonds joined in the line graph share their middle atom after batching too.
    e1, e2 = batch.lg_edge_index
    assert torch.equal(batch.edge_index[1, e1], batch.edge_index[0, e2])
