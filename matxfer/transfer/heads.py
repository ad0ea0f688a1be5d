"""What happens to the pre-trained output head when fine-tuning.

=========  ================================================================
mode       head of the fine-tuned model
=========  ================================================================
``reuse``  the pre-trained head, weights kept (output count must match)
``new``    same shape as the pre-trained head, ``num_outputs`` outputs,
           freshly initialised
``deeper`` fresh head with ``extra_layers`` more hidden blocks:
           ``h → [Linear → Norm → SiLU] × (k + extra) → Linear → P``
=========  ================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import nn

from matxfer.errors import ConfigError, MatxferError
from matxfer.models.mlp import MLPHead

if TYPE_CHECKING:
    from matxfer.training.checkpoint import LoadedModel

HeadMode = Literal["reuse", "new", "deeper"]
HEAD_MODES: tuple[HeadMode, ...] = get_args(HeadMode)


def _head_of(model: nn.Module) -> MLPHead:
    head = getattr(model, "head", None)
    if not isinstance(head, MLPHead):
        raise MatxferError(f"model.head must be an MLPHead, got {type(head).__name__}")
    return head


def build_head(
    pretrained: MLPHead,
    mode: HeadMode,
    num_outputs: int,
    extra_layers: int = 2,
    seed: int | None = None,
) -> MLPHead:
    """The head a fine-tuned model uses, derived from the pre-trained one.

    Args:
        pretrained: The pre-trained model's head.
        mode: One of :data:`HEAD_MODES` (see module docstring).
        num_outputs: Properties predicted by the fine-tuned model.
        extra_layers: Hidden blocks added by ``"deeper"`` (default: ``2``).
        seed: Seed of the fresh weights; ``None`` draws from torch's global
            generator. The global generator is left untouched when given.

    Returns:
        ``pretrained`` itself for ``"reuse"``, otherwise a new head.

    Raises:
        ConfigError: On an unknown mode, ``extra_layers < 1`` for ``"deeper"``,
            or ``"reuse"`` with a different number of outputs.
    """
    if mode not in HEAD_MODES:
        raise ConfigError(f"unknown head mode {mode!r}; choose one of {list(HEAD_MODES)}")
    if mode == "reuse":
        if pretrained.num_outputs != num_outputs:
            raise ConfigError(
                f"cannot reuse the pre-trained head: it predicts {pretrained.num_outputs} "
                f"propert{'y' if pretrained.num_outputs == 1 else 'ies'}, the fine-tuning data "
                f"has {num_outputs}; use head mode 'new' or 'deeper'"
            )
        return pretrained
    if mode == "deeper" and extra_layers < 1:
        raise ConfigError(f"head mode 'deeper' needs extra_layers >= 1, got {extra_layers}")
    hidden_layers = pretrained.hidden_layers + (extra_layers if mode == "deeper" else 0)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        head = MLPHead(
            pretrained.in_features,
            num_outputs,
            hidden_layers=hidden_layers,
            hidden_features=pretrained.hidden_features,
            norm=pretrained.norm_kind,
        )
    param = next(pretrained.parameters())
    return head.to(device=param.device, dtype=param.dtype)


def prepare_head(
    model: nn.Module,
    mode: HeadMode,
    num_outputs: int,
    extra_layers: int = 2,
    seed: int | None = None,
) -> nn.Module:
    """Replace ``model.head`` in place according to ``mode`` (see :func:`build_head`).

    Returns:
        ``model``, for chaining.
    """
    model.head = build_head(_head_of(model), mode, num_outputs, extra_layers, seed)
    return model


def select_outputs(head: MLPHead, columns: Sequence[int]) -> MLPHead:
    """A copy of ``head`` predicting only ``columns`` of its outputs (weights kept).

    Used to reuse one property's output of a multi-property (MPT) head.
    """
    selected = MLPHead(
        head.in_features, len(columns), head.hidden_layers, head.hidden_features, head.norm_kind
    )
    state = head.state_dict()
    for name in ("out.weight", "out.bias"):
        state[name] = state[name][list(columns)].clone()
    selected.load_state_dict(state, strict=True)
    return selected.to(next(head.parameters()).device)


def reuse_outputs(loaded: LoadedModel, names: Sequence[str], num_outputs: int) -> None:
    """Cut the pre-trained head down to the outputs ``names`` (head mode ``reuse``)."""
    known = loaded.target_names
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"head output(s) {unknown} not among the pre-trained outputs {known}")
    if len(names) != num_outputs:
        raise ConfigError(
            f"{len(names)} head output(s) {list(names)} chosen for {num_outputs} "
            "fine-tuning target(s); choose one per target"
        )
    head = loaded.model.head
    if not isinstance(head, MLPHead):
        raise MatxferError(f"model.head must be an MLPHead, got {type(head).__name__}")
    loaded.model.head = select_outputs(head, [known.index(n) for n in names])
