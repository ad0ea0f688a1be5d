"""``matxfer train|finetune --ensemble K``: members share one split, seeds differ; then
intervals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import TINY_MODEL
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import resolve_config, save_config, save_model
from matxfer.training.inputs import DataSpec
from matxfer.training.rundir import read_config, read_run_info, read_transfer_record
from matxfer.uncertainty.calset import FILE, UNSEEN_AND_VALIDATION, member_splits
from matxfer.uncertainty.members import train_ensemble


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-epoch tiny model's config file (40 % of the records validate)."""
    values = {"model": TINY_MODEL, "epochs": 3, "batch_size": 8, "val_fraction": 0.4,
              "early_stopping_patience": None, "target_transform": "standardize"}  # fmt: skip
    config = tmp_path_factory.mktemp("config") / "tiny.yaml"
    save_config(resolve_config("fast", values), config)
    return config


@pytest.fixture(scope="module")
def ensemble_dir(
    dataset: Path, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two 3-epoch tiny members, trained through the command line (seed 7)."""
    out = tmp_path_factory.mktemp("runs") / "ens"
    args = ["train", str(dataset), "--trial", "1", "--size", "50", "--config", str(tiny_config),
            "--seed", "7", "--ensemble", "2", "--out", str(out), "--no-progress"]  # fmt: skip
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    assert "2 members in" in shown.output
    return out


def test_members_share_the_split_and_differ_in_seed(ensemble_dir: Path) -> None:
    members = [ensemble_dir / "member-0", ensemble_dir / "member-1"]
    assert [read_config(m).seed for m in members] == [7, 8]
    first, second = (member_splits(m)[0] for m in members)  # split hashes verified
    for part in ("train", "val", "test"):
        assert [r.id for r in first.parts()[part]] == [r.id for r in second.parts()[part]]
    assert json.loads((ensemble_dir / "ensemble.json").read_text())["split_seed"] == 7
    tests = [pd.read_csv(m / "predictions_test.csv")["prediction"] for m in members]
    assert not np.allclose(tests[0], tests[1])


def test_evaluate_an_ensemble_directory(ensemble_dir: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    args = ["evaluate", str(ensemble_dir), str(dataset / "test.json.gz"), "--interval", "0.9",
            "--out", str(out)]  # fmt: skip
    shown = CliRunner().invoke(app, args)
    assert shown.exit_code == 0, (shown.output, shown.exception)
    result = json.loads(out.read_text())
    assert result["calibration"]["members"] == ["member-0", "member-1"]
    assert result["calibration"]["calibration"]["method"] == UNSEEN_AND_VALIDATION
    assert result["intervals"]["target"]["n_calibration"] == 30  # 10 unseen + 20 validation


def test_resume_keeps_finished_members_and_checks_the_seed(
    ensemble_dir: Path, dataset: Path
) -> None:
    spec = DataSpec(str(dataset), trial=1, size=50)
    config = read_config(ensemble_dir / "member-0")
    before = (ensemble_dir / "member-1" / "best.ckpt").stat().st_mtime_ns
    results = train_ensemble(spec, ensemble_dir, config, 2, resume=True)
    assert [Path(r["run_dir"]).name for r in results] == ["member-0", "member-1"]
    assert (ensemble_dir / "member-1" / "best.ckpt").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="resume with --seed 7"):
        train_ensemble(spec, ensemble_dir, config.model_copy(update={"seed": 3}), 2, resume=True)
    with pytest.raises(ConfigError, match="at least 2 members"):
        train_ensemble(spec, ensemble_dir, config, 1)


# ---------------------------------------------------------------- finetune --ensemble K


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny (untrained) checkpoint to fine-tune from; a bare file, so not audited."""
    torch.manual_seed(0)
    transform = TargetTransform("standardize", 1).fit(torch.rand(20, 1))
    model = ALIGNN(num_outputs=1, **TINY_MODEL)
    path = tmp_path_factory.mktemp("pt") / "pt.ckpt"
    return save_model(path, model, transform, GraphConfig(), ["target"])


def _finetune(dataset: Path, pretrained: Path, out: Path, *args: str) -> str:
    """``matxfer finetune DATASET --trial 1 --size 50 --from PT --out OUT --head new ...``."""
    shown = CliRunner().invoke(
        app,
        ["finetune", str(dataset), "--trial", "1", "--size", "50", "--from", str(pretrained),
         "--out", str(out), "--head", "new", "--no-progress", *args],
    )  # fmt: skip
    assert shown.exit_code == 0, (shown.output, shown.exception)
    return shown.output


@pytest.fixture(scope="module")
def finetuned_dir(
    dataset: Path, pretrained: Path, tiny_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Two 3-epoch fine-tuned members (new heads), through the command line (seed 7)."""
    out = tmp_path_factory.mktemp("runs") / "ft-ens"
    shown = _finetune(dataset, pretrained, out, "--config", str(tiny_config), "--seed", "7",
                      "--ensemble", "2")  # fmt: skip
    assert "2 members in" in shown
    return out


def test_finetuned_members_share_the_split_and_differ_in_seed(finetuned_dir: Path) -> None:
    members = [finetuned_dir / "member-0", finetuned_dir / "member-1"]
    manifest = json.loads((finetuned_dir / "ensemble.json").read_text())
    assert manifest == {"members": ["member-0", "member-1"], "split_seed": 7, "seeds": [7, 8]}
    assert [read_config(m).seed for m in members] == [7, 8]
    hashes = [read_run_info(m)["split_hashes"] for m in members]
    assert hashes[0] == hashes[1]
    for member in members:
        record = read_transfer_record(member)
        assert record["complete"] is True and record["head"] == "new"
        assert "## Transfer" in (member / "MODEL_CARD.md").read_text()
        member_splits(member)  # re-derivable with the shared split's seed (hashes checked)
    tests = [pd.read_csv(m / "predictions_test.csv")["prediction"] for m in members]
    assert not np.allclose(tests[0], tests[1])  # other head init and batch order


def test_evaluate_a_finetuned_ensemble(finetuned_dir: Path, dataset: Path, tmp_path: Path) -> None:
    test = dataset / "test.json.gz"
    automatic, given = tmp_path / "auto.json", tmp_path / "file.json"
    shown = CliRunner().invoke(app, ["evaluate", str(finetuned_dir), str(test), "--interval",
                                     "0.9", "--out", str(automatic)])  # fmt: skip
    assert shown.exit_code == 0, (shown.output, shown.exception)
    result = json.loads(automatic.read_text())
    assert result["calibration"]["members"] == ["member-0", "member-1"]
    assert result["calibration"]["calibration"]["method"] == UNSEEN_AND_VALIDATION
    assert result["intervals"]["target"]["n_calibration"] == 30  # 10 unseen + 20 validation
    # A file holding the whole pool loses the 30 records the members trained on.
    shown = CliRunner().invoke(app, ["evaluate", str(finetuned_dir), str(test), "--interval",
                                     "0.9", "--calibration", str(dataset / "pool.json.gz"),
                                     "--out", str(given)])  # fmt: skip
    assert shown.exit_code == 0, (shown.output, shown.exception)
    calibration = json.loads(given.read_text())["calibration"]["calibration"]
    assert calibration["method"] == FILE
    assert (calibration["n_records"], calibration["dropped_trained_on"]) == (30, 30)


def test_finetune_ensemble_of_one_is_refused(
    dataset: Path, pretrained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    shown = CliRunner().invoke(app, ["finetune", str(dataset), "--from", str(pretrained),
                                     "--out", str(out), "--ensemble", "1"])  # fmt: skip
    assert isinstance(shown.exception, ConfigError)
    assert "--ensemble needs at least 2 members, got 1" in str(shown.exception)
    assert not out.exists()


def test_finetune_ensemble_resume_keeps_finished_members(
    finetuned_dir: Path, dataset: Path, pretrained: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ft-ens"
    shutil.copytree(finetuned_dir, out)
    shutil.rmtree(out / "member-1")  # as if interrupted before member 1 started
    before = (out / "member-0" / "best.ckpt").stat().st_mtime_ns
    # No --config: the ensemble resumes with member 0's (seed 7, the split's).
    _finetune(dataset, pretrained, out, "--ensemble", "2", "--resume")
    assert (out / "member-0" / "best.ckpt").stat().st_mtime_ns == before
    assert read_transfer_record(out / "member-1")["complete"] is True
    assert read_config(out / "member-1").seed == 8
    hashes = [read_run_info(out / m)["split_hashes"] for m in ("member-0", "member-1")]
    assert hashes[0] == hashes[1]
