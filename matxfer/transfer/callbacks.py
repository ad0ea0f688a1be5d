"""Fine-tuning recipes as Lightning callbacks: linear probe first (LP-FT) and L2-SP.

Both act on a model prepared by :func:`~matxfer.transfer.finetune.load_for_finetuning`
and leave the training loop (:func:`matxfer.training.train`) unchanged:

* :class:`LinearProbe` (LP-FT, Kumar et al., ICLR 2022, arXiv 2202.10054):
  for the first ``epochs`` epochs only the head trains, then every layer the
  strategy leaves trainable. A head fitted to the pre-trained features first
  sends smaller, better-aimed gradients into the backbone when it unfreezes,
  so the features are distorted less. The optimizer is built with every
  trainable parameter from the start (so the one-cycle schedule and the
  parameter groups are those of plain fine-tuning); the backbone simply has
  ``requires_grad`` off, hence no gradient, and AdamW skips parameters
  without a gradient (no step, no weight decay).
* :class:`L2SP` (Li, Grandvalet & Davoine, ICML 2018, arXiv 1802.01483): the
  penalty :math:`\\tfrac{\\alpha}{2}\\lVert w - w^{0}\\rVert^2` pulls the
  backbone weights :math:`w` towards their pre-trained values :math:`w^{0}`
  instead of towards zero; its gradient :math:`\\alpha (w - w^{0})` is added
  to the loss gradient before every optimizer step. The head (refitted to a
  new property) is not penalised. Use it with zero weight decay on the
  backbone (:func:`~matxfer.transfer.finetune.finetune` does), otherwise
  plain decay still pulls towards zero.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from matxfer.errors import ConfigError
from matxfer.transfer.freeze import GROUPS, FreezeSpec, apply_freeze, parameter_groups


def probe_spec(spec: FreezeSpec) -> FreezeSpec:
    """The strategy of the probing phase of ``spec``: only (its part of) the head trains.

    Raises:
        ConfigError: ``spec`` freezes the head, so there is nothing to probe.
    """
    if "head" in spec.frozen:
        raise ConfigError(
            f"a linear probe trains the head, but strategy {spec} freezes it; "
            "use a strategy that trains the head or drop --probe-epochs"
        )
    return FreezeSpec(frozen=frozenset(GROUPS) - {"head"}, head_scope=spec.head_scope)


class LinearProbe(pl.Callback):
    """Train only the head for the first ``epochs`` epochs, then the layers of ``spec``.

    The phase is set at the start of every epoch from ``trainer.current_epoch``,
    so a resumed run continues in the right phase.

    Args:
        spec: The fine-tuning strategy applied after the probe (the model's
            freezing when training starts).
        epochs: Probing epochs (>= 1).

    Raises:
        ConfigError: ``epochs`` < 1, or ``spec`` freezes the head.
    """

    def __init__(self, spec: FreezeSpec, epochs: int) -> None:
        if epochs < 1:
            raise ConfigError(f"probe epochs must be >= 1, got {epochs}")
        self.spec, self.epochs = spec, epochs
        self.probe = probe_spec(spec)
        self._probing: bool | None = None
        self._probe_norms: list[str] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        probing = trainer.current_epoch < self.epochs
        if probing == self._probing:
            return
        model: nn.Module = pl_module.model  # type: ignore[assignment]
        if probing:
            self._probe_norms = apply_freeze(model, self.probe).frozen_norms
        else:
            kept = set(apply_freeze(model, self.spec).frozen_norms)
            # Norms put in eval mode for the probe only train again with their layers.
            for name in set(self._probe_norms) - kept:
                model.get_submodule(name).train()
        self._probing = probing


class L2SP(pl.Callback):
    """Add :math:`\\alpha (w - w^0)` to the gradient of every trainable backbone weight.

    Args:
        model: The model at its pre-trained weights (the reference :math:`w^0`
            is copied now, so build the callback before training).
        alpha: Penalty strength :math:`\\alpha` > 0, in units of the
            (transformed-target) loss.

    Raises:
        ConfigError: ``alpha`` <= 0.
    """

    def __init__(self, model: nn.Module, alpha: float) -> None:
        if not alpha > 0:
            raise ConfigError(f"the L2-SP strength must be > 0, got {alpha}")
        self.alpha = alpha
        groups = parameter_groups(model)
        self.reference = {
            name: param.detach().clone()
            for name, param in model.named_parameters()
            if groups[name] != "head"
        }

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        for name, param in pl_module.model.named_parameters():  # type: ignore[union-attr]
            reference = self.reference.get(name)
            if reference is None or param.grad is None:  # head, or frozen for now
                continue
            param.grad.add_(param - reference.to(param.device), alpha=self.alpha)


def recipe_callbacks(
    model: nn.Module, spec: FreezeSpec, probe_epochs: int = 0, l2sp: float = 0.0
) -> list[pl.Callback]:
    """The callbacks of a fine-tuning recipe: a linear probe and/or L2-SP (none by default).

    Args:
        model: The prepared model at its pre-trained weights.
        spec: Its freezing strategy.
        probe_epochs: Head-only epochs before the rest trains (0: none).
        l2sp: L2-SP strength :math:`\\alpha` (0: none).

    Raises:
        ConfigError: Negative values, or a probe with a frozen head.
    """
    if probe_epochs < 0 or l2sp < 0:
        raise ConfigError(
            f"probe epochs ({probe_epochs}) and the L2-SP strength ({l2sp}) must be >= 0"
        )
    callbacks: list[pl.Callback] = []
    if probe_epochs:
        callbacks.append(LinearProbe(spec, probe_epochs))
    if l2sp:
        callbacks.append(L2SP(model, l2sp))
    return callbacks
