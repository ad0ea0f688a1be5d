"""Training losses: the single-property ones and the study's masked multi-property L1.

In multi-property pre-training (Devi, Butler & Sai Gautam, npj Comput Mater 2024,
arXiv 2406.13142) one model has one output per property, but each crystal carries
labels for only some of them. :func:`masked_l1` counts the labels that exist and
nothing else. :func:`resolve_loss` maps a config's ``loss`` name
(:data:`~matxfer.training.config.LossName`) to its function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from matxfer.errors import ConfigError
from matxfer.training.config import LossName

LossFunction = Callable[[Tensor, Tensor], Tensor]
Normalization = Literal["batch", "labels"]
#: Losses given the full ``[B, P]`` prediction and target with NaN for missing labels
#: (they mask themselves); the others get only the labelled entries.
SELF_MASKING_LOSSES: frozenset[LossName] = frozenset({"masked_l1"})


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


def resolve_loss(name: str, huber_delta: float = 1.0) -> LossFunction:
    """The loss function called ``name``.

    ``mse``, ``l1`` and ``huber`` average over the labelled entries they are
    given; ``masked_l1`` (:func:`masked_l1`, the study's multi-property loss)
    takes ``[B, P]`` with NaN for missing labels and divides the summed absolute
    error by the batch size B.

    Args:
        name: ``mse`` (the study), ``l1``, ``huber`` or ``masked_l1`` (case-insensitive).
        huber_delta: Threshold between the quadratic and linear parts of ``huber``.

    Raises:
        ConfigError: Unknown name; the message lists the choices.
    """
    # Keys are exactly LossName's choices (tests/training/test_losses.py checks it).
    losses: dict[str, LossFunction] = {
        "mse": F.mse_loss,
        "l1": F.l1_loss,
        "huber": lambda pred, target: F.huber_loss(pred, target, delta=huber_delta),
        "masked_l1": masked_l1,
    }
    try:
        return losses[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of {sorted(losses)}") from None
