"""ALIGNN: the Atomistic Line Graph Neural Network, on PyTorch Geometric batches."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch_geometric.utils import scatter

from matxfer.errors import ConfigError
from matxfer.models.alignn_conv import ALIGNNConv
from matxfer.models.edge_gated_conv import EdgeGatedGraphConv
from matxfer.models.embedding import AtomEmbedding, RBFEmbedding
from matxfer.models.features import CGCNN_NUM_FEATURES
from matxfer.models.mlp import MLPHead, check_norm

#: Last bond-length RBF centre in Å: the reference ALIGNN's 8 Å (also the first
#: radius of its neighbour search).
RBF_CUTOFF = 8.0


class ALIGNN(nn.Module):
    r"""Atomistic Line Graph Neural Network.

    K. Choudhary & B. DeCost, "Atomistic Line Graph Neural Network for improved
    materials property predictions", npj Comput. Mater. 7, 185 (2021),
    doi:10.1038/s41524-021-00650-1; layer for layer the reference
    ``alignn`` package's ``ALIGNN`` (``norm="batch"``) and
    ``ALIGNNAtomWisePure`` (``norm="layer"``), without DGL.

    For a crystal with atoms :math:`Z_i`, bonds :math:`i \to j` of length
    :math:`d_{ij}` and bond pairs :math:`(ij, jk)` with angle cosine
    :math:`\cos\theta_{ijk}`:

    .. math::
        x^0_i &= \mathrm{MLP}(f_{\mathrm{CGCNN}}(Z_i)), \quad
        y^0_{ij} = \mathrm{MLP}^2(\mathrm{RBF}_{80}(d_{ij})), \quad
        z^0_{ijk} = \mathrm{MLP}^2(\mathrm{RBF}_{40}(\cos\theta_{ijk})) \\
        (x, y, z) &\leftarrow \mathrm{ALIGNNConv}(x, y, z)
            \quad (\texttt{alignn\_layers} \text{ times}) \\
        (x, y) &\leftarrow \mathrm{EGGC}(x, y)
            \quad (\texttt{gcn\_layers} \text{ times}) \\
        \hat{y} &= \mathrm{head}\Big(\tfrac{1}{N} \textstyle\sum_i x_i\Big)

    Args:
        num_outputs: Number of predicted properties :math:`P` (default: ``1``).
        alignn_layers: ALIGNN layers (atom graph + line graph) (default: ``4``).
        gcn_layers: Edge-gated convolutions on the atom graph only (default: ``4``).
        hidden_features: Width of all node/edge/angle features (default: ``256``).
        embedding_features: Intermediate width of the bond and angle
            embeddings (default: ``64``).
        edge_input_features: RBF centres for bond lengths (default: ``80``).
        triplet_input_features: RBF centres for angle cosines (default: ``40``).
        atom_input_features: Atom feature width; only the 92 CGCNN features
            exist (default: ``92``).
        cutoff: Last bond-length RBF centre in Å (default: :data:`RBF_CUTOFF`, 8 Å).
        norm: ``"batch"`` (2021 ALIGNN), ``"layer"`` (pure-PyTorch reference
            variant) or ``"none"`` (default: ``"batch"``).
        head_hidden_layers: Hidden MLP blocks in the head (default: ``0``).
        head_hidden_features: Their width; ``None`` = ``hidden_features``
            (default: ``None``).
        head_norm: Their normalisation (default: ``"none"``).

    Attributes:
        atom_embedding, edge_embedding, angle_embedding: Input embeddings.
        alignn_layers: ``ModuleList`` of :class:`ALIGNNConv`.
        gcn_layers: ``ModuleList`` of :class:`EdgeGatedGraphConv`.
        head: :class:`MLPHead`; replace it for transfer learning.

    Shapes:
        - input: a :class:`~matxfer.graphs.data.CrystalGraph` or a PyG
          ``Batch`` of them (``z``, ``edge_index``, ``edge_vec``,
          ``lg_edge_index``, ``angle_cos``, ``batch``)
        - output: ``[B, num_outputs]`` (never squeezed)
    """

    #: Submodule names of each layer group, for freezing and re-initialising.
    LAYER_GROUPS: ClassVar[dict[str, tuple[str, ...]]] = {
        "embedding": ("atom_embedding", "edge_embedding", "angle_embedding"),
        "alignn": ("alignn_layers",),
        "gcn": ("gcn_layers",),
        "head": ("head",),
    }

    def __init__(
        self,
        num_outputs: int = 1,
        alignn_layers: int = 4,
        gcn_layers: int = 4,
        hidden_features: int = 256,
        embedding_features: int = 64,
        edge_input_features: int = 80,
        triplet_input_features: int = 40,
        atom_input_features: int = CGCNN_NUM_FEATURES,
        cutoff: float = RBF_CUTOFF,
        norm: str = "batch",
        head_hidden_layers: int = 0,
        head_hidden_features: int | None = None,
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        if atom_input_features != CGCNN_NUM_FEATURES:
            raise ConfigError(
                f"atom_input_features must be {CGCNN_NUM_FEATURES} (CGCNN features), "
                f"got {atom_input_features}"
            )
        for name, value in (("alignn_layers", alignn_layers), ("gcn_layers", gcn_layers)):
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if cutoff <= 0:
            raise ConfigError(f"cutoff must be > 0 Å, got {cutoff}")
        self.hidden_features = hidden_features
        self.embedding_features = embedding_features
        self.edge_input_features = edge_input_features
        self.triplet_input_features = triplet_input_features
        self.cutoff = float(cutoff)
        self.norm = check_norm(norm)

        self.atom_embedding = AtomEmbedding(hidden_features, norm)
        self.edge_embedding = RBFEmbedding(
            0.0, self.cutoff, edge_input_features, embedding_features, hidden_features, norm
        )
        self.angle_embedding = RBFEmbedding(
            -1.0, 1.0, triplet_input_features, embedding_features, hidden_features, norm
        )
        self.alignn_layers = nn.ModuleList(
            ALIGNNConv(hidden_features, hidden_features, norm) for _ in range(alignn_layers)
        )
        self.gcn_layers = nn.ModuleList(
            EdgeGatedGraphConv(hidden_features, hidden_features, norm) for _ in range(gcn_layers)
        )
        self.head: nn.Module = MLPHead(
            hidden_features, num_outputs, head_hidden_layers, head_hidden_features, head_norm
        )

    def reset_parameters(self) -> None:
        """Re-initialise every layer (as at construction)."""
        self.atom_embedding.reset_parameters()
        self.edge_embedding.reset_parameters()
        self.angle_embedding.reset_parameters()
        for layer in (*self.alignn_layers, *self.gcn_layers):
            layer.reset_parameters()
        reset = getattr(self.head, "reset_parameters", None)
        if callable(reset):
            reset()

    @property
    def num_outputs(self) -> int:
        return int(self._head_config()["num_outputs"])

    def embed(self, graph: Any) -> Tensor:
        """Mean-pooled atom features after all convolutions (the head's input).

        Args:
            graph: A ``CrystalGraph`` or a ``Batch`` of them.

        Returns:
            ``[B, hidden_features]``.
        """
        x = self.atom_embedding(graph.z)
        y = self.edge_embedding(graph.edge_vec.norm(dim=-1))
        if len(self.alignn_layers) > 0:
            z = self.angle_embedding(graph.angle_cos.clamp(-1.0, 1.0))
            for alignn_layer in self.alignn_layers:
                x, y, z = alignn_layer(x, y, z, graph.edge_index, graph.lg_edge_index)
        for gcn_layer in self.gcn_layers:
            x, y = gcn_layer(x, y, graph.edge_index)
        node_graph, num_graphs = graph_assignment(graph, x.size(0), x.device)
        return scatter(x, node_graph, dim=0, dim_size=num_graphs, reduce="mean")

    def forward(self, graph: Any) -> Tensor:
        """Predict ``[B, num_outputs]`` for a graph or a batch of graphs."""
        return self.head(self.embed(graph))

    def _head_config(self) -> dict[str, Any]:
        config = getattr(self.head, "config_dict", None)
        if not callable(config):
            raise ConfigError(
                f"the model's head is a {type(self.head).__name__}, which cannot describe "
                "itself; use matxfer.models.MLPHead"
            )
        return config()

    def config_dict(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON-able) that rebuild this architecture."""
        head = self._head_config()
        if head["in_features"] != self.hidden_features:
            raise ConfigError(
                f"head input width {head['in_features']} != hidden_features {self.hidden_features}"
            )
        return {
            "num_outputs": head["num_outputs"],
            "alignn_layers": len(self.alignn_layers),
            "gcn_layers": len(self.gcn_layers),
            "hidden_features": self.hidden_features,
            "embedding_features": self.embedding_features,
            "edge_input_features": self.edge_input_features,
            "triplet_input_features": self.triplet_input_features,
            "atom_input_features": self.atom_embedding.in_features,
            "cutoff": self.cutoff,
            "norm": self.norm,
            "head_hidden_layers": head["hidden_layers"],
            "head_hidden_features": head["hidden_features"],
            "head_norm": head["norm"],
        }

    @classmethod
    def from_config_dict(cls, config: dict[str, Any]) -> ALIGNN:
        """Build a freshly initialised model from :meth:`config_dict` output.

        Raises:
            ConfigError: on unknown keys (names them and lists the valid ones).
        """
        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ConfigError(f"unknown ALIGNN config keys {unknown}; valid keys: {sorted(valid)}")
        return cls(**config)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(alignn_layers={len(self.alignn_layers)}, "
            f"gcn_layers={len(self.gcn_layers)}, hidden_features={self.hidden_features}, "
            f"embedding_features={self.embedding_features}, norm={self.norm!r}, "
            f"num_outputs={self.num_outputs})"
        )


def graph_assignment(graph: Any, num_nodes: int, device: torch.device) -> tuple[Tensor, int]:
    """Graph index of every atom and the number of graphs (a lone graph has no ``batch``)."""
    batch = getattr(graph, "batch", None)
    if batch is None:
        return torch.zeros(num_nodes, dtype=torch.long, device=device), 1
    num_graphs = getattr(graph, "num_graphs", None)
    if num_graphs is None:
        num_graphs = int(batch.max()) + 1 if batch.numel() else 0
    return batch, int(num_graphs)
