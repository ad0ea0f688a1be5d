"""Graph construction parameters: the one place they are read."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Bump when the content of a built graph changes for the same inputs, so
#: cached graphs from older versions are never reused.
GRAPH_FORMAT_VERSION = 1


class GraphConfig(BaseModel):
    """How a crystal becomes ALIGNN's atom graph and line graph.

    Args:
        neighbor_strategy: ``"k-nearest"`` (the study's and the reference
            ALIGNN's default): each atom's ``max_neighbors`` nearest
            neighbours across periodic images, ties at the k-th distance kept,
            the search widened where an atom has fewer than ``max_neighbors``;
            see :mod:`matxfer.graphs.neighbors` (default: ``"k-nearest"``).
        cutoff: The reference's first search radius in Å. The k-nearest graph
            does not depend on it (only on each atom's k-th neighbour
            distance); kept to record the reference setting (default: ``8.0``).
        max_neighbors: k (default: ``12``).
        max_cutoff: Widening stops here; an atom with fewer neighbours within
            this radius makes the structure invalid (default: ``30.0``).
        cutoff_step: Not used by ``"k-nearest"``: the reference widens to the
            longest cell vector and then doubles, and the graph does not depend
            on how the search widens (default: ``1.0``).
        line_graph: Build the bond-angle line graph (default: ``True``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    neighbor_strategy: Literal["k-nearest"] = "k-nearest"
    cutoff: float = Field(8.0, gt=0)
    max_neighbors: int = Field(12, ge=1)
    max_cutoff: float = Field(30.0, gt=0)
    cutoff_step: float = Field(1.0, gt=0)
    line_graph: bool = True

    def cache_token(self) -> str:
        """A string that changes whenever any parameter or the format changes."""
        return f"v{GRAPH_FORMAT_VERSION}:" + self.model_dump_json()
