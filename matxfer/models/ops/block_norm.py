"""Normalisation + SiLU in cache-sized row blocks, keeping only the input for backward.

:class:`BlockNorm` applies LayerNorm, BatchNorm (training: column statistics
over all rows, so the rows are visited twice; eval: a fixed affine map) or
nothing to one block of rows at a time, forward and backward, so callers can
fuse it with other per-row work while the block is in cache
(:mod:`matxfer.models.ops.gated_edges`). :func:`linear_norm_silu` and
:func:`norm_silu` use it for ``SiLU(Norm(x W^T + b))`` (the MLP layers) and
``residual + SiLU(Norm(m))`` (node updates): autograd would keep the linear
output, the normalised tensor and its statistics; these keep the input only
and recompute the rest in the backward pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from matxfer.models.ops import kernels
from matxfer.models.ops.fused_ops import linear, linear_no_grad, plain_autograd

aten = torch.ops.aten

#: Elements per row block (2 MB of float32; fastest of 1k-8k rows × 256 on 1-2 threads).
BLOCK_ELEMENTS = 2048 * 256


def row_blocks(rows: int, width: int) -> list[slice]:
    """Consecutive row slices of about :data:`BLOCK_ELEMENTS` elements each."""
    step = max(1, BLOCK_ELEMENTS // max(width, 1))
    return [slice(start, min(rows, start + step)) for start in range(0, rows, step)]


class BlockNorm:
    """``Norm(m)`` of an ``[M, F]`` tensor, block by block, forward and backward.

    ``kind``: ``"layer"`` (LayerNorm: per-row statistics), ``"batch"``
    (BatchNorm in training: column statistics over all rows, so the blocks are
    visited twice), ``"affine"`` (BatchNorm in eval mode: fixed scale and
    shift) or ``"none"``. ``stat1``/``stat2`` are LayerNorm's row mean/rstd or
    BatchNorm's column mean/invstd; a new instance in the backward pass gets
    them back from the forward pass.
    """

    def __init__(
        self,
        norm: nn.Module,
        rows: int,
        like: Tensor,
        stats: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        self.norm = norm
        self.rows = rows
        self.weight: Tensor | None = getattr(norm, "weight", None)
        self.bias: Tensor | None = getattr(norm, "bias", None)
        self.eps = float(getattr(norm, "eps", 0.0))
        if isinstance(norm, nn.LayerNorm):
            self.kind = "layer"
        elif isinstance(norm, nn.BatchNorm1d):
            training = norm.training or norm.running_mean is None
            self.kind = "batch" if training else "affine"
        elif isinstance(norm, nn.Identity):
            self.kind = "none"
        else:
            raise TypeError(f"unsupported edge normalisation {type(norm).__name__}")
        self.row_wise = self.kind != "batch"
        self.grad_weight: Tensor | None = None
        self.grad_bias: Tensor | None = None
        self._scale_shift: tuple[Tensor, Tensor] | None = None
        self._grad_coefficients: tuple[Tensor, Tensor] | None = None  # backward_sums
        self._parts: Tensor | None = None  # fused LayerNorm weight/bias gradient sums
        self._moment_parts: Tensor | None = None  # fused BatchNorm column sums
        width = like.size(1)
        if stats is not None:
            self.stat1, self.stat2 = stats
        elif self.kind == "layer":
            self.stat1, self.stat2 = like.new_empty(rows, 1), like.new_empty(rows, 1)
        elif self.kind == "affine":
            self.stat1 = norm.running_mean.clone()  # type: ignore[union-attr]
            self.stat2 = torch.rsqrt(norm.running_var + self.eps)  # type: ignore[operator]
        else:  # "batch" fills them in finish_statistics(); "none" has none
            self.stat1, self.stat2 = like.new_empty(0), like.new_empty(0)
        self._count, self._mean, self._m2 = 0, like.new_zeros(width), like.new_zeros(width)
        self._shift = self._mean

    # -- BatchNorm statistics -------------------------------------------------
    def accumulate(self, m_block: Tensor) -> None:
        """Add a block to the column sums of ``m - K`` and ``(m - K)²``, with the
        shift ``K`` = the first block's mean (stable; ``torch.var_mean`` over
        columns is ~50x slower on CPU)."""
        if self._count == 0:
            self._shift = m_block.mean(0)
        if kernels.usable(m_block, self._shift):  # one pass instead of four
            if self._moment_parts is None:
                self._moment_parts = kernels.column_parts(m_block)
            kernels.column_moments(m_block, self._shift, self._moment_parts)
        else:
            centred = m_block - self._shift
            self._mean += centred.sum(0)
            self._m2 += centred.square_().sum(0)
        self._count += m_block.size(0)

    def finish_statistics(self) -> None:
        if self._moment_parts is not None:
            moments = self._moment_parts.sum(0)
            self._mean += moments[0]
            self._m2 += moments[1]
        count = max(self._count, 1)
        centred_mean = self._mean / count
        var = (self._m2 / count - centred_mean.square()).clamp_(min=0)
        self._mean = centred_mean + self._shift
        norm = self.norm
        # An empty block set (e.g. no bond pairs) carries no statistics to learn from.
        if isinstance(norm, nn.BatchNorm1d) and norm.running_mean is not None and self._count:
            momentum = norm.momentum
            if norm.num_batches_tracked is not None:
                norm.num_batches_tracked.add_(1)
                if momentum is None:  # cumulative moving average, as BatchNorm1d
                    momentum = 1.0 / float(norm.num_batches_tracked)
            norm.running_mean.lerp_(self._mean, momentum)
            unbiased = var * (self._count / max(self._count - 1, 1))
            norm.running_var.lerp_(unbiased, momentum)  # type: ignore[union-attr]
        self.stat1, self.stat2 = self._mean, torch.rsqrt(var + self.eps)

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        if self._scale_shift is None:
            scale = self.stat2 if self.weight is None else self.stat2 * self.weight
            shift = -self.stat1 * scale
            self._scale_shift = (scale, shift if self.bias is None else shift + self.bias)
        return self._scale_shift

    # -- the fused C kernels' view (matxfer.models.ops.kernels) -------------------
    def kernel_affine(self) -> tuple[str, Tensor, Tensor]:
        """``("layer", weight, bias)`` or ``("affine", scale, shift)`` with ones and
        zeros for absent parameters; BatchNorm in training after its statistics."""
        width = self._mean.numel()
        if self.kind == "layer":
            ones, zeros = self._mean.new_ones(width), self._mean.new_zeros(width)
            weight = ones if self.weight is None else self.weight.detach()
            return "layer", weight, zeros if self.bias is None else self.bias.detach()
        if self.kind == "none":
            return "affine", self._mean.new_ones(width), self._mean.new_zeros(width)
        scale, shift = self.scale_shift()
        return "affine", scale.detach().contiguous(), shift.detach().contiguous()

    def kernel_coefficients(self) -> tuple[Tensor, Tensor] | None:
        """BatchNorm's ``dL/dm = c0 + c1·m + scale·dL/da`` terms: zeros unless training,
        and unless :meth:`backward_sums` ran (no gradient reaches the norm's output)."""
        if self.kind == "layer":
            return None
        if self.kind == "batch" and self._grad_coefficients is not None:
            c0, c1 = self._grad_coefficients
            return c0.contiguous(), c1.contiguous()
        zeros = self._mean.new_zeros(self._mean.numel())
        return zeros, zeros

    def fused_forward(
        self,
        m_block: Tensor,
        block: slice,
        out: Tensor | None,
        residual: Tensor | None,
        gate: kernels.GateInputs | None = None,
    ) -> None:
        """The C kernel's forward of one block: ``out = residual + SiLU(Norm(m))``
        (skipped when ``out`` is ``None``) and, with ``gate``, the edge gates
        (:func:`matxfer.models.ops.kernels.gate_forward`)."""
        mode, scale, shift = self.kernel_affine() if out is not None else ("affine", None, None)
        layer = mode == "layer"
        kernels.gate_forward(
            m_block, mode, scale, shift, self.eps, residual, out,
            self.stat1[block] if layer else None, self.stat2[block] if layer else None, gate,
        )  # fmt: skip

    def fused_backward(
        self,
        m_block: Tensor,
        grad_out: Tensor | None,
        block: slice,
        gate: kernels.GateInputs | None = None,
        grad_out_copy: Tensor | None = None,
    ) -> Tensor:
        """The C kernel's ``dL/dm`` of one block from ``dL/d out`` (may be ``None``)
        and, with ``gate``, from the gated mean, with the node sums
        (:func:`matxfer.models.ops.kernels.gate_backward`). ``grad_out_copy`` receives a
        copy of ``grad_out`` in the same pass. LayerNorm's weight and bias gradients
        gather in per-thread sums until :meth:`fused_finish`."""
        mode, scale, shift = self.kernel_affine()
        layer = mode == "layer"
        if layer and grad_out is not None and self._parts is None:
            self._parts = m_block.new_zeros(2, torch.get_num_threads(), m_block.size(1))
        c0, c1 = self.kernel_coefficients() or (None, None)
        grad_m = torch.empty_like(m_block)
        parts = self._parts if layer and grad_out is not None else None
        kernels.gate_backward(
            m_block, grad_out, mode, scale, shift, c0, c1,
            self.stat1[block] if layer else None, self.stat2[block] if layer else None, grad_m,
            None if parts is None or self.weight is None else parts[0],
            None if parts is None or self.bias is None else parts[1], grad_out_copy, gate,
        )  # fmt: skip
        return grad_m

    def fused_finish(self) -> None:
        """LayerNorm's weight and bias gradients: the per-thread sums added up."""
        if self._parts is not None:
            if self.weight is not None:
                self.grad_weight = self._parts[0].sum(0)
            if self.bias is not None:
                self.grad_bias = self._parts[1].sum(0)

    # -- forward / backward of one block ---------------------------------------
    def forward(self, m_block: Tensor, block: slice | None) -> Tensor:
        """``Norm(m_block)`` as a new tensor; LayerNorm stores its row statistics
        at ``block`` (``None`` when recomputing in the backward pass)."""
        if self.kind == "layer":
            a, mean, rstd = aten.native_layer_norm(
                m_block, [m_block.size(1)], self.weight, self.bias, self.eps
            )
            if block is not None:
                self.stat1[block], self.stat2[block] = mean, rstd
            return a
        if self.kind == "none":
            return m_block.clone()
        scale, shift = self.scale_shift()
        return torch.addcmul(shift, m_block, scale)

    def backward_sums(
        self, m_blocks: Iterable[Tensor], grad_out: Tensor, blocks: list[slice]
    ) -> None:
        """Column sums that BatchNorm's backward needs over all rows (one extra pass)."""
        if self.kind in ("batch", "affine"):
            sum_grad, sum_grad_m = torch.zeros_like(self.stat1), torch.zeros_like(self.stat1)
            scale, shift = self.scale_shift()
            parts = None
            for block, m_block in zip(blocks, m_blocks, strict=True):
                if kernels.usable(m_block, grad_out[block], scale, shift):  # one pass, not five
                    parts = kernels.column_parts(m_block) if parts is None else parts
                    kernels.silu_grad_sums(m_block, grad_out[block], scale, shift, parts)
                    continue
                grad_a = aten.silu_backward(grad_out[block], self.forward(m_block, None))
                sum_grad += grad_a.sum(0)
                sum_grad_m += grad_a.mul_(m_block).sum(0)
            if parts is not None:
                sums = parts.sum(0)
                sum_grad += sums[0]
                sum_grad_m += sums[1]
            # Σ g ⊙ x̂ with x̂ = (m - μ) · invstd
            sum_grad_xhat = (sum_grad_m - self.stat1 * sum_grad) * self.stat2
            if self.weight is not None:
                self.grad_weight = sum_grad_xhat
            if self.bias is not None:
                self.grad_bias = sum_grad
            if self.kind == "batch":
                # dL/dm = s·g + c1·m + c0 with s = γ·invstd, from
                # dL/dm = s · (g - mean(g) - x̂ · mean(g ⊙ x̂)).
                scale = self.scale_shift()[0]
                c1 = -scale * self.stat2 * sum_grad_xhat / self.rows
                c0 = -scale * sum_grad / self.rows - c1 * self.stat1
                self._grad_coefficients = (c0, c1)
        elif self.kind == "layer":
            if self.weight is not None:
                self.grad_weight = torch.zeros_like(self.weight)
            if self.bias is not None:
                self.grad_bias = torch.zeros_like(self.bias)

    def backward(self, m_block: Tensor, grad_out: Tensor, block: slice) -> Tensor:
        """``dL/dm`` of one block (a new tensor) given ``dL/d SiLU(Norm(m))``."""
        grad_a = aten.silu_backward(grad_out, self.forward(m_block, None))
        if self.kind == "none":
            return grad_a
        if self.kind == "layer":
            mask = [True, self.grad_weight is not None, self.grad_bias is not None]
            grad_m, grad_w, grad_b = aten.native_layer_norm_backward(
                grad_a, m_block, [m_block.size(1)], self.stat1[block], self.stat2[block],
                self.weight, self.bias, mask,
            )  # fmt: skip
            if self.grad_weight is not None:
                self.grad_weight += grad_w
            if self.grad_bias is not None:
                self.grad_bias += grad_b
            return grad_m
        scale = self.scale_shift()[0]
        if self.kind == "affine":
            return grad_a.mul_(scale)
        c0, c1 = self._grad_coefficients
        return torch.addcmul(c0, m_block, c1).addcmul_(grad_a, scale)


class _LinearNormSiLU(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        residual: Tensor | None,
        norm_module: nn.Module,
        norm_weight: Tensor | None,
        norm_bias: Tensor | None,
    ) -> Tensor:
        ctx.set_materialize_grads(False)
        rows = x.size(0)
        width = weight.size(0) if weight is not None else x.size(1)
        like = x.new_empty(0, width)
        blocks = row_blocks(rows, width)
        norm = BlockNorm(norm_module, rows, like)
        out = x.new_empty(rows, width)
        # BatchNorm needs all blocks' statistics first; the others finish each block at once.
        pre_blocks = _pre_activations(x, weight, bias, blocks, norm)
        if not norm.row_wise:
            for pre in pre_blocks:
                norm.accumulate(pre)
            norm.finish_statistics()
        fused = kernels.usable(x, out) and (residual is None or kernels.usable(residual))
        for block, pre in zip(blocks, pre_blocks, strict=True):
            if fused:
                norm.fused_forward(
                    pre, block, out[block], None if residual is None else residual[block]
                )
                continue
            activated = F.silu(norm.forward(pre, block), inplace=True)
            if residual is not None:
                torch.add(activated, residual[block], out=out[block])
            else:
                out[block] = activated
        ctx.norm_module, ctx.blocks, ctx.has_residual = norm_module, blocks, residual is not None
        ctx.fused = fused
        ctx.save_for_backward(x, weight, bias, norm.stat1, norm.stat2)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor | None) -> tuple[Tensor | None, ...]:
        if grad_out is None:
            return (None,) * 7
        x, weight, bias, stat1, stat2 = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        blocks: list[slice] = ctx.blocks
        width = weight.size(0) if weight is not None else x.size(1)
        norm = BlockNorm(ctx.norm_module, x.size(0), x.new_empty(0, width), (stat1, stat2))
        pre_blocks = _pre_activations(x, weight, bias, blocks, norm)
        norm.backward_sums(pre_blocks, grad_out, blocks)
        need_x = ctx.needs_input_grad[0]
        grad_x = torch.empty_like(x) if need_x else None
        grad_weight = torch.zeros_like(weight) if weight is not None else None
        grad_bias = torch.zeros_like(bias) if bias is not None else None
        weight_t = weight.t().contiguous() if weight is not None else None
        for block, pre in zip(blocks, pre_blocks, strict=True):
            if ctx.fused:
                grad_pre = norm.fused_backward(pre.contiguous(), grad_out[block], block)
            else:
                grad_pre = norm.backward(pre, grad_out[block], block)
            if weight is None:
                if grad_x is not None:
                    grad_x[block] = grad_pre
                continue
            if grad_x is not None:
                grad_x[block] = linear_no_grad(grad_pre, weight_t, None, None)
            grad_weight.addmm_(grad_pre.t(), x[block])  # type: ignore[union-attr]
            if grad_bias is not None:
                grad_bias += grad_pre.sum(0)
        if ctx.fused:
            norm.fused_finish()
        grad_residual = grad_out if ctx.has_residual else None
        return grad_x, grad_weight, grad_bias, grad_residual, None, norm.grad_weight, norm.grad_bias


class _LazyBlocks:
    """``x[block] @ W^T + b`` for each block, computed when iterated (kept for BatchNorm,
    whose statistics need every block before any can be normalised)."""

    def __init__(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, blocks: list[slice]
    ) -> None:
        self.x, self.weight, self.bias, self.blocks = x, weight, bias, blocks

    def __iter__(self) -> Iterator[Tensor]:
        for block in self.blocks:
            if self.weight is None:
                yield self.x[block]
            else:
                yield linear_no_grad(self.x[block], self.weight, self.bias, None)


def _pre_activations(
    x: Tensor, weight: Tensor | None, bias: Tensor | None, blocks: list[slice], norm: BlockNorm
) -> Iterable[Tensor]:
    lazy = _LazyBlocks(x, weight, bias, blocks)
    return lazy if norm.row_wise and norm.kind != "affine" else list(lazy)


def _fast_path(x: Tensor, norm: nn.Module) -> bool:
    return (
        not plain_autograd()
        and x.dim() == 2
        and x.dtype in (torch.float32, torch.float64)
        and x.device.type == "cpu"
        and isinstance(norm, nn.LayerNorm | nn.BatchNorm1d | nn.Identity)
    )


def linear_norm_silu(x: Tensor, weight: Tensor, bias: Tensor | None, norm: nn.Module) -> Tensor:
    r"""An MLP layer, :math:`\mathrm{SiLU}(\mathrm{Norm}(x W^\top + b))`, keeping only ``x``.

    Args:
        x: ``[M, K]`` input.
        weight: ``[N, K]`` weight.
        bias: ``[N]`` bias or ``None``.
        norm: ``nn.LayerNorm``, ``nn.BatchNorm1d`` or ``nn.Identity`` over ``N``.
    """
    if not _fast_path(x, norm):
        return F.silu(norm(linear(x, weight, bias)))
    return _LinearNormSiLU.apply(
        x.contiguous(), weight, bias, None, norm,
        getattr(norm, "weight", None), getattr(norm, "bias", None),
    )  # fmt: skip


def norm_silu(m: Tensor, norm: nn.Module, residual: Tensor | None = None) -> Tensor:
    r"""``residual + SiLU(Norm(m))`` keeping only ``m`` for the backward pass.

    .. math:: y' = y + \mathrm{SiLU}(\mathrm{Norm}(m))

    Args:
        m: ``[M, F]`` pre-activations.
        norm: ``nn.LayerNorm``, ``nn.BatchNorm1d`` or ``nn.Identity`` over ``F``.
        residual: ``[M, F]`` tensor added to the result, or ``None``.
    """
    if not _fast_path(m, norm):
        out = F.silu(norm(m))
        return out if residual is None else out + residual
    return _LinearNormSiLU.apply(
        m.contiguous(), None, None, residual, norm,
        getattr(norm, "weight", None), getattr(norm, "bias", None),
    )  # fmt: skip
