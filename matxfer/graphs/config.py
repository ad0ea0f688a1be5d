"""Graph construction parameters: the one place they are read."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Bump when the content of a built graph changes for the same inputs, so
#: cached graphs from older versions are never reused.
GRAPH_FORMAT_VERSION = 1

#: Fields of earlier versions that never changed a graph (the k-nearest graph depends
#: only on each atom's k-th neighbour distance, not on where the search starts or how
#: it widens): accepted and dropped when reading old configs and checkpoints, and kept
#: at their old values in the cache token so graphs cached then stay valid.
LEGACY_FIELDS: dict[str, float] = {"cutoff": 8.0, "cutoff_step": 1.0}


class GraphConfig(BaseModel):
    """How a crystal becomes ALIGNN's atom graph and line graph.

    Args:
        neighbor_strategy: ``"k-nearest"`` (the study's and the reference
            ALIGNN's default): each atom's ``max_neighbors`` nearest
            neighbours across periodic images, ties at the k-th distance kept,
            the search widened where an atom has fewer than ``max_neighbors``;
            see :mod:`matxfer.graphs.neighbors` (default: ``"k-nearest"``).
        max_neighbors: k (default: ``12``).
        max_cutoff: Widening stops here; an atom with fewer neighbours within
            this radius makes the structure invalid (default: ``30.0``).
            Validation holds records to the same limits
            (:meth:`matxfer.data.validate.ValidationConfig.for_graphs`).
        line_graph: Build the bond-angle line graph (default: ``True``).

    The reference's first search radius (``cutoff``, 8 Å) and widening step
    (``cutoff_step``) are not parameters: they do not change the graph (see
    :data:`LEGACY_FIELDS`). The 8 Å that matters is the model's RBF range,
    :attr:`matxfer.training.config.ModelSettings.cutoff`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    neighbor_strategy: Literal["k-nearest"] = "k-nearest"
    max_neighbors: int = Field(12, ge=1)
    max_cutoff: float = Field(30.0, gt=0)
    line_graph: bool = True

    @model_validator(mode="before")
    @classmethod
    def _drop_legacy_fields(cls, data: Any) -> Any:
        if isinstance(data, dict) and LEGACY_FIELDS.keys() & data.keys():
            data = {k: v for k, v in data.items() if k not in LEGACY_FIELDS}
        return data

    def cache_token(self) -> str:
        """A string that changes whenever any parameter or the format changes."""
        fields = self.model_dump(mode="json")
        # The field order and legacy values of format 1, so existing caches keep their keys.
        keyed = {
            "neighbor_strategy": fields["neighbor_strategy"],
            "cutoff": LEGACY_FIELDS["cutoff"],
            "max_neighbors": fields["max_neighbors"],
            "max_cutoff": fields["max_cutoff"],
            "cutoff_step": LEGACY_FIELDS["cutoff_step"],
            "line_graph": fields["line_graph"],
        }
        return f"v{GRAPH_FORMAT_VERSION}:" + json.dumps(keyed, separators=(",", ":"))
