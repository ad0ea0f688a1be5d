"""Just enough of DGL to run the reference's 2021 ``alignn.models.alignn.ALIGNN`` forward.

DGL does not install here, so the reference module binds ``dgl``, ``fn`` and
``AvgPooling`` to ``None``. The tests patch in these stand-ins, which implement
exactly the message-passing calls that module makes (``apply_edges`` with
``u_add_v``; ``update_all`` with ``u_mul_e``/``copy_e`` and ``sum``) with the
documented DGL semantics: messages flow from an edge's source to its
destination.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn


class FakeGraph:
    """A (batched) directed graph with DGL-style ``ndata``/``edata`` dictionaries."""

    def __init__(
        self,
        src: Tensor,
        dst: Tensor,
        num_nodes: int,
        ndata: dict[str, Tensor] | None = None,
        edata: dict[str, Tensor] | None = None,
        node_graph: Tensor | None = None,
        num_graphs: int = 1,
    ) -> None:
        self.src, self.dst, self.num_nodes = src, dst, num_nodes
        self.ndata = dict(ndata or {})
        self.edata = dict(edata or {})
        self.node_graph = node_graph
        self.num_graphs = num_graphs

    def local_var(self) -> FakeGraph:
        return FakeGraph(
            self.src, self.dst, self.num_nodes, self.ndata, self.edata, self.node_graph,
            self.num_graphs,
        )  # fmt: skip

    def apply_edges(self, func: tuple[str, tuple[str, ...]]) -> None:
        kind, (src_field, dst_field, out) = func
        assert kind == "u_add_v"
        self.edata[out] = self.ndata[src_field][self.src] + self.ndata[dst_field][self.dst]

    def update_all(self, message: tuple[str, tuple[str, ...]], reduce: tuple[str, Any]) -> None:
        kind, args = message
        if kind == "u_mul_e":
            values = self.ndata[args[0]][self.src] * self.edata[args[1]]
        else:
            assert kind == "copy_e"
            values = self.edata[args[0]]
        reduce_kind, (_, out) = reduce
        assert reduce_kind == "sum"
        total = values.new_zeros((self.num_nodes, *values.shape[1:]))
        self.ndata[out] = total.index_add(0, self.dst, values)


fn = SimpleNamespace(
    u_add_v=lambda a, b, out: ("u_add_v", (a, b, out)),
    u_mul_e=lambda a, b, out: ("u_mul_e", (a, b, out)),
    copy_e=lambda a, out: ("copy_e", (a, out)),
    sum=lambda msg, out: ("sum", (msg, out)),
)


class AvgPooling(nn.Module):
    """Mean of node features per graph, as ``dgl.nn.AvgPooling``."""

    def forward(self, graph: FakeGraph, feat: Tensor) -> Tensor:
        assert graph.node_graph is not None
        total = feat.new_zeros(graph.num_graphs, feat.size(1)).index_add(0, graph.node_graph, feat)
        counts = torch.bincount(graph.node_graph, minlength=graph.num_graphs).clamp(min=1)
        return total / counts.unsqueeze(1).to(feat.dtype)
