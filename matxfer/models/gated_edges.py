r"""The per-edge half of the edge-gated convolution, computed in cache-sized row chunks.

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
BatchNorm needs statistics over all rows; they are combined from per-block
statistics (Chan et al.'s parallel variance), which costs one extra pass.
:func:`edge_gated_update_reference` is the same computation in plain
autograd: the ground truth in tests, and what runs under ``torch.compile``
and CPU autocast.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from matxfer.models.fused_ops import GATE_EPS, linear, onednn_matmul, plain_autograd, scatter_sum

#: Elements per row block (2 MB of float32): the block's temporaries fit in L2/L3.
BLOCK_ELEMENTS = 2048 * 256

aten = torch.ops.aten


def _blocks(rows: int, width: int) -> list[slice]:
    step = max(1, BLOCK_ELEMENTS // max(width, 1))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


class _NormState:
    """How the edge normalisation maps ``m`` to ``a``, resolved once per call.

    ``kind``: ``"layer"`` (per-row statistics), ``"batch"`` (statistics over all
    rows, training mode), ``"affine"`` (BatchNorm in eval mode: fixed
    scale/shift) or ``"none"``.
    """

    def __init__(self, norm: nn.Module) -> None:
        self.norm = norm
        self.weight: Tensor | None = getattr(norm, "weight", None)
        self.bias: Tensor | None = getattr(norm, "bias", None)
        if isinstance(norm, nn.LayerNorm):
            self.kind = "layer"
        elif isinstance(norm, nn.BatchNorm1d):
            self.kind = "batch" if norm.training or norm.running_mean is None else "affine"
        elif isinstance(norm, nn.Identity):
            self.kind = "none"
        else:
            raise TypeError(f"unsupported edge normalisation {type(norm).__name__}")

    def scale_shift(self, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor]:
        scale = invstd if self.weight is None else invstd * self.weight
        shift = -mean * scale if self.bias is None else self.bias - mean * scale
        return scale, shift


def _batch_statistics(m: Tensor, blocks: list[slice]) -> tuple[Tensor, Tensor]:
    """Column mean and biased variance of ``m`` from per-block ones (Chan et al. 1979)."""
    count, mean, m2 = 0, torch.zeros_like(m[0]), torch.zeros_like(m[0])
    for block in blocks:
        var_b, mean_b = torch.var_mean(m[block], dim=0, unbiased=False)
        n_b = block.stop - block.start
        delta = mean_b - mean
        total = count + n_b
        mean = mean + delta * (n_b / total)
        m2 = m2 + var_b * n_b + delta.square() * (count * n_b / total)
        count = total
    return mean, m2 / max(count, 1)


def _update_running_stats(norm: nn.BatchNorm1d, mean: Tensor, var: Tensor, rows: int) -> None:
    if norm.running_mean is None or norm.running_var is None:
        return
    momentum = norm.momentum
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if momentum is None:
            momentum = 1.0 / float(norm.num_batches_tracked)
    unbiased = var * (rows / max(rows - 1, 1))
    norm.running_mean.lerp_(mean, momentum)
    norm.running_var.lerp_(unbiased, momentum)


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
        state: _NormState,
        residual: bool,
    ) -> tuple[Tensor, Tensor]:
        rows, width = y.shape
        num_nodes = value.size(0)
        blocks = _blocks(rows, width)
        table = torch.cat([src_term, dst_term])
        pairs = torch.stack([src, dst + num_nodes], dim=1).view(-1)
        m = torch.empty_like(y)
        numerator = y.new_zeros(num_nodes, width)
        denominator = y.new_zeros(num_nodes, width)
        for block in blocks:
            start, stop = block.start, block.stop
            # s_i + d_j as bags of two rows: one pass instead of two gathers and an add.
            offsets = torch.arange(0, 2 * (stop - start), 2, device=y.device)
            both = F.embedding_bag(pairs[2 * start : 2 * stop], table, offsets, mode="sum")
            m_block = onednn_matmul(y[block], weight, None, both)
            m[block] = m_block
            index = dst[block].view(-1, 1).expand_as(m_block)
            sigma = torch.sigmoid(m_block)
            denominator.scatter_add_(0, index, sigma)
            numerator.scatter_add_(0, index, sigma.mul_(value.index_select(0, src[block])))
        h = numerator.div_(denominator.add_(GATE_EPS))

        y_new = torch.empty_like(y)
        stat1 = stat2 = y.new_empty(0)
        if state.kind == "batch":
            mean, var = _batch_statistics(m, blocks)
            _update_running_stats(state.norm, mean, var, rows)  # type: ignore[arg-type]
            stat1, stat2 = mean, torch.rsqrt(var + state.norm.eps)
        elif state.kind == "affine":
            stat1 = state.norm.running_mean  # type: ignore[assignment]
            stat2 = torch.rsqrt(state.norm.running_var + state.norm.eps)  # type: ignore[operator]
        elif state.kind == "layer":
            stat1, stat2 = y.new_empty(rows, 1), y.new_empty(rows, 1)
        scale_shift = state.scale_shift(stat1, stat2) if state.kind in ("batch", "affine") else None
        for block in blocks:
            a = _normalise(m[block], state, stat1, stat2, scale_shift, block)
            out = F.silu(a, inplace=True)
            if residual:
                torch.add(out, y[block], out=y_new[block])
            else:
                y_new[block] = out
        ctx.state, ctx.residual, ctx.blocks = state, residual, blocks
        ctx.save_for_backward(y, m, value, weight, src, dst, denominator, h, stat1, stat2)
        return h, y_new

    @staticmethod
    def backward(ctx: Any, grad_h: Tensor, grad_y_new: Tensor) -> tuple[Tensor | None, ...]:
        y, m, value, weight, src, dst, denominator, h, stat1, stat2 = ctx.saved_tensors
        state: _NormState = ctx.state
        blocks: list[slice] = ctx.blocks
        need = ctx.needs_input_grad
        grad_y_new = grad_y_new.contiguous()
        # h = num / den, so dh/dnum = 1/den and dh/dden = -h/den (node-level).
        grad_num = grad_h / denominator
        grad_den = (grad_num * h).neg_()
        scale_shift = state.scale_shift(stat1, stat2) if state.kind in ("batch", "affine") else None
        bn_sums = _batch_norm_grad_sums(m, grad_y_new, stat1, stat2, scale_shift, blocks)
        bn_means = None if bn_sums is None else (bn_sums[0] / m.size(0), bn_sums[1] / m.size(0))

        grad_y = torch.empty_like(y) if need[0] else None
        grad_src = torch.zeros_like(value)
        grad_dst = torch.zeros_like(value)
        grad_value = torch.zeros_like(value)
        grad_weight = torch.zeros_like(weight)
        grad_nw = torch.zeros_like(state.weight) if state.weight is not None else None
        grad_nb = torch.zeros_like(state.bias) if state.bias is not None else None
        weight_t = weight.t().contiguous()
        for block in blocks:
            m_block = m[block]
            a = _normalise(m_block, state, stat1, stat2, scale_shift, None)
            grad_a = aten.silu_backward(grad_y_new[block], a)
            del a
            grad_m, w_part, b_part = _norm_backward(
                grad_a, m_block, state, stat1, stat2, bn_means, block
            )
            if grad_nw is not None and w_part is not None:
                grad_nw += w_part
            if grad_nb is not None and b_part is not None:
                grad_nb += b_part
            del grad_a

            src_b, dst_b = src[block], dst[block]
            sigma = torch.sigmoid(m_block)
            grad_num_e = grad_num.index_select(0, dst_b)
            grad_sigma = grad_den.index_select(0, dst_b)
            grad_sigma.addcmul_(grad_num_e, value.index_select(0, src_b))
            src_index = src_b.view(-1, 1).expand_as(sigma)
            grad_value.scatter_add_(0, src_index, grad_num_e.mul_(sigma))
            grad_m.add_(aten.sigmoid_backward(grad_sigma, sigma))
            del sigma, grad_num_e, grad_sigma

            if grad_y is not None:
                grad_y[block] = onednn_matmul(
                    grad_m, weight_t, None, grad_y_new[block] if ctx.residual else None
                )
            grad_weight.addmm_(grad_m.t(), y[block])
            grad_src.scatter_add_(0, src_index, grad_m)
            grad_dst.scatter_add_(0, dst_b.view(-1, 1).expand_as(grad_m), grad_m)
        if bn_sums is not None:
            grad_nw = bn_sums[1] if grad_nw is not None else None
            grad_nb = bn_sums[0] if grad_nb is not None else None
        return (
            grad_y, grad_src, grad_dst, grad_value, grad_weight, grad_nw, grad_nb,
            None, None, None, None,
        )  # fmt: skip


def _normalise(
    m_block: Tensor,
    state: _NormState,
    stat1: Tensor,
    stat2: Tensor,
    scale_shift: tuple[Tensor, Tensor] | None,
    block: slice | None,
) -> Tensor:
    """``Norm(m)`` of one block as a new tensor; LayerNorm stores its row
    statistics into ``stat1``/``stat2`` at ``block`` unless ``block`` is None."""
    if state.kind == "layer":
        a, mean, rstd = aten.native_layer_norm(
            m_block, [m_block.size(1)], state.weight, state.bias, state.norm.eps
        )
        if block is not None:
            stat1[block], stat2[block] = mean, rstd
        return a
    if scale_shift is not None:
        return torch.addcmul(scale_shift[1], m_block, scale_shift[0])
    return m_block.clone()


def _batch_norm_grad_sums(
    m: Tensor,
    grad_y_new: Tensor,
    mean: Tensor,
    invstd: Tensor,
    scale_shift: tuple[Tensor, Tensor] | None,
    blocks: list[slice],
) -> tuple[Tensor, Tensor] | None:
    """Column sums of ``g_a`` and ``g_a ⊙ x̂`` (BatchNorm's backward needs them over all rows)."""
    if scale_shift is None:
        return None
    sum_grad, sum_grad_xhat = torch.zeros_like(mean), torch.zeros_like(mean)
    for block in blocks:
        a = torch.addcmul(scale_shift[1], m[block], scale_shift[0])
        grad_a = aten.silu_backward(grad_y_new[block], a)
        sum_grad += grad_a.sum(0)
        sum_grad_xhat += (grad_a * (m[block] - mean)).sum(0) * invstd
    return sum_grad, sum_grad_xhat


def _norm_backward(
    grad_a: Tensor,
    m_block: Tensor,
    state: _NormState,
    stat1: Tensor,
    stat2: Tensor,
    bn_means: tuple[Tensor, Tensor] | None,
    block: slice,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Gradients of one block with respect to ``m`` (a new tensor; ``grad_a`` may be
    reused) and, for LayerNorm, its weight and bias."""
    if state.kind == "layer":
        mask = [True, state.weight is not None, state.bias is not None]
        return aten.native_layer_norm_backward(
            grad_a, m_block, [m_block.size(1)], stat1[block], stat2[block],
            state.weight, state.bias, mask,
        )  # fmt: skip
    if state.kind == "none":
        return grad_a, None, None
    scale = stat2 if state.weight is None else stat2 * state.weight
    if state.kind == "affine":
        return grad_a.mul_(scale), None, None
    assert bn_means is not None
    mean_grad, mean_grad_xhat = bn_means
    xhat = (m_block - stat1).mul_(stat2)
    # dL/dm = γ·invstd · (g - mean(g) - x̂ · mean(g ⊙ x̂)), means over all rows.
    return grad_a.sub_(mean_grad).sub_(xhat.mul_(mean_grad_xhat)).mul_(scale), None, None


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
    state = _NormState(norm)
    return _EdgeGatedUpdate.apply(
        y.contiguous(), src_term.contiguous(), dst_term.contiguous(), value.contiguous(), weight,
        state.weight, state.bias, src, dst, state, residual,
    )  # fmt: skip
