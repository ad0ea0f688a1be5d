"""One ALIGNN layer: an edge-gated convolution on the atom graph, then one on the line graph."""

from __future__ import annotations

from torch import Tensor, nn

from matxfer.models.edge_gated_conv import EdgeGatedGraphConv


class ALIGNNConv(nn.Module):
    r"""ALIGNN layer (Choudhary & DeCost, npj Comput. Mater. 7, 185 (2021),
    doi:10.1038/s41524-021-00650-1, Fig. 1).

    With atom features :math:`x`, bond features :math:`y` and angle (bond
    pair) features :math:`z`, in the reference's order:

    .. math::
        x', m &= \mathrm{EGGC}_{\text{atom graph}}(x, y)
            &&\text{(2-body: atoms updated from bonds)} \\
        y', z' &= \mathrm{EGGC}_{\text{line graph}}(m, z)
            &&\text{(3-body: bonds updated from angles)}

    where :math:`m` are the bond features after the atom-graph update and
    EGGC is :class:`~matxfer.models.edge_gated_conv.EdgeGatedGraphConv`.

    Args:
        in_features: Input width of ``x``, ``y``, ``z``.
        out_features: Output width.
        norm: ``"batch"``, ``"layer"`` or ``"none"`` (default: ``"batch"``).

    Attributes:
        node_update: The atom-graph (2-body) convolution.
        edge_update: The line-graph (3-body) convolution.

    Shapes:
        - x: ``[N, F]``, y: ``[E, F]``, z: ``[T, F]``, edge_index: ``[2, E]``,
          lg_edge_index: ``[2, T]`` (bond → bond, indices into the E bonds)
        - output: ``([N, F'], [E, F'], [T, F'])``
    """

    def __init__(self, in_features: int, out_features: int, norm: str = "batch") -> None:
        super().__init__()
        self.node_update = EdgeGatedGraphConv(in_features, out_features, norm=norm)
        self.edge_update = EdgeGatedGraphConv(out_features, out_features, norm=norm)

    def reset_parameters(self) -> None:
        self.node_update.reset_parameters()
        self.edge_update.reset_parameters()

    def forward(
        self, x: Tensor, y: Tensor, z: Tensor, edge_index: Tensor, lg_edge_index: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        x, m = self.node_update(x, y, edge_index)
        y, z = self.edge_update(m, z, lg_edge_index)
        return x, y, z

    def __repr__(self) -> str:
        conv = self.node_update
        return (
            f"{self.__class__.__name__}({conv.in_features}, {self.edge_update.out_features}, "
            f"norm={conv.norm_kind!r})"
        )
