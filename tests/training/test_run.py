"""End-to-end training on a tiny synthetic dataset: outputs, best epoch, units, API."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback, EarlyStopping
from pymatgen.io.ase import AseAtomsAdaptor
from training_helpers import synthetic_structures, tiny_config, write_alignn_json

from matxfer.data import read_dataset
from matxfer.errors import ConfigError, MatxferError
from matxfer.models import ALIGNN
from matxfer.training import (
    TrainResult,
    evaluate,
    load_model,
    load_predictor,
    predict,
    save_model,
    train,
)
from matxfer.training.outputs import epoch_log
from matxfer.training.run import stop_reason

RUN_FILES = [
    "best.ckpt",
    "last.ckpt",
    "config.yaml",
    "metrics.json",
    "predictions_test.csv",
    "parity.png",
    "learning_curve.png",
    "MODEL_CARD.md",
    "logs/csv/metrics.csv",
]


def test_run_directory_holds_every_output(trained_run: TrainResult) -> None:
    run = trained_run.run_dir
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert any((run / "logs/tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("train", "val", "test"):
        for unit in ("original", "transformed"):
            stats = metrics[split]["target"][unit]
            assert set(stats) == {"r2", "mae", "rmse", "n"}
            assert all(math.isfinite(stats[k]) for k in ("r2", "mae", "rmse"))
    counts = [metrics[s]["target"]["original"]["n"] for s in ("train", "val", "test")]
    assert sum(counts) == 36 and counts[2] == 4  # a seeded 10% test split of the file
    card = (run / "MODEL_CARD.md").read_text()
    assert "data hash" in card and "torch" in card and "best.ckpt" in card


def test_best_checkpoint_is_the_lowest_validation_mae_epoch(trained_run: TrainResult) -> None:
    log = epoch_log(trained_run.run_dir / "logs/csv").dropna(subset=["val_mae"])
    best_logged = int(log.loc[log["val_mae"].idxmin(), "epoch"])
    assert load_model(trained_run.best_checkpoint).epoch == best_logged
    assert trained_run.metrics["best_epoch"] == best_logged
    assert load_model(trained_run.run_dir / "last.ckpt").epoch == trained_run.config.epochs - 1


def test_reported_numbers_come_from_the_best_weights_in_original_units(
    trained_run: TrainResult, tiny_data: Path
) -> None:
    frame = pd.read_csv(trained_run.run_dir / "predictions_test.csv")
    assert list(frame.columns) == ["id", "target", "prediction"]
    by_id = {r.id: r for r in read_dataset(tiny_data).records}
    assert np.allclose(frame["target"], [by_id[i].target for i in frame["id"]])
    predictor = load_predictor(trained_run.run_dir, device="cpu")
    again = predictor.predict([by_id[i].structure for i in frame["id"]])
    assert again.shape == (len(frame), 1)
    assert np.allclose(again[:, 0], frame["prediction"], atol=1e-5)
    # Targets are ~100 + O(1): outputs left in standardized units would be near 0.
    assert abs(frame["prediction"].mean() - frame["target"].mean()) < 5
    mae = trained_run.metrics["test"]["target"]["original"]["mae"]
    assert mae == pytest.approx(np.abs(frame["prediction"] - frame["target"]).mean())


def test_predictor_takes_ase_atoms_like_structures(
    trained_run: TrainResult, tiny_data: Path
) -> None:
    structures = [r.structure for r in read_dataset(tiny_data).records[:5]]
    atoms = [AseAtomsAdaptor.get_atoms(s) for s in structures]
    predictor = load_predictor(trained_run.run_dir, device="cpu")
    assert np.allclose(predictor.predict(structures), predictor.predict(atoms), atol=1e-5)
    assert predictor.predict(structures[0]).shape == (1, 1)


def test_evaluate_and_predict_write_files(
    trained_run: TrainResult, tiny_data: Path, tmp_path: Path
) -> None:
    result = evaluate(trained_run.run_dir, tiny_data)
    assert Path(result["output"]) == trained_run.run_dir / "eval_tiny.json"
    saved = json.loads(Path(result["output"]).read_text())
    assert saved["n"] == 36 and saved["metrics"]["target"]["original"]["n"] == 36
    frame = predict(trained_run.best_checkpoint, tiny_data, out=tmp_path / "p.csv")
    assert len(pd.read_csv(tmp_path / "p.csv")) == 36
    assert set(frame.columns) == {"id", "target", "prediction"}


def test_predict_reads_unlabelled_structure_files(trained_run: TrainResult, tmp_path: Path) -> None:
    structures = synthetic_structures(3, seed=7)
    for index, structure in enumerate(structures):
        structure.to(filename=str(tmp_path / f"s{index}.cif"))
    frame = predict(trained_run.run_dir, tmp_path)
    assert list(frame.columns) == ["id", "prediction"]
    assert frame["id"].tolist() == ["s0.cif", "s1.cif", "s2.cif"]
    expected = load_predictor(trained_run.run_dir, device="cpu").predict(structures)[:, 0]
    assert np.allclose(frame["prediction"], expected, atol=1e-4)


def test_same_seed_gives_identical_metrics(
    trained_run: TrainResult, tiny_data: Path, tmp_path: Path
) -> None:
    again = train(tiny_data, tmp_path / "again", config=tiny_config(), progress=False)
    assert again.metrics == trained_run.metrics


def test_training_records_why_it_stopped(
    trained_run: TrainResult, tiny_data: Path, tmp_path: Path
) -> None:
    assert trained_run.metrics["stopped_by"] == "max_epochs"
    assert "reaching the epoch limit" in (trained_run.run_dir / "MODEL_CARD.md").read_text()
    # A budget far shorter than one epoch: the first epoch ends, the budget is spent.
    budget = train(
        tiny_data,
        tmp_path / "budget",
        config=tiny_config(epochs=50, max_minutes=1e-4),
        progress=False,
    )
    assert budget.metrics["stopped_by"] == "time_budget"
    assert budget.metrics["epochs_trained"] < 50
    assert math.isfinite(budget.metrics["test"]["target"]["original"]["r2"])
    assert "time budget" in (budget.run_dir / "MODEL_CARD.md").read_text()


def test_early_stopping_is_named_as_the_stop_reason() -> None:
    stopper = EarlyStopping(monitor="val_mae", patience=1)
    stopper.stopped_epoch = 4
    module = SimpleNamespace(diverged_at=None)
    trainer = SimpleNamespace(callbacks=[stopper], current_epoch=5, lightning_module=module)
    assert stop_reason(trainer) == "early_stopping"
    stopper.stopped_epoch = 0
    assert stop_reason(trainer) == "max_epochs"
    module.diverged_at = (3, 0)
    assert stop_reason(trainer) == "diverged"


class _InfiniteTargetsFrom(Callback):
    """Makes every training target infinite from ``epoch`` on: the loss diverges."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch >= self.epoch:
            batch.y.fill_(math.inf)


def test_a_diverging_run_stops_and_keeps_its_best_finite_epoch(
    tiny_data: Path, tmp_path: Path
) -> None:
    result = train(
        tiny_data,
        tmp_path / "diverged",
        config=tiny_config(epochs=6),
        progress=False,
        callbacks=[_InfiniteTargetsFrom(epoch=2)],
    )
    assert result.metrics["stopped_by"] == "diverged"
    assert result.metrics["epochs_trained"] == 3  # stopped in the first batch of epoch 2
    assert result.metrics["best_epoch"] in (0, 1)
    for split in ("train", "val", "test"):
        assert math.isfinite(result.metrics[split]["target"]["original"]["mae"])
    last = load_model(result.run_dir / "last.ckpt").model
    assert all(torch.isfinite(p).all() for p in last.parameters())  # the step was skipped
    assert "diverged" in (result.run_dir / "MODEL_CARD.md").read_text()


def test_non_finite_predictions_are_an_error_naming_the_records(
    trained_run: TrainResult, tiny_data: Path, tmp_path: Path
) -> None:
    loaded = load_model(trained_run.run_dir)
    with torch.no_grad():
        next(iter(loaded.model.head.parameters())).fill_(math.nan)
    path = save_model(
        tmp_path / "nan.ckpt", loaded.model, loaded.transform, loaded.graph_config,
        loaded.target_names,
    )  # fmt: skip
    first_id = read_dataset(tiny_data).records[0].id
    for run in (evaluate, predict):
        with pytest.raises(MatxferError, match=rf"nan\.ckpt predicted NaN .*{first_id}"):
            run(path, tiny_data)


def test_existing_run_is_not_overwritten(trained_run: TrainResult, tiny_data: Path) -> None:
    with pytest.raises(MatxferError, match="already holds a training run"):
        train(tiny_data, trained_run.run_dir, config=tiny_config(), progress=False)
    with pytest.raises(ConfigError, match="epochs"):
        train(
            tiny_data,
            trained_run.run_dir,
            config=tiny_config(epochs=9),
            resume=True,
            progress=False,
        )


def test_missing_or_corrupted_checkpoints_are_clear_errors(
    trained_run: TrainResult, tmp_path: Path
) -> None:
    with pytest.raises(MatxferError, match="no such run directory"):
        load_predictor(tmp_path / "nowhere")
    with pytest.raises(MatxferError, match=r"holds no best\.ckpt"):
        load_predictor(tmp_path)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(trained_run.best_checkpoint.read_bytes()[:5000])
    with pytest.raises(MatxferError, match="corrupted"):
        load_model(broken)


def test_lean_checkpoint_rebuilds_the_model_strictly(
    trained_run: TrainResult, tmp_path: Path
) -> None:
    loaded = load_model(trained_run.run_dir)
    path = save_model(
        tmp_path / "model.ckpt",
        loaded.model,
        loaded.transform,
        loaded.graph_config,
        loaded.target_names,
    )
    rebuilt = load_model(path)
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, rebuilt.model.state_dict()[key]), key
    assert rebuilt.transform.to_dict() == loaded.transform.to_dict()
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["matxfer"]["model_config"]["hidden_features"] = 32
    torch.save(checkpoint, tmp_path / "edited.ckpt")
    with pytest.raises(MatxferError, match="do not match"):
        load_model(tmp_path / "edited.ckpt")


def test_resume_refuses_a_directory_without_a_run(tiny_data: Path, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path, ignore_errors=True)
    with pytest.raises(MatxferError, match="nothing to resume"):
        train(tiny_data, tmp_path, config=tiny_config(), resume=True, progress=False)


def test_a_supplied_model_trains_with_its_own_parameter_groups(
    tiny_data: Path, tmp_path: Path
) -> None:
    config = tiny_config(epochs=1)
    model = ALIGNN(num_outputs=1, **config.model.model_dump())
    for parameter in model.atom_embedding.parameters():
        parameter.requires_grad_(False)
    frozen = {k: v.clone() for k, v in model.atom_embedding.state_dict().items()}
    head_before = [p.detach().clone() for p in model.head.parameters()]
    seen: list[float] = []

    def groups(module: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
        seen.append(lr)
        head = list(module.head.parameters())
        rest = [
            p for n, p in module.named_parameters() if p.requires_grad and not n.startswith("head.")
        ]
        return [{"params": rest, "lr": lr}, {"params": head, "lr": 10 * lr}]

    result = train(
        tiny_data, tmp_path / "run", config=config, progress=False, model=model, param_groups=groups
    )
    assert seen == [config.lr]
    trained = load_model(result.run_dir)
    for key, value in frozen.items():
        assert torch.equal(trained.model.atom_embedding.state_dict()[key], value), key
    assert any(
        not torch.equal(a, b)
        for a, b in zip(head_before, trained.model.head.parameters(), strict=True)
    )


def test_resume_refuses_corrupted_checkpoints_and_other_data(
    trained_run: TrainResult, tiny_data: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(trained_run.run_dir, copy)
    other = write_alignn_json(tmp_path / "other.json", synthetic_structures(36, seed=9))
    with pytest.raises(MatxferError, match="data differ"):
        train(other, copy, config=tiny_config(), resume=True, progress=False)
    (copy / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(MatxferError, match="corrupted"):
        train(tiny_data, copy, config=tiny_config(), resume=True, progress=False)


def test_a_yeo_johnson_run_reports_and_reloads_in_original_units(
    tiny_data: Path, tmp_path: Path
) -> None:
    result = train(
        tiny_data,
        tmp_path / "yj",
        config=tiny_config(target_transform="yeo-johnson"),
        progress=False,
    )
    assert result.metrics["target_transform"] == "yeo-johnson"
    frame = pd.read_csv(result.run_dir / "predictions_test.csv")
    by_id = {r.id: r for r in read_dataset(tiny_data).records}
    predictor = load_predictor(result.run_dir, device="cpu")
    assert predictor.loaded.transform.kind == "yeo-johnson"
    again = predictor.predict([by_id[i].structure for i in frame["id"]])
    assert np.allclose(again[:, 0], frame["prediction"], atol=1e-5)
    # Targets are ~100 + O(1): outputs left in transformed units would be near 0.
    assert abs(frame["prediction"].mean() - frame["target"].mean()) < 5


def test_a_bf16_mixed_run_trains_reports_and_predicts_in_float32(
    tiny_data: Path, tmp_path: Path
) -> None:
    result = train(
        tiny_data, tmp_path / "bf16", config=tiny_config(precision="bf16-mixed"), progress=False
    )
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["precision"] == "bf16-mixed"
    assert "precision" not in tiny_config().model_dump(mode="json")  # old configs unchanged
    test = result.metrics["test"]["target"]["original"]
    assert np.isfinite(test["mae"]) and np.isfinite(test["r2"])
    state = torch.load(result.run_dir / "best.ckpt", weights_only=False)["state_dict"]
    weights = [v for v in state.values() if torch.is_tensor(v)]
    assert weights and all(v.dtype != torch.bfloat16 for v in weights)
    frame = pd.read_csv(result.run_dir / "predictions_test.csv")
    by_id = {r.id: r for r in read_dataset(tiny_data).records}
    again = load_predictor(result.run_dir, device="cpu").predict(
        [by_id[i].structure for i in frame["id"]]
    )
    # Reloaded for prediction in float32: within bfloat16 rounding of the autocast test.
    assert np.allclose(
        again[:, 0], frame["prediction"], rtol=0.05, atol=0.05 * frame["target"].std()
    )
