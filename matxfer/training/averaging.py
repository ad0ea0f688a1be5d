r"""Exponential moving average (EMA) of the weights during training (``ema_decay``).

After every optimizer step the averaged weights :math:`\bar\theta` follow the
trained ones :math:`\theta`:

.. math::
    \bar\theta_1 = \theta_1, \qquad
    \bar\theta_t = d\,\bar\theta_{t-1} + (1 - d)\,\theta_t
                 = \bar\theta_{t-1} + (1 - d)\,(\theta_t - \bar\theta_{t-1}),

an average over roughly the last :math:`1 / (1 - d)` steps. It smooths out the
step-to-step noise of the optimizer (Polyak averaging with exponential weights),
which often generalises better on small training sets; the trained weights
themselves, and so the training trajectory, are unchanged.

:class:`EMAWeights` is Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`
with the behaviour it already has (read from Lightning 2.6):

* validation runs on the averaged weights (swapped in and out around each
  validation epoch), so the validation MAE, early stopping and the choice of
  ``best.ckpt`` all judge the averaged model;
* a checkpoint's ``state_dict`` holds the averaged weights (so ``best.ckpt``,
  :func:`~matxfer.training.checkpoint.load_model`, testing, prediction and
  fine-tuning from the run use them), ``current_model_state`` the trained ones
  and ``averaging_state`` the number of updates; resuming from ``last.ckpt``
  restores both models and the step counter, so the average continues where the
  killed run left it.

and three differences from its ``EMAWeightAveraging``:

1. The update is :func:`torch.lerp`, the second form above, not
   ``d * avg + (1 - d) * current``: when :math:`\theta_t = \bar\theta_{t-1}` it
   returns :math:`\bar\theta_{t-1}` bit for bit. Parameters that do not train
   (layers frozen for fine-tuning, a linear probe's backbone) and constant
   buffers (the target transform's fitted statistics, frozen BatchNorm
   statistics) therefore stay exactly the pre-trained / fitted values. The
   product form rounds: measured on float32 constants, after 2000 updates at
   :math:`d = 0.999` 16% of the entries had moved (by up to 1.3e-5 relative).
2. Integer and boolean buffers (BatchNorm's ``num_batches_tracked``, the
   transform's ``fitted`` flag) are copied, not averaged: the product form turns
   a counter into a float that is truncated back, so it stays at its first value.
3. The averaged copy is placed on the device training runs on. Lightning creates
   it in ``setup``, before the strategy moves the module to its device, so by
   default it would stay on the CPU during GPU training (a device-to-host copy of
   every weight at every step).

Buffers are averaged (``use_buffers=True``), not taken from the trained model:
BatchNorm's running statistics of the averaged model then average the statistics
seen over the same window as its weights (as Lightning's and timm's EMA do),
instead of describing the activations of the last trained weights. By point 1
this leaves constant buffers untouched.

Under DDP every process keeps its own average of identical weights; the saved
one is rank 0's, as for the trained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from torch import Tensor

from matxfer.errors import ConfigError

#: ``(averaged, current, number averaged so far) -> new averaged`` (``AveragedModel``'s ``avg_fn``).
AverageFn = Callable[[Tensor, Tensor, Tensor | int], Tensor]


def ema_update(decay: float) -> AverageFn:
    r"""The EMA step :math:`\bar\theta \leftarrow \bar\theta + (1 - d)(\theta - \bar\theta)`,
    exact for unchanged tensors; integer and boolean tensors are copied.

    Args:
        decay: :math:`d`, in (0, 1).

    Raises:
        ConfigError: ``decay`` outside (0, 1).
    """
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"ema_decay must be between 0 and 1 (exclusive), got {decay}")
    weight = 1.0 - decay

    @torch.no_grad()
    def update(average: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        if not average.is_floating_point():  # counters and flags: an average means nothing
            return current
        return torch.lerp(average, current, weight)

    return update


class EMAWeights(WeightAveraging):
    """Keep an exponential moving average of the weights, updated after every optimizer
    step, and validate, checkpoint and finish training with it (see the module docstring).

    Args:
        decay: :math:`d` per optimizer step, in (0, 1); typical 0.99-0.999.

    Raises:
        ConfigError: ``decay`` outside (0, 1).
    """

    def __init__(self, decay: float) -> None:
        super().__init__(use_buffers=True, avg_fn=ema_update(decay))
        self.decay = decay

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._device is None:
            # Where the strategy is about to move the module (point 3 of the module docstring).
            self._device = trainer.strategy.root_device
        super().setup(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        # The decay too, for whoever reads the checkpoint; resuming takes it from the config.
        return {**super().state_dict(), "decay": self.decay}
