"""Tiny synthetic ALIGNN graphs for model tests: random bonds, line graph by DGL's rule."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from matxfer.graphs.data import CrystalGraph


def line_graph(edge_index: Tensor) -> Tensor:
    """All bond pairs (e1, e2) with dst(e1) == src(e2), backtracking included (DGL's rule)."""
    src, dst = edge_index
    same_atom = dst.unsqueeze(1) == src.unsqueeze(0)  # [E, E]: e1 ends where e2 starts
    return same_atom.nonzero().t().contiguous()


def random_graph(
    num_atoms: int, num_bonds: int, seed: int, with_target: bool = True
) -> CrystalGraph:
    """A random crystal-like graph: ``num_bonds`` bonds, each in both directions."""
    gen = torch.Generator().manual_seed(seed)
    i = torch.randint(0, num_atoms, (num_bonds,), generator=gen)
    j = torch.randint(0, num_atoms, (num_bonds,), generator=gen)
    direction = torch.randn(num_bonds, 3, generator=gen)
    length = 1.5 + 5.0 * torch.rand(num_bonds, 1, generator=gen)
    vec = direction / direction.norm(dim=1, keepdim=True) * length
    edge_index = torch.stack([torch.cat([i, j]), torch.cat([j, i])])
    edge_vec = torch.cat([vec, -vec])
    lg_edge_index = line_graph(edge_index)
    v1, v2 = edge_vec[lg_edge_index[0]], edge_vec[lg_edge_index[1]]
    angle_cos = -(v1 * v2).sum(1) / (v1.norm(dim=1) * v2.norm(dim=1))
    graph = CrystalGraph(
        z=torch.randint(1, 95, (num_atoms,), generator=gen),
        edge_index=edge_index,
        edge_vec=edge_vec,
        lg_edge_index=lg_edge_index,
        angle_cos=angle_cos,
        num_nodes=num_atoms,
    )
    if with_target:
        graph.y = torch.randn(1, 2, generator=gen)
    return graph


def permuted(graph: CrystalGraph, seed: int) -> CrystalGraph:
    """The same crystal with atoms, bonds and bond pairs listed in a random order."""
    gen = torch.Generator().manual_seed(seed)
    atom_perm = torch.randperm(graph.num_nodes, generator=gen)
    bond_perm = torch.randperm(graph.edge_index.size(1), generator=gen)
    pair_perm = torch.randperm(graph.lg_edge_index.size(1), generator=gen)
    new_atom = torch.empty_like(atom_perm)
    new_atom[atom_perm] = torch.arange(atom_perm.numel())
    new_bond = torch.empty_like(bond_perm)
    new_bond[bond_perm] = torch.arange(bond_perm.numel())
    return CrystalGraph(
        z=graph.z[atom_perm],
        edge_index=new_atom[graph.edge_index[:, bond_perm]],
        edge_vec=graph.edge_vec[bond_perm],
        lg_edge_index=new_bond[graph.lg_edge_index[:, pair_perm]],
        angle_cos=graph.angle_cos[pair_perm],
        num_nodes=graph.num_nodes,
    )


def random_norm(kind: str, width: int, momentum: float | None = 0.1) -> nn.Module:
    """A norm of ``kind`` (``layer``, ``batch``, ``batch-eval``, ``none``) with random
    affine parameters (and, for ``batch-eval``, random running statistics)."""
    if kind == "none":
        return nn.Identity()
    norm = nn.LayerNorm(width) if kind == "layer" else nn.BatchNorm1d(width, momentum=momentum)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    if kind == "batch-eval":
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.eval()
    return norm
