"""Losses for multi-property (MPT) training with missing labels.

In multi-property pre-training (Devi, Butler & Sai Gautam, npj Comput Mater 2024,
arXiv 2406.13142) one model has one output per property, but each crystal carries
labels for only some of them. The loss counts the labels that exist and nothing
else.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Normalization = Literal["batch", "labels"]


def masked_l1(
    pred: Tensor,
    target: Tensor,
    mask: Tensor | None = None,
    normalize: Normalization = "batch",
) -> Tensor:
    r"""Mean absolute error over the labels that exist.

    With :math:`\delta_{it} = 1` where structure :math:`i` has a label for
    property :math:`t` and 0 otherwise,

    .. math::
        L = \frac{1}{N} \sum_{i=1}^{B} \sum_{t=1}^{P}
            \left| \hat y_{it} - y_{it} \right| \delta_{it}

    The study defines :math:`N` as the number of structures in the batch
    (``normalize="batch"``, the default, :math:`N = B`). With
    ``normalize="labels"``, :math:`N = \sum_{it} \delta_{it}` instead, the plain
    mean over present labels (for one property with no gaps both equal
    :func:`torch.nn.functional.l1_loss`). A batch without any label gives 0.

    Missing labels contribute nothing, gradients included: they are replaced
    with :func:`torch.where` *before* the difference, so a NaN target never
    reaches the autograd graph (``NaN * 0`` would still be NaN).

    Args:
        pred: Predictions, shape ``[B, P]``.
        target: Labels, shape ``[B, P]``; NaN marks a missing label.
        mask: Optional ``[B, P]`` bool, True where the label exists. When
            given, every masked-in target must be finite.
        normalize: ``"batch"`` (divide by B, the study's choice) or
            ``"labels"`` (divide by the number of present labels).

    Returns:
        A scalar tensor.

    Raises:
        ValueError: On shape mismatch, an unknown ``normalize``, or a NaN
            target where ``mask`` says the label exists.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if normalize not in ("batch", "labels"):
        raise ValueError(f"normalize must be one of ['batch', 'labels'], got {normalize!r}")
    present = ~torch.isnan(target)
    if mask is not None:
        if mask.shape != target.shape:
            raise ValueError(f"mask {tuple(mask.shape)} and target {tuple(target.shape)} differ")
        if bool((mask & ~present).any()):
            raise ValueError("mask marks a label as present where the target is NaN")
        present = mask.to(torch.bool)
    zero = torch.zeros((), dtype=pred.dtype, device=pred.device)
    filled_target = torch.where(present, target, zero)
    abs_error = torch.where(present, (pred - filled_target).abs(), zero)
    if normalize == "batch":
        denominator = max(pred.shape[0], 1)
        return abs_error.sum() / denominator
    return abs_error.sum() / present.sum().clamp_min(1).to(pred.dtype)
