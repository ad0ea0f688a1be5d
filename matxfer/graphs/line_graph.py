"""ALIGNN's line graph: bonds as nodes, bond pairs sharing an atom as edges.

Semantics of the reference's ``g.line_graph(shared=True)`` (DGL, backtracking on;
DGL's ``src/array/cpu/coo_linegraph.cc``): atom-graph edge e1 = (i→j) is joined
to every edge e2 = (j→k) leaving j, including k = i (the reverse bond) and
parallel multi-edges, but never to itself: a bond from an atom to its own
periodic image (i = j) is a self-loop in the atom graph, and DGL skips the pair
(e1, e1). A node j with in-degree a and out-degree b thus contributes a·b
line-graph edges, less one per self-loop at j.

The angle feature is the reference's ``compute_bond_cosines``:
``cos θ = (−r1)·r2 / (|r1||r2|)`` clamped to [−1, 1], with ``r1`` the vector of
e1 and ``r2`` that of e2, i.e. the cosine of the angle at j between j→i and j→k.
"""

from __future__ import annotations

import numpy as np


def line_graph(src: np.ndarray, dst: np.ndarray, num_nodes: int) -> np.ndarray:
    """Line-graph edges of a directed multigraph, DGL ``line_graph`` style.

    Args:
        src: ``[E]`` source atom of each edge.
        dst: ``[E]`` destination atom of each edge.
        num_nodes: Number of atoms.

    Returns:
        ``[2, T]`` int64 pairs ``(e1, e2)`` of edge ids with ``dst[e1] == src[e2]``
        and ``e1 != e2``, grouped by ``e1`` in increasing order.
    """
    out_degree = np.bincount(src, minlength=num_nodes)
    first_out = np.cumsum(out_degree) - out_degree
    fan_out = out_degree[dst]
    e1 = np.repeat(np.arange(len(src)), fan_out)
    # Position of each pair inside its e1 block, shifted to the out-edges of e1's
    # head in source order.
    block_start = np.cumsum(fan_out) - fan_out
    slot = np.arange(len(e1)) + np.repeat(first_out[dst] - block_start, fan_out)
    if np.any(src[1:] < src[:-1]):
        slot = np.argsort(src, kind="stable")[slot]
    pairs = np.stack([e1, slot])
    if np.any(src == dst):  # only a self-loop can be paired with itself
        pairs = pairs[:, e1 != slot]
    return pairs


def bond_cosines(edge_vec: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Cosine of the angle between each bond pair, as the reference computes it.

    Args:
        edge_vec: ``[E, 3]`` bond vectors ``r_dst + image - r_src``.
        pairs: ``[2, T]`` line-graph edges from :func:`line_graph`.

    Returns:
        ``[T]`` float32 ``-v1·v2 / (|v1||v2|)`` clamped to [−1, 1].
    """
    vec = np.asarray(edge_vec, dtype=np.float64)
    unit = (vec / np.sqrt(np.einsum("ij,ij->i", vec, vec))[:, None]).astype(np.float32)
    first, second = pairs
    # One 1-D gather per component is several times faster than gathering rows.
    cos = np.zeros(pairs.shape[1], dtype=np.float32)
    for component in unit.T:
        column = np.ascontiguousarray(component)
        cos -= column.take(first) * column.take(second)
    return np.clip(cos, -1.0, 1.0, out=cos)
