"""``finetune --from chgnet``: a foundation model through the fine-tuning API and CLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.errors import ConfigError, MissingDependencyError
from matxfer.training import TrainResult, load_model, resolve_config
from matxfer.training.checkpoint import read_checkpoint, split_state_dict
from matxfer.training.predictor import evaluate, load_predictor
from matxfer.transfer.finetune import finetune, load_for_finetuning
from matxfer.transfer.foundation import foundation_source
from matxfer.transfer.freeze import group_of, group_patterns, param_groups

INSTALL = 'pip install "matxfer[chgnet]"'


def _write(path: Path, structures: list[Structure], offset: float) -> Path:
    entries = [
        alignn_entry(s, f"{path.stem}-{i}", offset + s.volume / len(s) / 20)
        for i, s in enumerate(structures)
    ]
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, small_structures: list[Structure]) -> dict:
    folder = tmp_path_factory.mktemp("chgnet_data")
    test = [
        Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        for a in (2.9, 3.0, 3.1)
    ]
    return {
        "train": _write(folder / "train.json", small_structures, 0.0),
        "test": _write(folder / "test.json", test, 0.0),
        "test_structures": test,
    }


@pytest.fixture(scope="module")
def chgnet_run(tmp_path_factory: pytest.TempPathFactory, data: dict) -> TrainResult:
    """Two epochs of CHGNet fine-tuning, 2-body blocks and head trained, head by default."""
    pytest.importorskip("chgnet")
    config = resolve_config("fast", {"epochs": 2, "batch_size": 4, "val_fraction": 0.25})
    out = tmp_path_factory.mktemp("runs") / "chgnet_ft"
    return finetune(data["train"], "chgnet", out, "two_body_only", test=data["test"], config=config)


def test_run_directory_records_the_source_and_leakage(chgnet_run: TrainResult) -> None:
    run = chgnet_run.run_dir
    for name in ("best.ckpt", "metrics.json", "predictions_test.csv", "parity.png", "done.json"):
        assert (run / name).is_file(), name
    record = json.loads((run / "transfer.json").read_text())
    assert record["complete"] and record["head"] == "new"  # the default for a foundation model
    assert record["pretrained"]["source"] == "chgnet"
    assert record["pretrained"]["package_version"] == "0.4.2"
    assert len(record["pretrained"]["sha256"]) == 64
    assert not record["leakage"]["audited"]
    assert "MPtrj" in record["leakage"]["reason"]
    assert record["lr_scale"] == foundation_source("chgnet").lr_scale > 1
    card = (run / "MODEL_CARD.md").read_text()
    assert f"every rate × {record['lr_scale']:g} for this source" in card
    assert "ALIGNN property model" not in card
    assert "CHGNet 0.4.2" in card and "MPtrj" in card
    assert chgnet_run.metrics["test"]["target"]["original"]["n"] == 3


def test_frozen_blocks_stay_pretrained(chgnet_run: TrainResult) -> None:
    """two_body_only: embeddings and 3-body blocks bit-identical; 2-body blocks and the
    readout (CHGNet's readout norm, in the head group) moved."""
    from matxfer.models.chgnet_backbone import CHGNetRegressor

    pretrained = CHGNetRegressor.from_pretrained().state_dict()
    tuned = split_state_dict(read_checkpoint(chgnet_run.best_checkpoint)["state_dict"], "model")
    patterns = group_patterns(CHGNetRegressor)
    moved = {
        group_of(key, patterns)
        for key, value in tuned.items()
        if key in pretrained
        and not torch.equal(value, pretrained[key])
    }  # fmt: skip
    assert moved == {"two_body", "head"}


def test_predict_and_evaluate_on_the_run(chgnet_run: TrainResult, data: dict) -> None:
    run = chgnet_run.run_dir
    saved = pd.read_csv(run / "predictions_test.csv")
    column = next(c for c in saved.columns if c.startswith("pred"))
    predicted = load_predictor(run, device="cpu").predict(data["test_structures"])
    assert predicted[:, 0] == pytest.approx(saved[column].to_numpy(), rel=1e-5, abs=1e-6)
    result = evaluate(run, data["test"], out=run / "eval.json")
    expected = chgnet_run.metrics["test"]["target"]["original"]
    assert result["metrics"]["target"]["original"]["mae"] == pytest.approx(expected["mae"])


def test_frozen_groups_get_no_gradient_and_no_update(small_structures: list[Structure]) -> None:
    pytest.importorskip("chgnet")
    from torch_geometric.loader import DataLoader

    prepared = load_for_finetuning("chgnet", 1, strategy="train:three_body", head="new", seed=0)
    model = prepared.model
    batch = next(iter(DataLoader(model.featurize(small_structures[:4]), batch_size=4)))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2))
    model(batch).square().mean().backward()
    optimizer.step()
    groups = {name: group_of(name, group_patterns(model)) for name in before}
    # CHGNet never reads the output of its last angle update: no gradient reaches it.
    unused = f"backbone.angle_layers.{len(model.backbone.angle_layers) - 1}."
    for name, param in model.named_parameters():
        if groups[name] == "three_body":
            assert param.requires_grad, name
            assert (param.grad is None) == name.startswith(unused), name
        else:
            assert param.grad is None, name
            assert torch.equal(param, before[name]), name
    assert prepared.freeze.trainable.keys() == {"three_body"}


def test_reuse_head_and_test_exclusion_are_refused(tmp_path: Path, data: dict) -> None:
    with pytest.raises(ConfigError, match="--head new"):
        finetune(data["train"], "chgnet", tmp_path / "a", head="reuse")
    with pytest.raises(ConfigError, match="exclude-test-structures"):
        finetune(data["train"], "chgnet", tmp_path / "b", exclude_test_structures=True)


def test_a_folder_named_chgnet_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert foundation_source("chgnet") is not None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chgnet").mkdir()
    assert foundation_source("chgnet") is None


def test_missing_chgnet_is_one_line_with_the_install_command(
    tmp_path: Path,
    data: dict,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from matxfer.cli import main

    monkeypatch.setitem(sys.modules, "chgnet", None)  # import chgnet raises ImportError
    with pytest.raises(MissingDependencyError, match=r"matxfer\[chgnet\]"):
        load_for_finetuning("chgnet", 1, head="new")
    args = ["finetune", data["train"], "--from", "chgnet", "--out", tmp_path / "r"]
    monkeypatch.setattr(sys, "argv", ["matxfer", *map(str, args), "--test", str(data["test"])])
    with pytest.raises(SystemExit) as stop:
        main()
    assert stop.value.code == 2
    shown = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert INSTALL in shown
    assert "Traceback" not in shown


def test_a_chgnet_run_without_chgnet_says_how_to_install(
    chgnet_run: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "chgnet", None)
    with pytest.raises(MissingDependencyError, match=r"matxfer\[chgnet\]"):
        load_model(chgnet_run.run_dir)
