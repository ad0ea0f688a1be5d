"""Dense-layer and normalisation helpers for ALIGNN's hot path.

* :func:`linear` runs dense layers through oneDNN's fp32 matmul (with an
  optional tensor added in the matmul's epilogue), about 20 % faster than the
  default BLAS call at ALIGNN's shapes on x86 CPUs;
* :func:`norm_silu` computes ``residual + SiLU(Norm(m))`` keeping only ``m``
  for the backward pass (autograd would also keep the normalised tensor);
* :func:`scatter_sum` sums rows into buckets.

Under ``torch.compile`` and CPU autocast the plain formulas are used
(:func:`plain_autograd`). Checked against plain autograd in
``tests/models/test_fused_ops.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

#: Added to the gate sum in the denominator, as in the reference ALIGNN.
GATE_EPS = 1e-6

aten = torch.ops.aten


def plain_autograd() -> bool:
    """Whether to use the plain formulas: under ``torch.compile`` (which fuses by
    itself) or CPU autocast (which picks dtypes per op)."""
    return torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")


def _onednn_linear_available() -> bool:
    try:
        probe = torch.ones(2, 3)
        out = torch.ops.mkldnn._linear_pointwise(probe, torch.ones(4, 3), None, "none", [], "")
        return bool(torch.equal(out, torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


#: oneDNN's fused linear exists in builds with MKL-DNN (x86 Linux/Windows wheels).
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and _onednn_linear_available()


def onednn_matmul(x: Tensor, weight: Tensor, bias: Tensor | None, add: Tensor | None) -> Tensor:
    """``x @ weight.T (+ bias) (+ add)``, no autograd: oneDNN where available, else BLAS."""
    if not ONEDNN_LINEAR or x.dtype != torch.float32:
        out = F.linear(x, weight, bias)
        return out if add is None else out.add_(add)
    if add is None:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, "add")


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, add: Tensor | None
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_matmul(x, weight, bias, add)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, need_add = ctx.needs_input_grad
        grad = grad.contiguous()
        grad_x = onednn_matmul(grad, weight.t().contiguous(), None, None) if need_x else None
        grad_w = grad.t().mm(x) if need_w else None
        grad_b = grad.sum(0) if need_b and ctx.has_bias else None
        return grad_x, grad_w, grad_b, grad if need_add else None


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, add: Tensor | None = None
) -> Tensor:
    r"""Dense layer :math:`x W^\top + b\,(+\,\text{add})` for 2-D float32 CPU inputs.

    Uses oneDNN (with ``add`` fused into the matmul) where available, else
    ``torch.nn.functional.linear``.

    Args:
        x: ``[M, K]`` input.
        weight: ``[N, K]`` weight.
        bias: ``[N]`` bias or ``None``.
        add: ``[M, N]`` tensor added to the result, or ``None``.
    """
    fast = (
        ONEDNN_LINEAR
        and x.dim() == 2
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not plain_autograd()
    )
    if not fast:
        out = F.linear(x, weight, bias)
        return out if add is None else out + add
    return _Linear.apply(x.contiguous(), weight, bias, add)


def scatter_sum(values: Tensor, index: Tensor, num_rows: int) -> Tensor:
    """Row sums ``out[k] = Σ_{e: index[e] = k} values[e]`` as a new ``[num_rows, F]`` tensor."""
    out = values.new_zeros(num_rows, values.size(1))
    return out.scatter_add_(0, index.view(-1, 1).expand_as(values), values)


def _norm_params(norm: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    return weight, bias


class _NormSiLU(torch.autograd.Function):
    """``residual + SiLU(Norm(m))`` for LayerNorm, training-mode BatchNorm or no norm."""

    @staticmethod
    def forward(
        ctx: Any,
        m: Tensor,
        residual: Tensor | None,
        norm: nn.Module,
        weight: Tensor | None,
        bias: Tensor | None,
    ) -> Tensor:
        ctx.norm = norm
        if isinstance(norm, nn.LayerNorm):
            a, stat1, stat2 = aten.native_layer_norm(
                m, list(norm.normalized_shape), weight, bias, norm.eps
            )
        elif isinstance(norm, nn.BatchNorm1d):
            a, stat1, stat2 = aten.native_batch_norm(
                m, weight, bias, norm.running_mean, norm.running_var, True,
                _batch_norm_momentum(norm), norm.eps,
            )  # fmt: skip
        else:
            a, stat1, stat2 = m, m.new_empty(0), m.new_empty(0)
        out = F.silu(a)
        if residual is not None:
            out.add_(residual)
        ctx.save_for_backward(m, stat1, stat2, weight, bias)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        m, stat1, stat2, weight, bias = ctx.saved_tensors
        norm = ctx.norm
        need_m, need_res, _, need_w, need_b = ctx.needs_input_grad
        mask = [need_m, bool(need_w), bool(need_b)]
        grad_w = grad_b = None
        if isinstance(norm, nn.LayerNorm):
            a = aten.native_layer_norm(m, list(norm.normalized_shape), weight, bias, norm.eps)[0]
            grad_a = aten.silu_backward(grad_out, a)
            del a
            grad_m, grad_w, grad_b = aten.native_layer_norm_backward(
                grad_a, m, list(norm.normalized_shape), stat1, stat2, weight, bias, mask
            )
        elif isinstance(norm, nn.BatchNorm1d):
            # Recompute the normalised tensor from the saved batch statistics
            # (one fused pass) instead of keeping it alive.
            scale = stat2 if weight is None else stat2 * weight
            shift = -stat1 * scale if bias is None else bias - stat1 * scale
            a = torch.addcmul(shift, m, scale)
            grad_a = aten.silu_backward(grad_out, a)
            del a
            grad_m, grad_w, grad_b = aten.native_batch_norm_backward(
                grad_a, m, weight, norm.running_mean, norm.running_var, stat1, stat2,
                True, norm.eps, mask,
            )  # fmt: skip
        else:
            grad_m = aten.silu_backward(grad_out, m)
        grad_res = grad_out if need_res else None
        return grad_m, grad_res, None, grad_w, grad_b


def _batch_norm_momentum(norm: nn.BatchNorm1d) -> float:
    """Advance ``num_batches_tracked`` and return the running-stat factor, as BatchNorm1d does."""
    if not norm.track_running_stats or norm.num_batches_tracked is None:
        return 0.0 if norm.momentum is None else norm.momentum
    norm.num_batches_tracked.add_(1)
    if norm.momentum is None:
        return 1.0 / float(norm.num_batches_tracked)
    return norm.momentum


def norm_silu(m: Tensor, norm: nn.Module, residual: Tensor | None = None) -> Tensor:
    r"""``residual + SiLU(norm(m))`` keeping only ``m`` for the backward pass.

    .. math:: y' = y + \mathrm{SiLU}(\mathrm{Norm}(m))

    Falls back to plain autograd where the memory saving does not apply:
    without gradients, and for BatchNorm in eval mode (running statistics).

    Args:
        m: ``[M, F]`` pre-activations.
        norm: ``nn.LayerNorm``, ``nn.BatchNorm1d`` or ``nn.Identity``.
        residual: ``[M, F]`` tensor added to the result, or ``None``.
    """
    use_plain = (
        plain_autograd()
        or not torch.is_grad_enabled()
        or (isinstance(norm, nn.BatchNorm1d) and not norm.training)
    )
    if use_plain or not isinstance(norm, nn.LayerNorm | nn.BatchNorm1d | nn.Identity):
        out = F.silu(norm(m))
        return out if residual is None else out + residual
    weight, bias = _norm_params(norm)
    return _NormSiLU.apply(m, residual, norm, weight, bias)
