"""Fine-tuning: preparing a checkpoint, and ``finetune`` end to end on tiny synthetic data."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml
from builders import TINY_MODEL, alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import (
    TrainResult,
    is_finished,
    load_model,
    resolve_config,
    save_model,
    train,
)
from matxfer.training.checkpoint import read_checkpoint, split_state_dict
from matxfer.training.inputs import DataSpec, prepare_splits
from matxfer.training.outputs import data_hash
from matxfer.transfer.finetune import finetune, load_for_finetuning
from matxfer.transfer.freeze import group_of
from matxfer.transfer.pretrained import pretraining_records

ROOT = Path(__file__).resolve().parents[2]
ELEMENTS = ["Li", "Na", "Mg", "Al", "Si", "O", "Cl", "Ti", "Fe", "Cu"]
#: FT test crystals planted (slightly strained) in the PT data, and FT training crystals.
LEAKED_TEST, LEAKED_TRAIN = 5, 3


# ---------------------------------------------------------------- preparing a checkpoint


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, ALIGNN]:
    torch.manual_seed(0)
    model = ALIGNN(
        num_outputs=2,
        alignn_layers=1,
        gcn_layers=1,
        hidden_features=8,
        embedding_features=4,
        edge_input_features=6,
        triplet_input_features=4,
    )
    transform = TargetTransform("standardize", 2).fit(torch.randn(10, 2))
    path = save_model(
        tmp_path / "pt.ckpt", model, transform, GraphConfig(max_neighbors=8), ["a", "b"]
    )
    return path, model


def test_weights_kept_head_replaced_groups_frozen(checkpoint: tuple[Path, ALIGNN]) -> None:
    path, pretrained = checkpoint
    prepared = load_for_finetuning(path, 1, strategy="three_body_only", head="new", seed=0)
    model = prepared.model
    assert prepared.graph_config.max_neighbors == 8
    assert model.training
    assert model.config_dict()["num_outputs"] == 1
    reference = pretrained.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, reference[key]), key
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"alignn_layers", "head"}
    assert prepared.freeze.num_frozen > 0


def test_reuse_with_other_output_count_fails(checkpoint: tuple[Path, ALIGNN]) -> None:
    with pytest.raises(ConfigError, match=r"'new'.*--head-output"):
        load_for_finetuning(checkpoint[0], 1, head="reuse")


def test_reusing_one_output_of_a_multi_property_head(checkpoint: tuple[Path, ALIGNN]) -> None:
    path, pretrained = checkpoint
    model = load_for_finetuning(path, 1, head="reuse", head_outputs=["b"]).model
    assert model.config_dict()["num_outputs"] == 1
    assert torch.equal(model.head.out.weight[0], pretrained.head.out.weight[1])
    assert torch.equal(model.head.out.bias, pretrained.head.out.bias[1:])
    with pytest.raises(ConfigError, match="not among"):
        load_for_finetuning(path, 1, head="reuse", head_outputs=["c"])
    with pytest.raises(ConfigError, match="reuse"):
        load_for_finetuning(path, 1, head="new", head_outputs=["b"])


def test_deeper_head_adds_hidden_layers(checkpoint: tuple[Path, ALIGNN]) -> None:
    model = load_for_finetuning(checkpoint[0], 1, head="deeper", extra_layers=2, seed=0).model
    assert model.head.hidden_layers == checkpoint[1].head.hidden_layers + 2
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------- finetune end to end


def unique_structures() -> Iterator[Structure]:
    """Cells with pairwise different formulas: no two are the same crystal."""
    for element in ELEMENTS:
        yield Structure(Lattice.cubic(3.0), [element], [[0, 0, 0]])
    for first, second in itertools.combinations(ELEMENTS, 2):
        yield Structure(Lattice.cubic(3.4), [first, second], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for first, second in itertools.permutations(ELEMENTS, 2):
        yield Structure(
            Lattice.tetragonal(3.3, 5.0),
            [first, first, second],
            [[0, 0, 0], [0.5, 0.5, 0.33], [0, 0, 0.6]],
        )


def write_dataset(path: Path, structures: list[Structure], scale: float) -> Path:
    """ALIGNN JSON with a learnable target ``scale * (mean Z / 10 + volume per atom / 20)``."""
    items = []
    for index, s in enumerate(structures):
        target = scale * (sum(site.specie.Z for site in s) / len(s) / 10 + s.volume / len(s) / 20)
        items.append(alignn_entry(s, f"{path.stem}-{index}", target))
    path.write_text(json.dumps(items))
    return path


def strained(structure: Structure) -> Structure:
    """The same crystal, relaxed slightly differently."""
    copy = structure.copy()
    copy.scale_lattice(structure.volume * 1.02)
    return copy


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """PT pool + test, FT train + test; some FT crystals planted in the PT pool."""
    folder = tmp_path_factory.mktemp("data")
    cells = list(itertools.islice(unique_structures(), 80))
    ft_train, ft_test = cells[40:70], cells[70:80]
    pt_pool = cells[:30] + [strained(s) for s in ft_test[:LEAKED_TEST]]
    pt_pool += [strained(s) for s in ft_train[:LEAKED_TRAIN]]
    return {
        "pt": write_dataset(folder / "pt.json", pt_pool, 1.0),
        "pt_test": write_dataset(folder / "pt_test.json", cells[30:40], 1.0),
        "ft": write_dataset(folder / "ft.json", ft_train, -40.0),
        "ft_test": write_dataset(folder / "ft_test.json", ft_test, -40.0),
    }


def tiny(epochs: int = 2, norm: str = "batch") -> object:
    return resolve_config(
        "fast",
        {
            "model": {**TINY_MODEL, "norm": norm},
            "graph": {"max_neighbors": 8},
            "epochs": epochs,
            "batch_size": 8,
            "early_stopping_patience": None,
            "lr": 3e-3,
            "target_transform": "standardize",
        },
    )


@pytest.fixture(scope="module")
def pt_run(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return train(
            datasets["pt"],
            tmp_path_factory.mktemp("pt") / "run",
            datasets["pt_test"],
            tiny(),
            progress=False,
        )


class TrainModeEverywhere(pl.Callback):
    """Puts every module in train mode before each batch, as other loops or user code may:
    frozen BatchNorm must still not update its statistics."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: object, batch_idx: int
    ) -> None:
        module.train()


@pytest.fixture(scope="module")
def ft_run(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path_factory: pytest.TempPathFactory
) -> TrainResult:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        return finetune(
            datasets["ft"],
            pt_run.run_dir,
            tmp_path_factory.mktemp("ft") / "run",
            strategy="three_body_only",
            head="reuse",
            lr_multipliers="head=10,three_body=0.5",
            test=datasets["ft_test"],
            config=tiny(epochs=2, norm="layer"),
            progress=False,
            callbacks=[TrainModeEverywhere()],
        )


def model_state(path: Path) -> dict[str, torch.Tensor]:
    return split_state_dict(read_checkpoint(path)["state_dict"], "model")


def test_frozen_groups_stay_bit_identical_batchnorm_statistics_included(
    pt_run: TrainResult, ft_run: TrainResult
) -> None:
    before = model_state(pt_run.best_checkpoint)
    frozen_groups = {"embedding", "two_body", "gcn"}
    norm_buffers = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert any(group_of(k) in frozen_groups for k in norm_buffers)  # BN present and frozen
    for name in ("best.ckpt", "last.ckpt"):
        after = model_state(ft_run.run_dir / name)
        assert after.keys() == before.keys()
        moved = set()
        for key, value in before.items():
            if group_of(key) in frozen_groups:
                assert torch.equal(after[key], value), f"{name}: frozen {key} changed"
            elif not torch.equal(after[key], value):
                moved.add(group_of(key))
        assert moved == {"three_body", "head"}, name


def test_weight_averaging_keeps_frozen_groups_bit_identical(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path
) -> None:
    # The average of a weight that does not change is that weight, exactly (ema_decay).
    result = finetune(
        datasets["ft"],
        pt_run.run_dir,
        tmp_path / "ft",
        strategy="three_body_only",
        test=datasets["ft_test"],
        config=tiny(epochs=2).model_copy(update={"ema_decay": 0.9}),
        probe_epochs=1,
        audit=False,
        progress=False,
        callbacks=[TrainModeEverywhere()],
    )
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text())["ema_decay"] == 0.9
    before = model_state(pt_run.best_checkpoint)
    for name in ("best.ckpt", "last.ckpt"):
        saved = read_checkpoint(result.run_dir / name)
        averaged = split_state_dict(saved["state_dict"], "model")
        trained = split_state_dict(saved["current_model_state"], "model")
        for key, value in before.items():
            if group_of(key) in {"embedding", "two_body", "gcn"}:
                assert torch.equal(averaged[key], value), f"{name}: frozen {key} changed"
        moved = {group_of(k) for k, v in averaged.items() if not torch.equal(v, trained[k])}
        assert moved == {"three_body", "head"}, name  # the average of what trained


def test_transfer_record(pt_run: TrainResult, ft_run: TrainResult) -> None:
    record = json.loads((ft_run.run_dir / "transfer.json").read_text())
    checkpoint = Path(record["pretrained"]["checkpoint"])
    assert checkpoint == pt_run.best_checkpoint.resolve()
    assert record["pretrained"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["strategy"] == "three_body_only" and record["head"] == "reuse"
    assert record["lr_multipliers"] == {"head": 10.0, "three_body": 0.5}
    assert record["lr_scale"] == 1.0  # only foundation sources scale the rates
    assert record["freeze"]["num_frozen"] > 0 and record["freeze"]["frozen_norms"]
    leakage = record["leakage"]
    assert leakage["audited"] and leakage["pretraining_data"]["verified"] is True
    assert (leakage["num_pretrain"], leakage["num_test"]) == (30 + LEAKED_TEST + LEAKED_TRAIN, 10)
    assert (leakage["test_leaked"], leakage["train_leaked"]) == (LEAKED_TEST, LEAKED_TRAIN)
    assert "## Transfer" in (ft_run.run_dir / "MODEL_CARD.md").read_text()


def test_finetuned_run_records_the_data_spec_its_splits_came_from(
    datasets: dict[str, Path], ft_run: TrainResult
) -> None:
    # finetune reads its data once and trains on those splits: run_info must still hold
    # their spec, or fine-tuning from this run could not audit against its records.
    info = json.loads((ft_run.run_dir / "run_info.json").read_text())
    assert info["data_spec"] == DataSpec(datasets["ft"], test=datasets["ft_test"]).to_dict()
    recorded = pretraining_records(ft_run.run_dir)
    assert recorded is not None and recorded.verified is True  # re-resolved, same hashes
    assert len(recorded.records) == info["counts"]["train"] + info["counts"]["val"]


def test_architecture_and_graphs_from_the_checkpoint_transform_refitted(
    pt_run: TrainResult, ft_run: TrainResult
) -> None:
    saved = yaml.safe_load((ft_run.run_dir / "config.yaml").read_text())
    assert saved["graph"] == pt_run.config.graph.model_dump(mode="json")
    assert saved["model"]["norm"] == "batch"  # the PT model's, not the given config's "layer"
    pt, ft = load_model(pt_run.run_dir), load_model(ft_run.run_dir)
    assert ft.model.config_dict() == pt.model.config_dict()
    # FT targets are about -40x the PT ones: a refitted transform has a negative mean.
    assert float(ft.transform.mean) < 0 < float(pt.transform.mean)
    assert ft_run.metrics["test"]["target"]["original"]["n"] == 10


def test_prepared_splits_are_used_as_they_are(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ensemble's members fine-tune on one split made with another seed than theirs.
    monkeypatch.setenv("MATXFER_CACHE", str(tmp_path / "cache"))
    spec = DataSpec(datasets["ft"], test=datasets["ft_test"])
    config = tiny(epochs=1)
    splits = prepare_splits(spec, config.model_copy(update={"seed": 5}))
    result = finetune(splits, pt_run.run_dir, tmp_path / "ft", config=config, progress=False)
    info = json.loads((result.run_dir / "run_info.json").read_text())
    assert info["split_hashes"] == {part: data_hash(rs) for part, rs in splits.parts().items()}
    assert info["split_hashes"]["val"] != data_hash(prepare_splits(spec, config).val)
    assert info["data_spec"] == spec.to_dict()
    assert json.loads((result.run_dir / "transfer.json").read_text())["leakage"]["audited"]


class _EpochStates(pl.Callback):
    """The model's state after every training epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self.states.append({k: v.clone() for k, v in module.model.state_dict().items()})


def test_linear_probe_and_l2sp_options(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path
) -> None:
    states = _EpochStates()
    result = finetune(
        datasets["ft"],
        pt_run.run_dir,
        tmp_path / "ft",
        test=datasets["ft_test"],
        config=tiny(epochs=2),
        probe_epochs=1,
        l2sp=0.1,
        audit=False,
        progress=False,
        callbacks=[states],
    )
    before = model_state(pt_run.best_checkpoint)
    probed = {group_of(k) for k, v in states.states[0].items() if not torch.equal(v, before[k])}
    assert probed == {"head"}  # epoch 0: the linear probe
    tuned = {group_of(k) for k, v in states.states[1].items() if not torch.equal(v, before[k])}
    assert tuned == {"embedding", "two_body", "three_body", "gcn", "head"}
    record = json.loads((result.run_dir / "transfer.json").read_text())
    assert (record["probe_epochs"], record["l2sp"]) == (1, 0.1)
    assert (
        "linear probe (head only) first: 1 epochs" in (result.run_dir / "MODEL_CARD.md").read_text()
    )


def matxfer(*args: str | Path, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = None if cache is None else {**os.environ, "MATXFER_CACHE": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "matxfer.cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def _one_epoch_yaml(tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(epochs=1).model_dump(mode="json")))
    return config


def test_cli_excluding_test_structures_repeats_pretraining_without_them(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path
) -> None:
    config = _one_epoch_yaml(tmp_path)
    out = tmp_path / "ft"
    done = matxfer(
        "finetune",
        datasets["ft"],
        "--from",
        pt_run.run_dir,
        "--out",
        out,
        "--test",
        datasets["ft_test"],
        "--config",
        config,
        "--head",
        "new",
        "--exclude-test-structures",
        "--no-progress",
        cache=tmp_path / "cache",
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((out / "transfer.json").read_text())
    assert record["excluded_pretraining"]["num_excluded"] == LEAKED_TEST
    assert record["leakage"]["test_leaked"] == 0
    assert record["leakage"]["train_leaked"] == LEAKED_TRAIN
    pt_info = json.loads((out / "pretrain_excluding_test" / "run_info.json").read_text())
    assert sum(pt_info["counts"][s] for s in ("train", "val")) == 30 + LEAKED_TRAIN
    assert "leak" in done.stdout


def test_an_ensemble_shares_one_pretraining_without_the_test_crystals(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path
) -> None:
    config = _one_epoch_yaml(tmp_path)
    out = tmp_path / "ft"
    args = ["finetune", datasets["ft"], "--from", pt_run.run_dir, "--out", out, "--test",
            datasets["ft_test"], "--config", config, "--head", "new", "--ensemble", "2",
            "--exclude-test-structures", "--no-progress"]  # fmt: skip
    done = matxfer(*args, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    shared = (out / "pretrain_excluding_test").resolve()
    records = [
        json.loads((out / m / "transfer.json").read_text()) for m in ("member-0", "member-1")
    ]
    assert [r["excluded_pretraining"]["run_dir"] for r in records] == [str(shared)] * 2
    assert [r["excluded_pretraining"]["reused"] for r in records] == [False, True]
    assert not (out / "member-0" / "pretrain_excluding_test").exists()
    before = (shared / "best.ckpt").stat().st_mtime_ns
    done = matxfer(*args, "--overwrite", cache=tmp_path / "cache")  # starts afresh
    assert done.returncode == 0, done.stderr
    assert (shared / "best.ckpt").stat().st_mtime_ns != before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "PT", "--strategy", "warp"], "unknown fine-tuning strategy 'warp'"),
        (["--from", "missing-run"], "no such run directory or checkpoint file"),
        ([], "Missing option '--from'"),
        (["--from", "PT", "--probe-epochs", "-1"], "Invalid value for '--probe-epochs'"),
        (["--from", "PT", "--l2sp", "-0.1"], "Invalid value for '--l2sp'"),
    ],
)
def test_cli_bad_options_fail_cleanly(
    args: list[str],
    message: str,
    pt_run: TrainResult,
    datasets: dict[str, Path],
    tmp_path: Path,
) -> None:
    args = [str(pt_run.run_dir) if a == "PT" else a for a in args]
    done = matxfer("finetune", datasets["ft"], "--out", tmp_path / "ft", *args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


class _KilledError(Exception):
    pass


class _KillAtSecondEpoch(pl.Callback):
    """Stops the run like ``kill -9`` would, after epoch 0's checkpoints are written."""

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise _KilledError


def test_resume_refuses_other_transfer_settings(
    datasets: dict[str, Path], pt_run: TrainResult, tmp_path: Path
) -> None:
    out = tmp_path / "ft"
    options = {
        "test": datasets["ft_test"],
        "config": tiny(epochs=2),
        "audit": False,
        "progress": False,
    }
    chosen = {"strategy": "three_body_only", "head": "reuse", "lr_multipliers": "head=10"}
    with pytest.raises(_KilledError):
        finetune(
            datasets["ft"], pt_run.run_dir, out, **chosen, **options,
            callbacks=[_KillAtSecondEpoch()],
        )  # fmt: skip
    # Recorded at the start, completed at the end.
    started = json.loads((out / "transfer.json").read_text())
    assert started["complete"] is False and started["strategy"] == "three_body_only"
    assert (out / "last.ckpt").is_file() and not is_finished(out)
    for changed, message in [
        ({"strategy": "all"}, "strategy 'three_body_only' -> 'all'"),
        ({"lr_multipliers": "head=5"}, r"lr_multipliers \{'head': 10.0\} -> \{'head': 5.0\}"),
        ({"head": "new"}, "head 'reuse' -> 'new'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            finetune(
                datasets["ft"], pt_run.run_dir, out, **{**chosen, **changed}, **options,
                resume=True,
            )  # fmt: skip
    result = finetune(datasets["ft"], pt_run.run_dir, out, **chosen, **options, resume=True)
    record = json.loads((out / "transfer.json").read_text())
    assert record["complete"] is True and record["lr_multipliers"] == {"head": 10.0}
    assert is_finished(out) and result.metrics["epochs_trained"] == 2
    assert (out / "MODEL_CARD.md").read_text().count("## Transfer") == 1
