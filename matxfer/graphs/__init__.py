"""ALIGNN's crystal graphs: k-nearest atom graph, bond-angle line graph, disk cache.

:func:`build_graph`, :func:`build_graphs` and :class:`CrystalGraph` are imported on
first use: graph building applies the data checks of :mod:`matxfer.data.validate`,
which in turn reads its neighbour limits from :class:`GraphConfig`, so importing the
builders here would tie the two packages in a circle; and the data layer should not
pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from matxfer.graphs.cache import GraphCache
from matxfer.graphs.config import GraphConfig
from matxfer.graphs.line_graph import bond_cosines, line_graph
from matxfer.graphs.neighbors import NeighborError, k_nearest_edges

if TYPE_CHECKING:
    from matxfer.graphs.build import build_graph, build_graphs
    from matxfer.graphs.data import CrystalGraph

_LAZY = {
    "build_graph": "matxfer.graphs.build",
    "build_graphs": "matxfer.graphs.build",
    "CrystalGraph": "matxfer.graphs.data",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matxfer.graphs' has no attribute {name!r}")


__all__ = [
    "CrystalGraph",
    "GraphCache",
    "GraphConfig",
    "NeighborError",
    "bond_cosines",
    "build_graph",
    "build_graphs",
    "k_nearest_edges",
    "line_graph",
]
