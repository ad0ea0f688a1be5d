"""Input embeddings of ALIGNN: atoms from CGCNN features, bonds and angles from RBF expansions."""

from __future__ import annotations

from torch import Tensor, nn

from matxfer.errors import DataError
from matxfer.models.features import MAX_ATOMIC_NUMBER, RBFExpansion, cgcnn_feature_table
from matxfer.models.mlp import MLPLayer


class AtomEmbedding(nn.Module):
    r"""Atom embedding :math:`x_i = \mathrm{MLP}(f_{\mathrm{CGCNN}}(Z_i))`.

    The 92 CGCNN features per element are a fixed, non-persistent buffer
    (``table``), so the lookup is one tensor index and checkpoints hold only
    learned weights.

    Args:
        out_features: Embedding width (ALIGNN: the hidden width).
        norm: Normalisation of the MLP layer (default: ``"batch"``).

    Shapes:
        ``z``: ``[N]`` long atomic numbers in 1..118 → ``[N, out_features]``.
    """

    table: Tensor

    def __init__(self, out_features: int, norm: str = "batch") -> None:
        super().__init__()
        self.register_buffer("table", cgcnn_feature_table(), persistent=False)
        self.mlp = MLPLayer(self.table.size(1), out_features, norm)

    @property
    def in_features(self) -> int:
        return int(self.table.size(1))

    def reset_parameters(self) -> None:
        self.mlp.reset_parameters()

    def forward(self, z: Tensor) -> Tensor:
        if z.numel() and (int(z.min()) < 1 or int(z.max()) > MAX_ATOMIC_NUMBER):
            bad = sorted({int(v) for v in z[(z < 1) | (z > MAX_ATOMIC_NUMBER)].tolist()})
            raise DataError(
                f"atomic numbers must be between 1 and {MAX_ATOMIC_NUMBER}; the graph has {bad}"
            )
        return self.mlp(self.table.index_select(0, z))


class RBFEmbedding(nn.Module):
    r"""Scalar embedding: RBF expansion, then two MLP layers.

    .. math:: e = \mathrm{MLP}_{K_e \to H}\big(\mathrm{MLP}_{K \to K_e}(\mathrm{RBF}_K(d))\big)

    Used for bond lengths (K = 80 centres on 0–8 Å) and bond-angle cosines
    (K = 40 centres on −1..1).

    Args:
        vmin: First RBF centre.
        vmax: Last RBF centre.
        bins: Number of RBF centres :math:`K`.
        embedding_features: Intermediate width :math:`K_e`.
        out_features: Output width :math:`H`.
        norm: Normalisation of the MLP layers (default: ``"batch"``).

    Shapes:
        ``[M]`` → ``[M, out_features]``.
    """

    def __init__(
        self,
        vmin: float,
        vmax: float,
        bins: int,
        embedding_features: int,
        out_features: int,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.rbf = RBFExpansion(vmin, vmax, bins)
        self.mlp = nn.Sequential(
            MLPLayer(bins, embedding_features, norm),
            MLPLayer(embedding_features, out_features, norm),
        )

    def reset_parameters(self) -> None:
        for layer in self.mlp:
            layer.reset_parameters()

    def forward(self, value: Tensor) -> Tensor:
        return self.mlp(self.rbf(value))
