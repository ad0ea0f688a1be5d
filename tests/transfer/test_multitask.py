"""Multi-property pre-training: masked loss through the Lightning step, merge, end to end."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import TINY_MODEL, alignn_entry, lock_held_elsewhere
from pymatgen.core import Lattice, Structure
from torch import Tensor
from torch_geometric.data import Batch
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.data.records import Record
from matxfer.data.registry import open_study_directory
from matxfer.data.splits import split_count
from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError, DataError
from matxfer.graphs import build_graphs
from matxfer.graphs.config import GraphConfig
from matxfer.locking import LockHeldError
from matxfer.models import ALIGNN
from matxfer.training import TrainResult, load_model, save_config
from matxfer.training.config import TrainConfig
from matxfer.training.loaders import with_targets
from matxfer.training.losses import masked_l1
from matxfer.training.module import PropertyModule
from matxfer.transfer.leakage import audit_leakage
from matxfer.transfer.multitask import (
    MERGE_REPORT_FILE,
    mpt_config,
    parse_dataset_args,
    prepare_pretraining,
    pretrain_multi,
    recorded_pretraining,
)
from matxfer.transfer.pretrained import pretraining_records

ELEMENTS = ["Li", "Na", "K", "Mg", "Ca", "Al", "Si", "Ti", "Fe", "Cu", "Zn", "Cl"]
#: Two-atom CsCl-type crystals, each with its own composition: no accidental matches.
CRYSTALS = [
    Structure(Lattice.cubic(3.2 + 0.03 * i), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])
    for i, (a, b) in enumerate(itertools.islice(itertools.combinations(ELEMENTS, 2), 40))
]
# Crystal numbers of each dataset. Pools share 10-19; crystal 36 (a test crystal of
# "beta") is in the "alpha" pool and crystal 22 (an "alpha" test crystal) in the "beta" pool.
ALPHA_POOL, ALPHA_TEST = [*range(20), 36], [20, 21, 22, 23]
BETA_POOL, BETA_TEST = [*range(10, 20), 22, *range(24, 34)], [36, 37, 38]
SHARED = 10


def label_alpha(structure: Structure) -> float:
    return 10.0 + structure.volume / len(structure)


def label_beta(structure: Structure) -> float:
    return -5.0 + 0.1 * float(np.mean([site.specie.Z for site in structure]))


def write_part(path: Path, numbers: list[int], prefix: str, label, moved: bool) -> None:
    """A JARVIS/ALIGNN ``.json.gz``; ``moved`` strains and shifts the cell (the same crystal
    as seen by another calculation), so matching cannot rely on identical coordinates."""
    items = []
    for n in numbers:
        structure = CRYSTALS[n].copy()
        if moved:
            structure.scale_lattice(structure.volume * 1.03)
            structure.translate_sites(list(range(len(structure))), [0.1, 0.2, 0.05])
        items.append(alignn_entry(structure, f"{prefix}-{n}", label(CRYSTALS[n])))
    with gzip.open(path, "wt") as handle:
        json.dump(items, handle)


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_datasets(tmp_path_factory.mktemp("mpt_data"))


def write_datasets(root: Path) -> dict[str, Path]:
    """Two study-layout folders (pool + fixed test) sharing 10 crystals under other ids."""
    folders = {}
    for name, pool, test, label, moved in [
        ("alpha", ALPHA_POOL, ALPHA_TEST, label_alpha, False),
        ("beta", BETA_POOL, BETA_TEST, label_beta, True),
    ]:
        folder = root / name
        folder.mkdir()
        write_part(folder / "pool.json.gz", pool, name, label, moved)
        write_part(folder / "test.json.gz", test, name, label, moved)
        folders[name[0]] = folder
    return folders


def tiny_mpt_config(**overrides: object) -> TrainConfig:
    """1 + 1 layers of width 16, one epoch: seconds on a CPU."""
    return mpt_config(
        "fast",
        {
            "model": {**TINY_MODEL},
            "epochs": 1,
            "batch_size": 8,
            "early_stopping_patience": None,
            "target_transform": "standardize",
            **overrides,
        },
    )


# ---------------------------------------------------------------- masked loss in training


def two_property_module(records: list[Record]) -> tuple[PropertyModule, Batch]:
    torch.manual_seed(0)
    model = ALIGNN(
        num_outputs=2,
        alignn_layers=1,
        gcn_layers=1,
        hidden_features=8,
        embedding_features=8,
        edge_input_features=8,
        triplet_input_features=4,
    )
    names = ["a", "b"]
    graphs = with_targets(
        build_graphs([r.structure for r in records], GraphConfig(), progress=False), records, names
    )
    values = torch.cat([g.y for g in graphs])
    transform = TargetTransform("standardize", 2).fit(values)
    module = PropertyModule(model, transform, names, GraphConfig(), loss="masked_l1")
    return module, Batch.from_data_list(graphs)


def capture_output(module: PropertyModule) -> list[Tensor]:
    """Keep the model's output [B, P] with its gradient (hook on the head)."""
    outputs: list[Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: Tensor) -> None:
        output.retain_grad()
        outputs.append(output)

    module.model.head.register_forward_hook(keep)
    return outputs


def test_training_step_with_missing_labels_is_finite_and_ignores_them() -> None:
    records = [Record(str(i), CRYSTALS[i], {"a": label_alpha(CRYSTALS[i])}) for i in range(3)]
    records += [Record(str(i), CRYSTALS[i], {"b": label_beta(CRYSTALS[i])}) for i in range(3, 5)]
    records.append(Record("5", CRYSTALS[5], {"a": 1.0, "b": 2.0}))
    module, batch = two_property_module(records)
    outputs = capture_output(module)
    loss = module.step(batch)["loss"]
    loss.backward()
    prediction = outputs[0]
    target = module.transform(batch.y)
    present = ~torch.isnan(target)
    assert torch.isfinite(loss)
    # L = 1/B sum over present labels |pred - y|, computed without any NaN
    expected = (prediction - target.nan_to_num()).abs()[present].sum() / len(records)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert prediction.grad is not None
    assert (prediction.grad[~present] == 0).all()
    signs = torch.sign(prediction - target.nan_to_num()).detach() / len(records)
    assert torch.equal(prediction.grad[present], signs[present])
    assert all(
        torch.isfinite(p.grad).all() for p in module.model.parameters() if p.grad is not None
    )


def test_each_property_head_learns_only_from_its_labels() -> None:
    records = [Record(str(i), CRYSTALS[i], {"a": label_alpha(CRYSTALS[i])}) for i in range(6)]
    # b-only records so that b's scale can be fitted; the batch below has no b label
    records += [Record(f"b{i}", CRYSTALS[i], {"b": float(i)}) for i in (6, 7)]
    module, _ = two_property_module(records)
    graphs = with_targets(
        build_graphs([r.structure for r in records[:6]], GraphConfig(), progress=False),
        records[:6],
        ["a", "b"],
    )
    module.step(Batch.from_data_list(graphs))["loss"].backward()
    last = module.model.head.out  # row t of the last Linear = the head of property t
    assert last.weight.grad[0].abs().sum() > 0 and last.bias.grad[0] != 0
    assert (last.weight.grad[1] == 0).all() and last.bias.grad[1] == 0
    shared = module.model.atom_embedding
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in shared.parameters())


def test_masked_l1_is_a_training_loss_choice() -> None:
    assert mpt_config("fast").loss == "masked_l1"
    module, _ = two_property_module(
        [
            Record("0", CRYSTALS[0], {"a": 1.0, "b": 2.0}),
            Record("1", CRYSTALS[1], {"a": 3.0, "b": 0.0}),
        ]
    )
    assert module.loss_fn is masked_l1


# ---------------------------------------------------------------- merging the datasets


def test_parse_dataset_args() -> None:
    assert parse_dataset_args(["ph", "gap=data/gaps.json", "d=dc"]) == {
        "ph": "ph",
        "gap": "data/gaps.json",
        "d": "dc",
    }
    with pytest.raises(ConfigError, match="NAME=DATA"):
        parse_dataset_args(["data/gaps.json"])
    with pytest.raises(ConfigError, match="twice"):
        parse_dataset_args(["ph", "ph=ph"])
    with pytest.raises(ConfigError, match="letters"):
        parse_dataset_args(["a|b=x.json"])


def test_merge_counts_shared_crystals_once(datasets: dict[str, Path]) -> None:
    data = prepare_pretraining(datasets, tiny_mpt_config())
    assert data.merge.counts == {"a": len(ALPHA_POOL), "b": len(BETA_POOL)}
    assert data.merge.overlaps == {("a", "b"): SHARED}
    merged = data.splits.train + data.splits.val
    assert len(merged) == len(ALPHA_POOL) + len(BETA_POOL) - SHARED
    assert len(data.splits.val) == split_count(len(merged), 0.1)
    both = [r for r in merged if len(r.targets) == 2]
    assert len(both) == SHARED
    for record in both:  # each label is its own dataset's value for this crystal
        n = int(record.id.split("|")[0].split("-")[1])
        assert record.targets == pytest.approx(
            {"a": label_alpha(CRYSTALS[n]), "b": label_beta(CRYSTALS[n])}
        )
    assert data.splits.target_names == ["a", "b"]
    test_ids = sorted(r.id for r in data.splits.test)
    assert test_ids == sorted(
        [f"a:alpha-{n}" for n in ALPHA_TEST] + [f"b:beta-{n}" for n in BETA_TEST]
    )


def test_test_crystals_of_any_property_can_be_excluded(datasets: dict[str, Path]) -> None:
    data = prepare_pretraining(datasets, tiny_mpt_config(), exclude_test_structures=True)
    assert {n: p.removed_test_structures for n, p in data.properties.items()} == {"a": 1, "b": 1}
    merged = data.splits.train + data.splits.val
    assert not any("alpha-36" in r.id or "beta-22" in r.id for r in merged)
    # leave-one-out: the excluded property's test crystals are kept out too
    loo = prepare_pretraining(
        datasets, tiny_mpt_config(), exclude=["b"], exclude_test_structures=True
    )
    assert loo.splits.target_names == ["a"] and loo.excluded == ["b"]
    assert loo.properties["a"].removed_test_structures == 1
    assert [r.id for r in loo.splits.test] == [f"a:alpha-{n}" for n in ALPHA_TEST]


def test_size_samples_each_property_and_files_get_a_seeded_test_split(
    datasets: dict[str, Path], tmp_path: Path
) -> None:
    plain = tmp_path / "gamma.json.gz"
    write_part(plain, list(range(20)), "gamma", label_beta, moved=False)
    data = prepare_pretraining({"a": datasets["a"], "g": plain}, tiny_mpt_config(), size=5)
    assert data.merge.counts == {"a": 5, "g": 5}
    gamma = data.properties["g"]
    assert len(gamma.test) == split_count(20, 0.1) and gamma.available == 20 - len(gamma.test)
    assert not {r.id for r in gamma.test} & {r.id for r in gamma.pool}


def test_max_atoms_keeps_small_cells_and_is_recorded(datasets: dict[str, Path]) -> None:
    config = tiny_mpt_config()
    data = prepare_pretraining(datasets, config, max_atoms=2)
    assert data.spec["max_atoms"] == 2  # every crystal here has 2 atoms
    assert len(data.splits.train) + len(data.splits.val) == data.merge.merged_total
    assert all("cells of at most 2 atoms: " in p.source for p in data.properties.values())
    with pytest.raises(DataError, match=r"a: none of its 21 pool records has at most 1 atoms"):
        prepare_pretraining(datasets, config, max_atoms=1)
    with pytest.raises(ConfigError, match="must be at least 1"):
        prepare_pretraining(datasets, config, max_atoms=0)


def test_bad_exclusions(datasets: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="not among"):
        prepare_pretraining(datasets, tiny_mpt_config(), exclude=["c"])
    with pytest.raises(ConfigError, match="nothing is left"):
        prepare_pretraining(datasets, tiny_mpt_config(), exclude=["a", "b"])


# ---------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def mpt_run(datasets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("runs") / "mpt"
    return pretrain_multi(datasets, out, config=tiny_mpt_config(), progress=False)


def test_pretrain_multi_run(mpt_run: TrainResult) -> None:
    run = mpt_run.run_dir
    report = json.loads((run / MERGE_REPORT_FILE).read_text())
    assert report["merge"]["overlaps"] == {"a+b": SHARED}
    assert report["merge"]["merged_total"] == len(ALPHA_POOL) + len(BETA_POOL) - SHARED
    loaded = load_model(run)
    assert loaded.target_names == ["a", "b"] and loaded.model.num_outputs == 2
    assert loaded.transform.num_targets == 2
    assert mpt_run.config.loss == "masked_l1"
    for name, count in [("a", len(ALPHA_TEST)), ("b", len(BETA_TEST))]:
        stats = mpt_run.metrics["test"][name]["original"]
        assert stats["n"] == count and math.isfinite(stats["mae"]) and math.isfinite(stats["r2"])
    frame = pd.read_csv(run / "predictions_test.csv")
    assert len(frame) == len(ALPHA_TEST) + len(BETA_TEST)
    assert frame["a"].notna().sum() == len(ALPHA_TEST)  # each test record: its own label only


def test_run_records_its_data_and_scales_each_property_on_its_own_labels(
    mpt_run: TrainResult,
) -> None:
    data, verified = recorded_pretraining(mpt_run.run_dir)
    assert verified is True
    assert data.merge.overlaps == {("a", "b"): SHARED}
    transform = load_model(mpt_run.run_dir).transform
    for k, label in enumerate(["a", "b"]):
        values = [r.targets[label] for r in data.splits.train if label in r.targets]
        scaled = transform.transform(torch.tensor(values).repeat(2, 1).T.contiguous())[:, k]
        assert scaled.mean().item() == pytest.approx(0.0, abs=1e-4)


def test_fine_tuning_audit_reads_the_merged_pretraining_records(
    mpt_run: TrainResult, datasets: dict[str, Path]
) -> None:
    found = pretraining_records(mpt_run.run_dir / "best.ckpt")
    assert found is not None and found.verified is True
    counts = (
        mpt_run.metrics.get("counts")
        or json.loads((mpt_run.run_dir / "run_info.json").read_text())["counts"]
    )
    assert len(found.records) == counts["train"] + counts["val"]
    assert "multi-property" in found.description and found.spec["datasets"].keys() == {"a", "b"}
    # Crystal 36, a "beta" test crystal, sits in the "alpha" pool: the audit must see it.
    beta_test = open_study_directory(datasets["b"]).test.records
    leaked = audit_leakage(found.records, [], beta_test).test_in_pretrain
    assert len(leaked) == 1 and next(iter(leaked)).endswith("-36")


def test_cli_leave_one_out(datasets: dict[str, Path], tmp_path: Path) -> None:
    config_file = tmp_path / "tiny.yaml"
    save_config(tiny_mpt_config(loss="l1"), config_file)
    out = tmp_path / "loo"
    args = [
        f"a={datasets['a']}",
        f"b={datasets['b']}",
        "--exclude",
        "b",
        "--exclude-test-structures",
        "--config",
        str(config_file),
        "--out",
        str(out),
        "--no-progress",
    ]
    result = CliRunner().invoke(app, ["pretrain-multi", *args])
    assert result.exit_code == 0, result.output
    assert "pre-training data" in result.output and "merged into" in result.output
    assert load_model(out).target_names == ["a"]
    report = json.loads((out / MERGE_REPORT_FILE).read_text())
    assert report["excluded"] == ["b"] and report["properties"]["a"]["removed_test_structures"] == 1
    assert (out / "config.yaml").read_text().count("loss: masked_l1") == 1  # the flag's default
    again = CliRunner().invoke(app, ["pretrain-multi", *args])
    assert again.exit_code != 0 and "already holds a training run" in str(again.exception)


def test_a_second_process_on_the_same_out_is_refused_before_merging(tmp_path: Path) -> None:
    out = tmp_path / "mpt"
    with lock_held_elsewhere(out), pytest.raises(LockHeldError, match=r"pid \d+ on host"):
        pretrain_multi({"a": tmp_path / "missing"}, out, config=tiny_mpt_config())


def test_merge_tables_print_on_the_cli_console_without_literal_markup(
    datasets: dict[str, Path],
) -> None:
    from matxfer import cli
    from matxfer.transfer.multitask import merge_tables

    data = prepare_pretraining(datasets, tiny_mpt_config())
    with cli.console.capture() as captured:  # the CLI's console prints with markup off
        for item in merge_tables(data):
            cli.console.print(item)
    text = captured.get()
    assert "shared crystals" in text
    assert "[dim]" not in text and "[/]" not in text
