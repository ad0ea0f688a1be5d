"""Turn a pre-trained checkpoint into a model ready for fine-tuning (draft).

Fine-tuning = pre-trained weights + a head choice (:mod:`~matxfer.transfer.heads`)
+ a freezing strategy (:mod:`~matxfer.transfer.freeze`). The training loop
itself is :mod:`matxfer.training`'s; this module only prepares the model and
tells the loop which graph settings the pre-trained layers expect.

The target transform of the pre-trained model is *not* carried over: the
fine-tuning property has its own scale, so the caller fits a new transform on
the fine-tuning training split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from matxfer.graphs.config import GraphConfig
from matxfer.training.checkpoint import LoadedModel, load_model
from matxfer.transfer.freeze import FreezeSpec, FreezeSummary, apply_freeze, parse_freeze
from matxfer.transfer.heads import HeadMode, prepare_head


@dataclass
class FineTuneModel:
    """A pre-trained model prepared for fine-tuning.

    Attributes:
        model: The model (train mode), head replaced and groups frozen as asked.
        freeze: Trainable/frozen parameter counts per group.
        graph_config: The pre-trained model's graph settings; fine-tuning
            graphs must be built with them (the embeddings learned these
            cutoffs and neighbour counts).
        pretrained: The loaded checkpoint (path, payload, target names).
    """

    model: nn.Module
    freeze: FreezeSummary
    graph_config: GraphConfig
    pretrained: LoadedModel


def load_for_finetuning(
    checkpoint: str | Path,
    num_outputs: int,
    strategy: FreezeSpec | str = "all",
    head: HeadMode = "reuse",
    extra_layers: int = 2,
    seed: int | None = None,
) -> FineTuneModel:
    """Load a pre-trained checkpoint, set its head, and freeze layer groups.

    Args:
        checkpoint: A checkpoint file or run directory (see
            :func:`matxfer.training.load_model`).
        num_outputs: Properties the fine-tuned model predicts.
        strategy: A :class:`FreezeSpec` or a string for
            :func:`~matxfer.transfer.freeze.parse_freeze` (default: ``"all"``,
            fine-tune everything, the study's best).
        head: ``"reuse"`` (default; the study's pair-wise transfer keeps the
            pre-trained output layer), ``"new"`` or ``"deeper"``.
        extra_layers: Hidden blocks added by ``head="deeper"``.
        seed: Seed of a fresh head's weights.

    Raises:
        MatxferError: Unreadable checkpoint, or a model the strategy cannot
            be applied to.
        ConfigError: Bad strategy or head options (e.g. ``reuse`` with a
            different number of outputs).
    """
    spec = parse_freeze(strategy) if isinstance(strategy, str) else strategy
    loaded = load_model(checkpoint)
    model = prepare_head(loaded.model, head, num_outputs, extra_layers, seed)
    model.train()
    summary = apply_freeze(model, spec)
    return FineTuneModel(model, summary, loaded.graph_config, loaded)
