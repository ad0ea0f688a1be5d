"""Dense layers and scatter sums for ALIGNN's hot path.

* :func:`linear` runs dense layers with an optional tensor added in the same
  BLAS call (``addmm``). With ``MATXFER_ONEDNN=1`` it uses oneDNN's fused
  matmul instead; that is off by default because oneDNN caches a kernel per
  input shape, and with every batch a new shape the process grew by ~0.5 GB
  per epoch (measured: 4 + 4 × 256 ALIGNN on phonons, 2 cores, peak 1.83 GB
  with oneDNN vs 1.28 GB with BLAS, which was also faster: 0.70 vs 0.56 s per
  batch);
* :func:`scatter_sum` sums rows into buckets.

Under ``torch.compile`` and CPU autocast the plain formulas are used
(:func:`plain_autograd`). Checked against plain autograd in
``tests/models/ops/test_fused_ops.py``.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

#: Added to the gate sum in the denominator, as in the reference ALIGNN.
GATE_EPS = 1e-6


def plain_autograd() -> bool:
    """Whether to use the plain formulas: under ``torch.compile`` (which fuses by
    itself) or CPU autocast (which picks dtypes per op)."""
    return torch.compiler.is_compiling() or torch.is_autocast_enabled("cpu")


@cache
def onednn_available() -> bool:
    """Whether to use oneDNN's fused linear op: asked for (``MATXFER_ONEDNN=1``) and
    running here (x86 builds with MKL-DNN); decided once."""
    if os.environ.get("MATXFER_ONEDNN", "0") != "1" or not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.ones(2, 3)
        out = torch.ops.mkldnn._linear_pointwise(probe, torch.ones(4, 3), None, "none", [], "")
        return bool(torch.equal(out, torch.full((2, 4), 3.0)))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def linear_no_grad(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    add: Tensor | None,
    add_in_place: bool = False,
) -> Tensor:
    """``x @ weight.T (+ bias) (+ add)``, no autograd: BLAS, or oneDNN when asked for.

    ``add_in_place``: the result may overwrite ``add`` (a temporary of the caller),
    which saves BLAS copying it into a new tensor first.
    """
    if x.dtype != torch.float32 or not onednn_available():
        if add is not None and bias is None:  # one BLAS call, no separate add pass
            return add.addmm_(x, weight.t()) if add_in_place else torch.addmm(add, x, weight.t())
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
        return linear_no_grad(x, weight, bias, add)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, need_add = ctx.needs_input_grad
        grad = grad.contiguous()
        grad_x = linear_no_grad(grad, weight.t().contiguous(), None, None) if need_x else None
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
        x.dim() == 2
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and not plain_autograd()
        and onednn_available()
    )
    if not fast:
        out = F.linear(x, weight, bias)
        return out if add is None else out + add
    return _Linear.apply(x.contiguous(), weight, bias, add)


def scatter_sum(values: Tensor, index: Tensor, num_rows: int) -> Tensor:
    """Row sums ``out[k] = Σ_{e: index[e] = k} values[e]`` as a new ``[num_rows, F]`` tensor."""
    # index_add_ is one pass (one parallel region); scatter_add_ with an expanded
    # index sorts the index first, several regions that each stall when a core is busy.
    return values.new_zeros(num_rows, values.size(1)).index_add_(0, index, values)
