"""masked_l1: the study's multi-property loss with missing labels."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import nn

from matxfer.errors import ConfigError
from matxfer.training.config import LossName
from matxfer.training.losses import masked_l1, resolve_loss

NAN = math.nan


def test_hand_computed_example() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[1.5, NAN], [2.0, 6.0]])
    present_errors = [0.5, 1.0, 2.0]
    expected_batch = sum(present_errors) / 2  # N = batch size
    expected_labels = sum(present_errors) / 3  # N = number of labels
    assert masked_l1(pred, target).item() == pytest.approx(expected_batch)
    assert masked_l1(pred, target, normalize="labels").item() == pytest.approx(expected_labels)


@pytest.mark.parametrize("normalize", ["batch", "labels"])
def test_single_complete_property_is_plain_l1(normalize: str) -> None:
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(7, 1, generator=generator), torch.randn(7, 1, generator=generator)
    expected = nn.functional.l1_loss(pred, target)
    assert torch.allclose(masked_l1(pred, target, normalize=normalize), expected)


def test_missing_labels_get_exactly_zero_gradient() -> None:
    pred = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    target = torch.tensor([[0.0, NAN, 9.0], [NAN, NAN, 0.0]])
    masked_l1(pred, target).backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    missing = torch.isnan(target)
    assert (pred.grad[missing] == 0).all()
    # d|p - y|/dp / B = sign(p - y) / 2 where the label exists
    expected = torch.sign(pred.detach() - target.nan_to_num()) / 2
    assert torch.equal(pred.grad[~missing], expected[~missing])


def test_explicit_mask_equals_nan_marking() -> None:
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 7.0], [1.0, 1.0]])
    mask = torch.tensor([[True, False], [True, True]])
    with_nan = target.clone()
    with_nan[~mask] = NAN
    assert torch.equal(masked_l1(pred, target, mask=mask), masked_l1(pred, with_nan))


def test_each_task_head_learns_only_from_its_labels() -> None:
    torch.manual_seed(0)
    heads = nn.ModuleList(nn.Linear(3, 1) for _ in range(2))
    features = torch.randn(5, 3)
    pred = torch.cat([head(features) for head in heads], dim=1)
    target = torch.randn(5, 2)
    target[:, 1] = NAN  # nobody has task 1
    masked_l1(pred, target).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in heads[0].parameters())
    assert all(p.grad is not None and (p.grad == 0).all() for p in heads[1].parameters())


def test_batch_without_labels_is_zero_with_zero_gradient() -> None:
    pred = torch.ones(3, 2, requires_grad=True)
    loss = masked_l1(pred, torch.full((3, 2), NAN), normalize="labels")
    loss.backward()
    assert loss.item() == 0.0
    assert pred.grad is not None and (pred.grad == 0).all()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ"):
        masked_l1(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        masked_l1(torch.zeros(1, 2), torch.tensor([[NAN, 1.0]]), mask=torch.ones(1, 2, dtype=bool))
    with pytest.raises(ValueError, match="normalize"):
        masked_l1(torch.zeros(1, 1), torch.zeros(1, 1), normalize="mean")  # type: ignore[arg-type]


def test_resolve_loss_knows_exactly_the_config_choices() -> None:
    # A config may only name LossName's choices, and every one must resolve.
    choices = sorted(get_args(LossName))
    assert all(callable(resolve_loss(name)) for name in choices)
    with pytest.raises(ConfigError) as error:
        resolve_loss("hinge")
    assert str(choices) in str(error.value)
