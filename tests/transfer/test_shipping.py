"""Shipped models: packing a run as float16 + card, resolving names, fine-tuning offline."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_multitask import tiny_mpt_config, write_datasets
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.errors import MatxferError
from matxfer.training import TrainResult, load_model
from matxfer.training import shipped as shipped_module
from matxfer.training.checkpoint import LAST_CHECKPOINT, read_checkpoint, resolve_checkpoint
from matxfer.training.predictor import Predictor
from matxfer.training.run import trained_seconds
from matxfer.training.shipped import CARD_KEYS, shipped_model, shipped_models
from matxfer.transfer.finetune import finetune
from matxfer.transfer.multitask import pretrain_multi, recorded_pretraining
from matxfer.transfer.shipping import card_from_run

runner = CliRunner()


@pytest.fixture(scope="module")
def mpt_run(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("runs") / "mpt"
    return pretrain_multi(
        datasets,
        out,
        config=tiny_mpt_config(),
        exclude_test_structures=True,
        max_atoms=2,  # recorded, and re-applied when the audit re-reads the records
        progress=False,
    )


@pytest.fixture
def shipped_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder standing in for the package's shipped models."""
    folder = tmp_path / "shipped"
    folder.mkdir()
    monkeypatch.setattr(shipped_module, "SHIPPED_DIR", folder)
    return folder


@pytest.fixture
def packed(mpt_run: TrainResult, shipped_dir: Path) -> shipped_module.ShippedModel:
    return card_from_run(mpt_run.run_dir, "tiny", "A tiny test model.", "matxfer ...", "a CPU")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_datasets(tmp_path_factory.mktemp("mpt_data"))


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_packing_stores_float16_weights_and_a_complete_card(
    packed: shipped_module.ShippedModel, mpt_run: TrainResult
) -> None:
    stored = torch.load(packed.weights, weights_only=True)
    tensors = [v for v in stored["state_dict"].values() if isinstance(v, torch.Tensor)]
    floats = [v for v in tensors if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    assert "optimizer_states" not in stored
    assert set(CARD_KEYS) <= packed.card.keys()
    packed.verify()
    card = packed.card
    assert card["properties"] == ["a", "b"]
    assert card["data"]["spec"]["exclude_test_structures"] is True
    assert card["data"]["spec"]["data_dir"] is None  # resolved under the user's data dir
    assert card["data"]["spec"]["max_atoms"] == 2 and "at most 2 atoms" in packed.markdown()
    assert card["data"]["train"] + card["data"]["val"] == card["data"]["merged"]
    # A tiny epoch can take milliseconds: compare with the checkpoint, not with a threshold.
    seconds = trained_seconds(mpt_run.run_dir / LAST_CHECKPOINT)
    assert seconds > 0 and card["recipe"]["seconds"] == pytest.approx(seconds, abs=1e-3)
    assert card["recipe"]["epochs"] == 1
    # The card's test metrics are the float16 model's, close to the run's float32 ones.
    for name in ("a", "b"):
        half, full = card["metrics"]["test"][name], card["metrics"]["float32"][name]
        assert half["n"] == full["n"]
        assert half["mae"] == pytest.approx(full["mae"], rel=0.02, abs=1e-3)
    assert "# Shipped model `tiny`" in packed.markdown()


def test_a_name_resolves_where_a_checkpoint_is_accepted(
    packed: shipped_module.ShippedModel, mpt_run: TrainResult, datasets: dict[str, Path]
) -> None:
    assert resolve_checkpoint("tiny") == packed.weights
    half = Predictor(load_model("tiny"))
    full = Predictor(load_model(mpt_run.run_dir))
    test = recorded_pretraining(mpt_run.run_dir)[0].splits.test
    assert np.allclose(half.predict_records(test), full.predict_records(test), rtol=0.01, atol=0.01)


def test_an_existing_path_wins_over_a_shipped_name(
    packed: shipped_module.ShippedModel,
    mpt_run: TrainResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(mpt_run.run_dir, tmp_path / "tiny")
    assert resolve_checkpoint("tiny") == Path("tiny") / "best.ckpt"


def test_unknown_names_and_changed_files_are_named(
    packed: shipped_module.ShippedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MatxferError, match=r"nor a shipped model \(tiny; matxfer models list\)"):
        resolve_checkpoint("tinny")
    with pytest.raises(MatxferError, match="no shipped model 'tinny'; shipped models: tiny"):
        shipped_model("tinny")
    with open(packed.weights, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01")
    with pytest.raises(MatxferError, match="changed or truncated: reinstall matxfer"):
        resolve_checkpoint("tiny")


def test_fine_tuning_from_a_shipped_name_audits_where_the_data_are(
    packed: shipped_module.ShippedModel, datasets: dict[str, Path], tmp_path: Path
) -> None:
    config = tiny_mpt_config(loss="l1")
    result = finetune(datasets["a"], "tiny", tmp_path / "ft", head="new", config=config)
    record = json.loads((result.run_dir / "transfer.json").read_text())
    assert record["pretrained"]["shipped"] == "tiny"
    assert record["pretrained"]["description"] == "shipped model tiny: A tiny test model."
    assert record["leakage"]["audited"] is True
    # The merged pre-training data hold no crystal of either test set.
    assert record["leakage"]["test_leaked"] == 0
    assert "shipped model tiny" in (result.run_dir / "MODEL_CARD.md").read_text()


def test_fine_tuning_offline_says_why_the_audit_did_not_run(
    packed: shipped_module.ShippedModel, datasets: dict[str, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "a_copy"  # the fine-tuning data, elsewhere; the PT data then vanish
    shutil.copytree(datasets["a"], copy)
    card = json.loads(packed.card_path.read_text())
    card["data"]["spec"]["datasets"] = {"a": str(tmp_path / "gone_a"), "b": str(tmp_path / "b")}
    packed.card_path.write_text(json.dumps(card))
    config = tiny_mpt_config(loss="l1")
    result = finetune(copy, "tiny", tmp_path / "ft", head="new", config=config)
    leakage = json.loads((result.run_dir / "transfer.json").read_text())["leakage"]
    assert leakage["audited"] is False
    assert "could not be read" in leakage["reason"] and "--data-dir" in leakage["reason"]
    assert "none of the crystals of the study's seven fixed test sets" in leakage["reason"]


def test_excluding_test_crystals_from_a_shipped_model_is_refused_with_the_reason(
    packed: shipped_module.ShippedModel, datasets: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(MatxferError, match="shipped model, which is not re-trained here"):
        finetune(
            datasets["a"],
            "tiny",
            tmp_path / "ft",
            head="new",
            config=tiny_mpt_config(loss="l1"),
            exclude_test_structures=True,
        )


def test_predict_takes_a_shipped_name(
    packed: shipped_module.ShippedModel, datasets: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    result = runner.invoke(
        app, ["predict", "tiny", str(datasets["a"] / "test.json.gz"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    columns = ["a_prediction", "b_prediction"]
    assert set(columns) <= set(frame.columns) and frame[columns].notna().all().all()


def test_models_cli_lists_and_shows(packed: shipped_module.ShippedModel) -> None:
    listed = runner.invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    assert "tiny" in listed.output and "a b" in listed.output
    as_json = runner.invoke(app, ["models", "list", "--json"])
    assert json.loads(as_json.output)["tiny"]["properties"] == ["a", "b"]
    shown = runner.invoke(app, ["models", "show", "tiny"])
    assert shown.exit_code == 0 and "A tiny test model." in shown.output
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code != 0


# ---------------------------------------------------------------- the models in the package


def test_the_package_ships_small_documented_models_without_test_crystals() -> None:
    models = shipped_models()
    if not models:
        pytest.skip("no shipped models in this checkout")
    total = sum(m.weights.stat().st_size for m in models.values())
    assert total <= 5 * 1024**2
    for name, model in models.items():
        model.verify()
        card = model.card
        assert card["data"]["spec"]["exclude_test_structures"] is True, name
        for left_out in card["data"]["spec"]["exclude"]:
            if name.startswith("mpt7-no-"):
                assert left_out not in model.properties
        if name.startswith("mpt7-no-"):
            assert name.removeprefix("mpt7-no-") not in model.properties
        assert all(v["r2"] is not None for v in card["metrics"]["test"].values()), name
        checkpoint = read_checkpoint(model.weights)
        assert checkpoint["matxfer"]["target_names"] == model.properties


def test_fine_tuning_a_shipped_model_on_the_demo_data_works_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`finetune demo-ph --from mpt7 --head new` on a fresh install: no study data anywhere."""
    if "mpt7" not in shipped_models():
        pytest.skip("mpt7 is not shipped in this checkout")
    monkeypatch.setenv("MATXFER_DATA_DIR", str(tmp_path / "no_data_here"))
    out = tmp_path / "ft"
    args = ["finetune", "demo-ph", "--from", "mpt7", "--head", "new", "--out", str(out)]
    args += ["--trial", "1", "--size", "10", "--profile", "fast", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "transfer.json").read_text())
    assert record["pretrained"]["shipped"] == "mpt7"
    assert record["leakage"]["audited"] is False
    assert "pass --data-dir where the study's datasets are" in record["leakage"]["reason"]
    assert "leakage audit: not run" in result.output
