"""Head modes for fine-tuning: reuse, new, deeper."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from matxfer.errors import ConfigError
from matxfer.models.mlp import MLPHead
from matxfer.transfer.heads import build_head, prepare_head


def test_reuse_keeps_the_pretrained_weights(stand_in: nn.Module) -> None:
    head = stand_in.head
    weights = head.out.weight.clone()
    prepare_head(stand_in, "reuse", num_outputs=2)
    assert stand_in.head is head
    assert torch.equal(stand_in.head.out.weight, weights)


def test_reuse_with_other_output_count_says_use_new(stand_in: nn.Module) -> None:
    with pytest.raises(ConfigError, match="'new'"):
        prepare_head(stand_in, "reuse", num_outputs=1)


def test_new_head_same_shape_fresh_weights(stand_in: nn.Module, stand_in_inputs: Tensor) -> None:
    old = stand_in.head
    prepare_head(stand_in, "new", num_outputs=1, seed=3)
    new = stand_in.head
    assert isinstance(new, MLPHead) and new is not old
    assert (new.hidden_layers, new.num_outputs, new.norm_kind) == (old.hidden_layers, 1, "batch")
    assert not torch.equal(new.hidden[0].linear.weight, old.hidden[0].linear.weight)
    stand_in.eval()
    assert stand_in(stand_in_inputs).shape == (len(stand_in_inputs), 1)


def test_deeper_head_adds_layers(stand_in: nn.Module, stand_in_inputs: Tensor) -> None:
    before = stand_in.head.hidden_layers
    prepare_head(stand_in, "deeper", num_outputs=3, extra_layers=2)
    assert stand_in.head.hidden_layers == before + 2
    assert stand_in(stand_in_inputs).shape == (len(stand_in_inputs), 3)


def test_seed_reproducible_and_global_rng_untouched() -> None:
    pretrained = MLPHead(8, 1)
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    first = build_head(pretrained, "deeper", 2, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    second = build_head(pretrained, "deeper", 2, seed=5)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_bad_modes() -> None:
    pretrained = MLPHead(8, 1)
    with pytest.raises(ConfigError, match="reuse"):
        build_head(pretrained, "wider", 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="extra_layers"):
        build_head(pretrained, "deeper", 1, extra_layers=0)
