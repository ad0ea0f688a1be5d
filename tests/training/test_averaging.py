"""EMA of the weights (``ema_decay``): the update, the config, checkpoints and resume."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from training_helpers import tiny_config

from matxfer.errors import ConfigError
from matxfer.training import TrainResult, train
from matxfer.training.averaging import EMAWeights, ema_update
from matxfer.training.checkpoint import read_checkpoint
from matxfer.training.config import load_config, resolve_config, save_config
from matxfer.training.outputs import epoch_log
from matxfer.training.rundir import check_run_dir

DECAY = 0.9  # large steps, so that 3 tiny epochs leave the average far from the weights


class RecordSteps(pl.Callback):
    """The trained weights and buffers after every optimizer step, with their epoch."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, dict[str, torch.Tensor]]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        state = module.state_dict()  # tensors, and the transform's extra state (a dict)
        tensors = {k: v.detach().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
        self.steps.append((trainer.current_epoch, tensors))


class StopAtEpoch(pl.Callback):
    """Interrupts training at the start of ``epoch`` (``last.ckpt`` holds the one before)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("interrupted")


@pytest.fixture(scope="module")
def recorded(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainResult, RecordSteps]:
    steps = RecordSteps()
    out = tmp_path_factory.mktemp("ema") / "run"
    result = train(
        tiny_data, out, config=tiny_config(ema_decay=DECAY), progress=False, callbacks=[steps]
    )
    return result, steps


def expected_averages(steps: RecordSteps) -> list[dict[str, torch.Tensor]]:
    """θ̄_1 = θ_1, θ̄_t = d θ̄_{t-1} + (1 - d) θ_t in float64 (integers: the current value)."""
    averages, average = [], None
    for _, state in steps.steps:
        if average is None:
            average = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
        else:
            average = {
                k: DECAY * average[k] + (1 - DECAY) * v.double() if v.is_floating_point() else v
                for k, v in state.items()
            }
        averages.append(average)
    return averages


def assert_state_close(actual: dict[str, Any], expected: dict[str, torch.Tensor]) -> None:
    tensors = {k: v for k, v in actual.items() if isinstance(v, torch.Tensor)}
    assert tensors.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(
            tensors[key], value.to(tensors[key].dtype), rtol=1e-5, atol=1e-6, msg=key
        )


@pytest.mark.parametrize("decay", [0.99, 0.999])
def test_update_is_the_ema_and_leaves_unchanged_tensors_bit_identical(decay: float) -> None:
    update = ema_update(decay)
    generator = torch.Generator().manual_seed(0)
    average, current = torch.randn(2, 1000, generator=generator)
    torch.testing.assert_close(update(average, current, 1), decay * average + (1 - decay) * current)
    # Frozen weights and fitted statistics: the product form moves them by rounding.
    for constant in (average, average.double()):
        kept = constant.clone()
        for _ in range(2000):
            kept = update(kept, constant, 1)
        assert torch.equal(kept, constant)
    counter = torch.tensor(7)  # BatchNorm's num_batches_tracked
    assert torch.equal(update(counter, torch.tensor(8), 1), torch.tensor(8))
    assert torch.equal(update(torch.tensor(False), torch.tensor(True), 1), torch.tensor(True))


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1])
def test_config_rejects_decay_outside_zero_one(decay: float) -> None:
    with pytest.raises(ConfigError, match=rf"ema_decay={decay!r}: Input should be"):
        resolve_config("fast", {"ema_decay": decay})
    with pytest.raises(ConfigError, match="ema_decay must be between 0 and 1"):
        EMAWeights(decay)


def test_config_file_sets_it_and_unset_it_is_not_written(tmp_path: Path) -> None:
    # Configs (and so study job ids) of runs from before the field existed stay the same.
    assert "ema_decay" not in resolve_config("paper").model_dump(mode="json")
    path = tmp_path / "ema.yaml"
    path.write_text("ema_decay: 0.999\n")  # what `train/finetune --config` read
    config = load_config(path, profile="fast")
    assert config.ema_decay == 0.999
    save_config(config, tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml") == config


def test_averaged_copy_lives_on_the_training_device() -> None:
    # Lightning's setup runs before the strategy moves the module: its device is still the CPU.
    callback = EMAWeights(0.99)
    module = pl.LightningModule()
    module.layer = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("meta")))
    callback.setup(trainer, module, "fit")  # type: ignore[arg-type]
    assert {p.device.type for p in callback._average_model.parameters()} == {"meta"}


def test_checkpoints_hold_the_average_and_validation_judges_it(
    recorded: tuple[TrainResult, RecordSteps], trained_run: TrainResult
) -> None:
    result, steps = recorded
    averages = expected_averages(steps)
    last = read_checkpoint(result.run_dir / "last.ckpt")
    assert_state_close(last["state_dict"], averages[-1])
    trained = steps.steps[-1][1]
    for key, value in trained.items():  # the trained weights, kept for resuming
        assert torch.equal(last["current_model_state"][key], value), key
    assert int(last["averaging_state"]["n_averaged"]) == len(steps.steps)
    fitted = {k: v for k, v in trained.items() if k.startswith("transform.")}
    assert fitted and all(torch.equal(last["state_dict"][k], v) for k, v in fitted.items())

    best_epoch = result.metrics["best_epoch"]
    at_best = max(i for i, (epoch, _) in enumerate(steps.steps) if epoch == best_epoch)
    assert_state_close(read_checkpoint(result.best_checkpoint)["state_dict"], averages[at_best])
    # The logged validation MAE is that of the averaged weights that best.ckpt holds.
    log = epoch_log(result.run_dir / "logs/csv").dropna(subset=["val_mae"])
    assert int(log.loc[log["val_mae"].idxmin(), "epoch"]) == best_epoch
    logged = float(log.loc[log["epoch"] == best_epoch, "val_mae"].iloc[0])
    assert logged == pytest.approx(result.metrics["val"]["target"]["transformed"]["mae"], rel=1e-5)

    # Averaging changes what is saved, never the training itself (same config, seed 0).
    plain = read_checkpoint(trained_run.run_dir / "last.ckpt")["state_dict"]
    assert all(torch.equal(plain[k], v) for k, v in trained.items())
    first = steps.steps[0][1]
    for key, value in trained.items():
        # Weights that never train (norms whose output no layer reads) stay exact.
        unchanged = torch.equal(first[key], value)
        assert torch.equal(last["state_dict"][key], value) == unchanged, key


def test_resume_after_an_interruption_continues_the_average(
    recorded: tuple[TrainResult, RecordSteps], tiny_data: Path, tmp_path: Path
) -> None:
    uninterrupted, _ = recorded
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        train(
            tiny_data,
            out,
            config=tiny_config(ema_decay=DECAY),
            progress=False,
            callbacks=[StopAtEpoch(2)],
        )
    assert read_checkpoint(out / "last.ckpt")["epoch"] == 1
    resumed = train(
        tiny_data, out, config=tiny_config(ema_decay=DECAY), progress=False, resume=True
    )
    assert resumed.metrics == uninterrupted.metrics
    for name in ("best.ckpt", "last.ckpt"):
        got, want = read_checkpoint(out / name), read_checkpoint(uninterrupted.run_dir / name)
        for part in ("state_dict", "current_model_state", "averaging_state"):
            for key, value in want[part].items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(got[part][key], value), f"{name} {part} {key}"


def test_resume_with_another_decay_is_refused(
    recorded: tuple[TrainResult, RecordSteps], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(recorded[0].run_dir, copy)
    # Off (not written to the config) or another value: named either way.
    for other in (tiny_config(), tiny_config(ema_decay=0.99)):
        with pytest.raises(ConfigError, match=r"changed: \['ema_decay'\]"):
            check_run_dir(copy, other, resume=True)
    check_run_dir(copy, tiny_config(ema_decay=DECAY), resume=True)
