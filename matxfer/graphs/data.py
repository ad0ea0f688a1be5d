"""The graph object that flows from :mod:`matxfer.graphs` to the model.

One :class:`CrystalGraph` holds both of ALIGNN's graphs of one crystal:

* atom graph: nodes are atoms (``z``), directed edges ``edge_index``
  (row 0 = source atom *i*, row 1 = destination atom *j*) with bond vectors
  ``edge_vec`` = r_j + image − r_i (Å); every bond appears in both
  directions.
* line graph: nodes are the atom-graph edges; ``lg_edge_index`` joins bond
  *e1* = (i→j) to bond *e2* = (j→k) (all pairs sharing atom j, including
  k = i, as DGL's ``line_graph(shared=True)`` in the reference), with
  ``angle_cos`` = cos of the angle at j between j→i and j→k:
  ``-v1·v2 / (|v1||v2|)``.

Batching (PyG ``Batch.from_data_list``) offsets ``edge_index`` by the atom
count and ``lg_edge_index`` by the edge count of the preceding graphs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch_geometric.data import Data


class CrystalGraph(Data):
    """PyG data object with an atom graph and its line graph.

    Attributes (all tensors):
        z: ``[N]`` long, atomic numbers.
        edge_index: ``[2, E]`` long, atom-graph edges (source, destination).
        edge_vec: ``[E, 3]`` float32, bond vectors in Å.
        lg_edge_index: ``[2, T]`` long, line-graph edges (bond, bond).
        angle_cos: ``[T]`` float32, bond-angle cosines.
        y: ``[1, P]`` float32 targets (NaN where a label is missing), optional.
    """

    def __inc__(self, key: str, value: Any, *args: Any, **kwargs: Any) -> Any:
        if key == "lg_edge_index":
            return self.edge_index.size(1)
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def num_triplets(self) -> int:
        return int(self.lg_edge_index.size(1))

    @property
    def edge_length(self) -> torch.Tensor:
        return self.edge_vec.norm(dim=-1)
