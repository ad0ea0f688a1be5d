r"""The per-edge half of the edge-gated convolution, computed in cache-sized row blocks.

On ALIGNN's line graph the edges are bond pairs: ~17,600 × 256 features per
batch of 16 phonon crystals, so each ``[E, F]`` pass over memory costs more
than the arithmetic in it. :func:`edge_gated_update` computes, for edges
:math:`i \to j` with features :math:`y_{ij}` and node terms :math:`s, d, v`,

.. math::
    m_{ij} &= W y_{ij} + s_i + d_j \\
    h_j &= \frac{\sum_{i \to j} \sigma(m_{ij}) \odot v_i}
                {\sum_{i \to j} \sigma(m_{ij}) + 10^{-6}} \\
    y'_{ij} &= y_{ij} + \mathrm{SiLU}(\mathrm{Norm}(m_{ij}))

forward and backward, one block of rows at a time, so the temporaries of a
block stay in cache and only :math:`y` and :math:`m` are kept for the
backward pass (plain autograd would keep five ``[E, F]`` tensors).
BatchNorm needs column statistics over all rows, so with it the rows are
visited twice (:class:`~matxfer.models.ops.block_norm.BlockNorm`).
Where the C kernels of :mod:`matxfer.models.ops.kernels` are built, each block's
elementwise work (s + d, gates, norm, SiLU, residual) and its sums over edges
into node tables run there, in one pass per row and direction (BLAS does the
matmuls); otherwise torch ops do it, with ``index_add_`` for the sums.
:func:`edge_gated_update_reference` is the same computation in plain
autograd: the ground truth in tests, and what runs under ``torch.compile``
and CPU autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from matxfer.models.ops import kernels
from matxfer.models.ops.block_norm import BlockNorm, row_blocks
from matxfer.models.ops.fused_ops import (
    GATE_EPS,
    linear,
    linear_no_grad,
    plain_autograd,
    scatter_sum,
)

aten = torch.ops.aten


class _EdgeGatedUpdate(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        y: Tensor,
        src_term: Tensor,
        dst_term: Tensor,
        value: Tensor,
        weight: Tensor,
        norm_weight: Tensor | None,
        norm_bias: Tensor | None,
        src: Tensor,
        dst: Tensor,
        norm_module: nn.Module,
        residual: bool,
    ) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        rows, width = y.shape
        num_nodes = value.size(0)
        blocks = row_blocks(rows, width)
        # m is kept as its blocks (no copy into one tensor); autograd never sees it.
        m_blocks: list[Tensor] = []
        y_new = torch.empty_like(y)
        # Gated sums of v (numerator) and of the gates (denominator), side by side.
        sums = y.new_zeros(num_nodes, 2 * width)
        norm = BlockNorm(norm_module, rows, y)
        fused = kernels.usable(y, value, src_term, dst_term) and all(
            index.dtype == torch.int64 and index.is_contiguous() for index in (src, dst)
        )
        if fused:
            parts = kernels.node_parts(y, num_nodes, 2 * width)
            for block in blocks:
                # The kernel adds s_i + d_j to W y in place, then gates and sums the rows.
                m_block = torch.mm(y[block], weight.t())
                gate = kernels.GateInputs(
                    src=src[block], dst=dst[block], value=value, table=sums, parts=parts,
                    s_term=src_term, d_term=dst_term,
                )  # fmt: skip
                out = y_new[block] if norm.row_wise else None  # BatchNorm: after statistics
                res = y[block] if residual and norm.row_wise else None
                norm.fused_forward(m_block, block, out, res, gate)
                m_blocks.append(m_block)
                if not norm.row_wise:
                    norm.accumulate(m_block)
            kernels.add_parts(sums, parts)
        else:
            for block, m_block in _gated_sums(
                y, src_term, dst_term, value, weight, src, dst, sums, blocks
            ):
                m_blocks.append(m_block)
                if norm.row_wise:  # normalise while the block is in cache
                    _edge_output(norm, m_block, y, y_new, block, residual)
                else:
                    norm.accumulate(m_block)
        denominator = sums[:, width:].add_(GATE_EPS)
        h = sums[:, :width].div_(denominator)
        if not norm.row_wise:
            norm.finish_statistics()
            for block, m_block in zip(blocks, m_blocks, strict=True):
                if fused:
                    norm.fused_forward(m_block, block, y_new[block], y[block] if residual else None)
                else:
                    _edge_output(norm, m_block, y, y_new, block, residual)
        ctx.norm_module, ctx.residual, ctx.blocks, ctx.m_blocks, ctx.fused = (
            norm_module, residual, blocks, m_blocks, fused,
        )  # fmt: skip
        ctx.save_for_backward(y, value, weight, src, dst, denominator, h, norm.stat1, norm.stat2)
        return h, y_new

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_h: Tensor | None, grad_y_new: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        y, value, weight, src, dst, denominator, h, stat1, stat2 = ctx.saved_tensors
        norm = BlockNorm(ctx.norm_module, y.size(0), y, (stat1, stat2))
        blocks: list[slice] = ctx.blocks
        m_blocks: list[Tensor] = ctx.m_blocks
        if grad_y_new is not None:
            grad_y_new = grad_y_new.contiguous()
            norm.backward_sums(m_blocks, grad_y_new, blocks)
        grad_num = grad_den = None
        if grad_h is not None:
            # h = num / den, so dh/dnum = 1/den and dh/dden = -h/den (node-level).
            grad_num = (grad_h / denominator).contiguous()
            grad_den = (grad_num * h).neg_()

        grad_y = torch.empty_like(y) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight)
        width = y.size(1)
        if ctx.fused:  # dL/ds | dL/dv | dL/dd, summed per node by the kernel
            node_grads = y.new_zeros(value.size(0), 3 * width)
            parts = kernels.node_parts(y, value.size(0), 3 * width)
        else:
            grad_src, grad_dst, grad_value = (torch.zeros_like(value) for _ in range(3))
        for block, m_block in zip(blocks, m_blocks, strict=True):
            src_b, dst_b = src[block], dst[block]
            grad_out = None if grad_y_new is None else grad_y_new[block]
            # With a residual, dL/dy = dL/dy' + dL/dm W: the kernel copies dL/dy' into
            # grad_y in its pass, and the matmul adds in place (no separate copy).
            copy_residual = (
                ctx.fused and grad_y is not None and ctx.residual and grad_out is not None
            )
            if ctx.fused:
                gate = kernels.GateInputs(
                    src=src_b, dst=dst_b, value=value, table=node_grads, parts=parts,
                    dnum=grad_num, dden=grad_den,
                )  # fmt: skip
                grad_m = norm.fused_backward(
                    m_block, grad_out, block, gate, grad_y[block] if copy_residual else None
                )
            else:
                grad_m = _torch_grad_m(
                    norm, m_block, grad_out, block, grad_num, grad_den, value, src_b, dst_b,
                    grad_value,
                )  # fmt: skip
                grad_src.index_add_(0, src_b, grad_m)
                grad_dst.index_add_(0, dst_b, grad_m)
            if grad_y is not None:  # dm/dy = W: written in place, no temporary
                if copy_residual:
                    grad_y[block].addmm_(grad_m, weight)
                elif ctx.residual and grad_y_new is not None:
                    torch.addmm(grad_y_new[block], grad_m, weight, out=grad_y[block])
                else:
                    torch.mm(grad_m, weight, out=grad_y[block])
            grad_weight.addmm_(grad_m.t(), y[block])
        if ctx.fused:
            norm.fused_finish()
            kernels.add_parts(node_grads, parts)
            grad_src, grad_value, grad_dst = node_grads.split(width, dim=1)
        return (
            grad_y, grad_src, grad_dst, grad_value, grad_weight, norm.grad_weight, norm.grad_bias,
            None, None, None, None,
        )  # fmt: skip


def _edge_output(
    norm: BlockNorm, m_block: Tensor, y: Tensor, y_new: Tensor, block: slice, residual: bool
) -> None:
    out = F.silu(norm.forward(m_block, block), inplace=True)
    if residual:
        torch.add(out, y[block], out=y_new[block])
    else:
        y_new[block] = out


def _gated_sums(
    y: Tensor,
    src_term: Tensor,
    dst_term: Tensor,
    value: Tensor,
    weight: Tensor,
    src: Tensor,
    dst: Tensor,
    sums: Tensor,
    blocks: list[slice],
) -> Iterator[tuple[slice, Tensor]]:
    """The torch code's forward: each block with its m, once its gated sums are in ``sums``."""
    width = y.size(1)
    table = torch.cat([src_term, dst_term])
    pairs = torch.stack([src, dst + value.size(0)], dim=1).view(-1)
    for block in blocks:
        start, stop = block.start, block.stop
        # s_i + d_j as bags of two rows: one pass instead of two gathers and an add.
        offsets = torch.arange(0, 2 * (stop - start), 2, device=y.device)
        both = F.embedding_bag(pairs[2 * start : 2 * stop], table, offsets, mode="sum")
        m_block = linear_no_grad(y[block], weight, None, both, add_in_place=True)
        sigma = torch.sigmoid(m_block)
        sums[:, width:].index_add_(0, dst[block], sigma)
        sigma.mul_(value.index_select(0, src[block]))
        sums[:, :width].index_add_(0, dst[block], sigma)
        yield block, m_block


def _torch_grad_m(
    norm: BlockNorm,
    m_block: Tensor,
    grad_out: Tensor | None,
    block: slice,
    grad_num: Tensor | None,
    grad_den: Tensor | None,
    value: Tensor,
    src: Tensor,
    dst: Tensor,
    grad_value: Tensor,
) -> Tensor:
    """The torch code's dL/dm of one block; adds the block's share of dL/dv."""
    grad_m = (
        torch.zeros_like(m_block) if grad_out is None else norm.backward(m_block, grad_out, block)
    )
    if grad_num is not None and grad_den is not None:
        sigma = torch.sigmoid(m_block)
        grad_num_e = grad_num.index_select(0, dst)
        grad_sigma = grad_den.index_select(0, dst)
        grad_sigma.addcmul_(grad_num_e, value.index_select(0, src))
        grad_value.index_add_(0, src, grad_num_e.mul_(sigma))
        grad_m.add_(aten.sigmoid_backward(grad_sigma, sigma))
    return grad_m


def edge_gated_update_reference(
    y: Tensor,
    src_term: Tensor,
    dst_term: Tensor,
    value: Tensor,
    weight: Tensor,
    src: Tensor,
    dst: Tensor,
    norm: nn.Module,
    residual: bool = True,
) -> tuple[Tensor, Tensor]:
    """:func:`edge_gated_update` in plain autograd (float32 sums even under autocast)."""
    m = linear(y, weight) + src_term.index_select(0, src) + dst_term.index_select(0, dst)
    # Sum in at least float32 (under autocast m and value may be bfloat16).
    dtype = torch.promote_types(m.dtype, torch.float32)
    sigma = torch.sigmoid(m.to(dtype))
    numerator = scatter_sum(value.to(dtype).index_select(0, src) * sigma, dst, value.size(0))
    h = numerator / (scatter_sum(sigma, dst, value.size(0)) + GATE_EPS)
    out = F.silu(norm(m))
    return h, (out + y) if residual else out


def edge_gated_update(
    y: Tensor,
    src_term: Tensor,
    dst_term: Tensor,
    value: Tensor,
    weight: Tensor,
    src: Tensor,
    dst: Tensor,
    norm: nn.Module,
    residual: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""Gate pre-activations, gated neighbour mean and edge update (see the module docstring).

    Args:
        y: ``[E, F]`` edge features.
        src_term: ``[N, F]`` node term :math:`s` added at each edge's source
            (include the edge layer's bias here).
        dst_term: ``[N, F]`` node term :math:`d` added at each edge's destination.
        value: ``[N, F]`` node values :math:`v` averaged into the destination.
        weight: ``[F, F]`` edge weight :math:`W` (``nn.Linear`` layout).
        src: ``[E]`` source node of each edge.
        dst: ``[E]`` destination node of each edge.
        norm: ``nn.LayerNorm``, ``nn.BatchNorm1d`` or ``nn.Identity`` over ``F``.
        residual: Add ``y`` to the edge output (default: ``True``).

    Returns:
        ``(h [N, F], y' [E, F])``.
    """
    if plain_autograd() or y.dtype not in (torch.float32, torch.float64) or y.device.type != "cpu":
        return edge_gated_update_reference(
            y, src_term, dst_term, value, weight, src, dst, norm, residual
        )
    return _EdgeGatedUpdate.apply(
        y.contiguous(), src_term.contiguous(), dst_term.contiguous(), value.contiguous(), weight,
        getattr(norm, "weight", None), getattr(norm, "bias", None), src, dst, norm, residual,
    )  # fmt: skip
