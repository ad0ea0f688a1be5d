"""Data-parallel (DDP) training: the Lightning strategy and each process's share.

``devices`` processes train one model: each takes ``batch_size / devices`` of
every global batch (:mod:`matxfer.training.loaders`), DDP averages their
gradients, so one optimizer step sees the same global batch as one process
(up to float summation order; BatchNorm's batch statistics, the ``paper``
model's, are per process, over ``batch_size / devices`` structures). The
processes are started by Lightning's launcher, which re-runs the command
(see :mod:`matxfer.ranks`): rank 0 owns the run directory and writes every
output; the other ranks train, then end (:func:`end_secondary_rank`).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy, Strategy

from matxfer.training.config import TrainConfig


def make_strategy(config: TrainConfig, on_cpu: bool) -> Strategy | str:
    """Lightning's strategy for ``config``: DDP over gloo (CPU) or NCCL (GPU), else ``auto``.

    Args:
        config: The run's config (``devices``, ``strategy``).
        on_cpu: Whether the run trains on the CPU.
    """
    if config.devices == 1 and config.strategy == "auto":
        return "auto"
    return DDPStrategy(process_group_backend="gloo" if on_cpu else "nccl")


def share_threads(threads: int, processes: int) -> int:
    """Give this process its share of the run's CPU threads (at least 1); returns it.

    The processes of a CPU DDP run split the run's thread count between them:
    each taking all of it would put ``processes`` threads on every core, and
    an oversubscribed core stalls every parallel region (see
    :mod:`matxfer.training.threads`).
    """
    torch.set_num_threads(max(1, threads // processes))
    return torch.get_num_threads()


def end_secondary_rank(trainer: pl.Trainer) -> None:
    """End a rank > 0 process once training is over: rank 0 alone writes the outputs,
    and the rest of the command (printing, fine-tuning's records) is rank 0's too.

    Asks the trainer, not the environment: Lightning's teardown removes ``WORLD_SIZE``.
    """
    if trainer.global_rank > 0:
        raise SystemExit(0)
