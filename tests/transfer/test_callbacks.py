"""Fine-tuning recipes: linear probe then fine-tune (LP-FT) and L2-SP, on the stand-in model."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from matxfer.errors import ConfigError
from matxfer.transfer.callbacks import L2SP, LinearProbe, probe_spec, recipe_callbacks
from matxfer.transfer.finetune import _optimizer_groups
from matxfer.transfer.freeze import apply_freeze, group_of, parse_freeze


class _Regression(pl.LightningModule):
    """The stand-in model, L1 loss, AdamW over every trainable parameter (as PropertyModule)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.l1_loss(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1
        )


class _Snapshots(pl.Callback):
    """Model state after every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.states.append(copy.deepcopy(pl_module.model.state_dict()))


def _fit(model: nn.Module, inputs: Tensor, epochs: int, callbacks: list[pl.Callback]) -> None:
    targets = torch.randn(len(inputs), 2, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(inputs, targets), batch_size=8)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(_Regression(model), loader)


def _changed_groups(before: dict[str, Tensor], after: dict[str, Tensor]) -> set[str | None]:
    return {group_of(k) for k in before if not torch.equal(before[k], after[k])}


def test_linear_probe_trains_the_head_first_then_everything(
    stand_in: nn.Module, stand_in_inputs: Tensor
) -> None:
    spec = parse_freeze("all")
    start = copy.deepcopy(stand_in.state_dict())
    snapshots = _Snapshots()
    _fit(stand_in, stand_in_inputs, 3, [LinearProbe(spec, epochs=2), snapshots])
    # Probe: backbone weights and BatchNorm statistics untouched, the head moves.
    for state in snapshots.states[:2]:
        assert _changed_groups(start, state) == {"head"}
    # Afterwards every group trains again, its BatchNorm statistics included.
    moved = _changed_groups(snapshots.states[1], snapshots.states[2])
    assert moved == {"embedding", "two_body", "three_body", "gcn", "head"}
    assert not torch.equal(
        snapshots.states[1]["atom_embedding.1.running_mean"],
        snapshots.states[2]["atom_embedding.1.running_mean"],
    )
    assert all(p.requires_grad for p in stand_in.parameters())


def test_linear_probe_keeps_the_strategy_frozen_afterwards(
    stand_in: nn.Module, stand_in_inputs: Tensor
) -> None:
    spec = parse_freeze("three_body_only")
    apply_freeze(stand_in, spec)
    start = copy.deepcopy(stand_in.state_dict())
    snapshots = _Snapshots()
    _fit(stand_in, stand_in_inputs, 2, [LinearProbe(spec, epochs=1), snapshots])
    assert _changed_groups(start, snapshots.states[0]) == {"head"}
    assert _changed_groups(snapshots.states[0], snapshots.states[1]) == {"three_body", "head"}


def test_probe_needs_a_trainable_head() -> None:
    assert probe_spec(parse_freeze("last")).head_scope == "last_linear"
    with pytest.raises(ConfigError, match="freezes it"):
        LinearProbe(parse_freeze("freeze:head"), epochs=3)
    with pytest.raises(ConfigError, match=">= 1"):
        LinearProbe(parse_freeze("all"), epochs=0)


def test_l2sp_adds_the_pull_towards_the_pretrained_weights(stand_in: nn.Module) -> None:
    callback = L2SP(stand_in, alpha=0.5)
    assert not any(group_of(name) == "head" for name in callback.reference)
    with torch.no_grad():
        for param in stand_in.parameters():
            param.add_(1.0)
            param.grad = torch.zeros_like(param)
    module = SimpleNamespace(model=stand_in)
    callback.on_before_optimizer_step(None, module, None)  # type: ignore[arg-type]
    for name, param in stand_in.named_parameters():
        expected = 0.0 if group_of(name) == "head" else 0.5
        assert torch.allclose(param.grad, torch.full_like(param, expected)), name


def test_l2sp_pulls_weights_back_during_training(
    stand_in: nn.Module, stand_in_inputs: Tensor
) -> None:
    def drift(alpha: float) -> float:
        torch.manual_seed(0)
        model = copy.deepcopy(stand_in)
        reference = copy.deepcopy(model.state_dict())
        callbacks = [L2SP(model, alpha)] if alpha else []
        _fit(model, stand_in_inputs, 5, callbacks)
        return sum(
            float((p.detach() - reference[n]).norm())
            for n, p in model.named_parameters()
            if "head" not in n
        )

    assert drift(100.0) < 0.5 * drift(0.0)


def test_l2sp_drops_weight_decay_of_the_backbone_only(stand_in: nn.Module) -> None:
    groups = _optimizer_groups({}, l2sp=0.1)(stand_in, 1e-3, 1e-5)
    decay = {group["name"]: group["weight_decay"] for group in groups}
    assert decay.pop("head") == 1e-5 and set(decay.values()) == {0.0}
    plain = _optimizer_groups({})(stand_in, 1e-3, 1e-5)
    assert {group["weight_decay"] for group in plain} == {1e-5}


def test_a_sources_lr_scale_multiplies_every_groups_rate(stand_in: nn.Module) -> None:
    """A foundation source's ``lr_scale`` stacks with the user's per-group multipliers."""
    groups = _optimizer_groups({"head": 2.0}, lr_scale=10.0)(stand_in, 1e-3, 1e-5)
    rates = {group["name"]: group["lr"] for group in groups}
    assert rates.pop("head") == pytest.approx(2e-2)
    assert rates and all(rate == pytest.approx(1e-2) for rate in rates.values())


def test_recipe_callbacks(stand_in: nn.Module) -> None:
    spec = parse_freeze("all")
    assert recipe_callbacks(stand_in, spec) == []
    kinds = [type(c) for c in recipe_callbacks(stand_in, spec, probe_epochs=3, l2sp=0.1)]
    assert kinds == [LinearProbe, L2SP]
    with pytest.raises(ConfigError, match=">= 0"):
        recipe_callbacks(stand_in, spec, probe_epochs=-1)
