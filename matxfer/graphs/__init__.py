"""ALIGNN's crystal graphs: k-nearest atom graph, bond-angle line graph, disk cache."""

from matxfer.graphs.build import build_graph, build_graphs
from matxfer.graphs.cache import GraphCache
from matxfer.graphs.config import GraphConfig
from matxfer.graphs.data import CrystalGraph
from matxfer.graphs.line_graph import bond_cosines, line_graph
from matxfer.graphs.neighbors import NeighborError, k_nearest_edges

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
