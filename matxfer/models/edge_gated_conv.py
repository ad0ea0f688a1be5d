"""Edge-gated graph convolution, the building block of ALIGNN."""

from __future__ import annotations

from torch import Tensor, nn

from matxfer.models.mlp import check_norm, make_norm, reset_module
from matxfer.models.ops.block_norm import norm_silu
from matxfer.models.ops.fused_ops import linear
from matxfer.models.ops.gated_edges import edge_gated_update


class EdgeGatedGraphConv(nn.Module):
    r"""Edge-gated graph convolution with residual connections.

    From Bresson & Laurent, "Residual Gated Graph ConvNets" (arXiv:1711.07553),
    in the form used by ALIGNN (Choudhary & DeCost, npj Comput. Mater. 7, 185
    (2021), doi:10.1038/s41524-021-00650-1, Eqs. 1–3). For an edge
    :math:`i \to j` with node features :math:`x` and edge features :math:`y`:

    .. math::
        m_{ij} &= W_{sg} x_i + W_{dg} x_j + W_{eg} y_{ij} + b \\
        h_j &= \frac{\sum_{i \to j} \sigma(m_{ij}) \odot W_{du} x_i}
                    {\sum_{i \to j} \sigma(m_{ij}) + 10^{-6}} \\
        x'_j &= x_j + \mathrm{SiLU}\big(\mathrm{Norm}(W_{su} x_j + h_j)\big) \\
        y'_{ij} &= y_{ij} + \mathrm{SiLU}\big(\mathrm{Norm}(m_{ij})\big)

    (residual terms only when ``residual=True``). Parameter names follow the
    reference (``src_gate`` = :math:`W_{sg}`, ``dst_gate``, ``edge_gate``,
    ``src_update``, ``dst_update``); ``norm_nodes`` / ``norm_edges`` are its
    ``bn_nodes`` / ``bn_edges``.

    On ALIGNN's line graph the "nodes" are bonds and the "edges" are bond
    pairs (angles), so the per-edge work dominates; it runs in
    :func:`~matxfer.models.ops.gated_edges.edge_gated_update`, blockwise and
    keeping only :math:`y` and :math:`m` for the backward pass.

    Args:
        in_features: Input width of node and edge features.
        out_features: Output width (must equal ``in_features`` with ``residual``).
        norm: ``"batch"`` (2021 ALIGNN), ``"layer"`` (pure-PyTorch reference
            variant) or ``"none"`` (default: ``"batch"``).
        residual: Add the inputs to the outputs (default: ``True``).

    Shapes:
        - x: ``[N, in_features]``, y: ``[E, in_features]``,
          edge_index: ``[2, E]`` (source, destination)
        - output: ``([N, out_features], [E, out_features])``
    """

    def __init__(
        self, in_features: int, out_features: int, norm: str = "batch", residual: bool = True
    ) -> None:
        super().__init__()
        if residual and in_features != out_features:
            raise ValueError(
                f"residual connections need in_features == out_features, "
                f"got {in_features} and {out_features}"
            )
        self.in_features = in_features
        self.out_features = out_features
        self.norm_kind = check_norm(norm)
        self.residual = residual
        self.src_gate = nn.Linear(in_features, out_features)
        self.dst_gate = nn.Linear(in_features, out_features)
        self.edge_gate = nn.Linear(in_features, out_features)
        self.norm_edges = make_norm(norm, out_features)
        self.src_update = nn.Linear(in_features, out_features)
        self.dst_update = nn.Linear(in_features, out_features)
        self.norm_nodes = make_norm(norm, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.children():
            reset_module(module)

    def forward(self, x: Tensor, y: Tensor, edge_index: Tensor) -> tuple[Tensor, Tensor]:
        """Update node features ``x`` and edge features ``y``; see the class docstring."""
        src, dst = edge_index[0], edge_index[1]
        # Node-level terms; the edge gate's bias is folded into the source term.
        src_term = linear(x, self.src_gate.weight, self.src_gate.bias + self.edge_gate.bias)
        dst_term = linear(x, self.dst_gate.weight, self.dst_gate.bias)
        value = linear(x, self.dst_update.weight, self.dst_update.bias)
        h, y_new = edge_gated_update(
            y, src_term, dst_term, value, self.edge_gate.weight, src, dst,
            self.norm_edges, self.residual,
        )  # fmt: skip
        x_pre = linear(x, self.src_update.weight, self.src_update.bias, add=h)
        x_new = norm_silu(x_pre, self.norm_nodes, x if self.residual else None)
        return x_new, y_new

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_features}, {self.out_features}, "
            f"norm={self.norm_kind!r}, residual={self.residual})"
        )
