"""Fine-tuning strategies: groups, freezing, BatchNorm statistics, parsing, optimizer groups."""

from __future__ import annotations

import copy

import pydantic
import pytest
import torch
from torch import Tensor, nn
from torch_geometric.data import Batch

from matxfer.errors import ConfigError, MatxferError
from matxfer.graphs.data import CrystalGraph
from matxfer.models import ALIGNN
from matxfer.transfer.freeze import (
    GROUPS,
    PRESETS,
    FreezeSpec,
    apply_freeze,
    freeze_batchnorm_stats,
    group_of,
    param_groups,
    parameter_groups,
    parse_freeze,
    parse_lr_multipliers,
)


def _train_steps(model: nn.Module, inputs: Tensor, steps: int = 3) -> None:
    """A few AdamW steps in train mode, calling ``model.train()`` each step like Lightning."""
    optimizer = torch.optim.AdamW(param_groups(model, 1e-2, weight_decay=0.1))
    for _ in range(steps):
        model.train()
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        optimizer.step()


def _is_frozen_entry(key: str, spec: FreezeSpec) -> bool:
    """Whether a state_dict entry (parameter or buffer) belongs to a frozen part."""
    group = group_of(key)
    if group in spec.frozen:
        return True
    return group == "head" and spec.head_scope == "last_linear" and not key.startswith("head.out.")


def test_every_parameter_in_exactly_one_group(stand_in: nn.Module) -> None:
    groups = parameter_groups(stand_in)
    assert set(groups) == {name for name, _ in stand_in.named_parameters()}
    assert set(groups.values()) == set(GROUPS)
    assert groups["alignn_layers.1.edge_update.linear.weight"] == "three_body"
    assert groups["alignn_layers.1.node_update.linear.weight"] == "two_body"


def test_parameter_outside_groups_is_an_error(stand_in: nn.Module) -> None:
    stand_in.readout_scale = nn.Linear(2, 2)
    with pytest.raises(MatxferError, match="readout_scale"):
        apply_freeze(stand_in, FreezeSpec())


@pytest.mark.parametrize(
    "strategy", ["last", "head", "two_body_only", "three_body_only", "freeze:embedding,gcn"]
)
def test_frozen_parts_stay_bit_identical(
    stand_in: nn.Module, stand_in_inputs: Tensor, strategy: str
) -> None:
    spec = parse_freeze(strategy)
    before = copy.deepcopy(stand_in.state_dict())
    apply_freeze(stand_in, spec)
    _train_steps(stand_in, stand_in_inputs)
    after = stand_in.state_dict()
    frozen = [k for k in before if _is_frozen_entry(k, spec)]
    trained = [k for k, _ in stand_in.named_parameters() if not _is_frozen_entry(k, spec)]
    assert frozen and trained
    for key in frozen:  # parameters and BatchNorm buffers alike
        assert torch.equal(before[key], after[key]), key
    for key in trained:
        assert not torch.equal(before[key], after[key]), key


def test_unfrozen_batchnorm_keeps_updating(stand_in: nn.Module, stand_in_inputs: Tensor) -> None:
    spec = parse_freeze("three_body_only")
    before = stand_in.alignn_layers[0].edge_update.norm.running_mean.clone()
    apply_freeze(stand_in, spec)
    _train_steps(stand_in, stand_in_inputs, steps=1)
    assert not torch.equal(before, stand_in.alignn_layers[0].edge_update.norm.running_mean)
    assert stand_in.alignn_layers[0].edge_update.norm.training
    assert not stand_in.alignn_layers[0].node_update.norm.training


def test_norm_guard_survives_train_and_deepcopy(
    stand_in: nn.Module, stand_in_inputs: Tensor
) -> None:
    summary = apply_freeze(stand_in, parse_freeze("freeze:embedding"))
    assert summary.frozen_norms == ["atom_embedding.1"]
    clone = copy.deepcopy(stand_in)
    for model in (stand_in, clone):
        model.train()
        assert model.atom_embedding[1].training  # train() resets it ...
        model(stand_in_inputs)
        assert not model.atom_embedding[1].training  # ... the forward hook restores eval
        assert model.gcn_layers[0].norm.training


def test_reapplying_releases_previous_freeze(stand_in: nn.Module, stand_in_inputs: Tensor) -> None:
    apply_freeze(stand_in, parse_freeze("last"))
    summary = apply_freeze(stand_in, parse_freeze("all"))
    assert summary.num_frozen == 0
    assert all(p.requires_grad for p in stand_in.parameters())
    stand_in.train()
    stand_in(stand_in_inputs)
    assert all(m.training for m in stand_in.modules())


def test_freeze_batchnorm_stats_direct(stand_in: nn.Module) -> None:
    stand_in.train()
    names = freeze_batchnorm_stats(stand_in, parse_freeze("two_body_only"))
    assert names == ["atom_embedding.1"] + [f"alignn_layers.{i}.edge_update.norm" for i in (0, 1)]
    assert [
        n for n, m in stand_in.named_modules() if isinstance(m, nn.BatchNorm1d) and not m.training
    ] == names


@pytest.mark.parametrize(
    ("preset", "trained"),
    [
        ("all", set(GROUPS)),
        ("last", {"head"}),
        ("head", {"head"}),
        ("two_body_only", {"two_body", "gcn", "head"}),
        ("three_body_only", {"three_body", "head"}),
        ("freeze_embedding", set(GROUPS) - {"embedding"}),
    ],
)
def test_presets_train_the_documented_groups(
    stand_in: nn.Module, preset: str, trained: set[str]
) -> None:
    summary = apply_freeze(stand_in, PRESETS[preset].spec)
    assert set(summary.trainable) == trained
    groups = parameter_groups(stand_in)
    for name, param in stand_in.named_parameters():
        if groups[name] not in trained:
            assert not param.requires_grad, name


def test_last_trains_only_the_final_linear(stand_in: nn.Module) -> None:
    apply_freeze(stand_in, parse_freeze("last"))
    trainable = {name for name, p in stand_in.named_parameters() if p.requires_grad}
    assert trainable == {"head.out.weight", "head.out.bias"}


def test_parse_forms_and_round_trip() -> None:
    assert parse_freeze("all") == FreezeSpec()
    assert parse_freeze(" freeze:embedding, three_body ") == FreezeSpec(
        frozen={"embedding", "three_body"}
    )
    assert parse_freeze("train:head") == PRESETS["head"].spec
    assert parse_freeze("freeze:embedding,three_body") == PRESETS["two_body_only"].spec
    specs = [p.spec for p in PRESETS.values()] + [FreezeSpec(frozen={"gcn", "head"})]
    for spec in specs:
        assert parse_freeze(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("everything", "two_body_only"),
        ("freeze:embeding", "embeding"),
        ("freeze:", "no group"),
        ("train:heads", "'three_body'"),
        ("freeze:embedding,two_body,three_body,gcn,head", "nothing would train"),
    ],
)
def test_parse_errors_list_choices(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        parse_freeze(text)


def test_contradictory_specs_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError, match="last_linear"):
        FreezeSpec(frozen={"head"}, head_scope="last_linear")
    with pytest.raises(pydantic.ValidationError, match="nothing would train"):
        FreezeSpec(frozen=set(GROUPS))


def test_param_groups_cover_trainable_parameters_once(stand_in: nn.Module) -> None:
    apply_freeze(stand_in, parse_freeze("freeze:embedding"))
    groups = param_groups(stand_in, 1e-3, {"two_body": 0.1, "head": 10.0}, weight_decay=1e-5)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in stand_in.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable)
    assert len(ids) == len(set(ids))
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx({"two_body": 1e-4, "three_body": 1e-3, "gcn": 1e-3, "head": 1e-2})
    assert all(g["weight_decay"] == 1e-5 for g in groups)


def test_param_groups_unknown_group(stand_in: nn.Module) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        param_groups(stand_in, 1e-3, {"bogus": 2.0})


def test_parse_lr_multipliers() -> None:
    assert parse_lr_multipliers("embedding=0.1, head=10") == {"embedding": 0.1, "head": 10.0}
    for bad in ("embedding", "embed=0.1", "head=-1", "head=fast"):
        with pytest.raises(ConfigError, match="multiplier"):
            parse_lr_multipliers(bad)


def _random_graph_batch(num_graphs: int = 4, seed: int = 0) -> Batch:
    """Random, valid-shaped ALIGNN input (graph construction is tested elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    graphs = []
    for _ in range(num_graphs):
        atoms, bonds, triplets = 4, 10, 20
        direction = torch.randn(bonds, 3, generator=generator)
        length = 1.5 + 2.5 * torch.rand(bonds, 1, generator=generator)
        graphs.append(
            CrystalGraph(
                z=torch.randint(1, 84, (atoms,), generator=generator),
                edge_index=torch.randint(0, atoms, (2, bonds), generator=generator),
                edge_vec=direction / direction.norm(dim=1, keepdim=True) * length,
                lg_edge_index=torch.randint(0, bonds, (2, triplets), generator=generator),
                angle_cos=2 * torch.rand(triplets, generator=generator) - 1,
                num_nodes=atoms,
            )
        )
    return Batch.from_data_list(graphs)


def _tiny_alignn() -> ALIGNN:
    torch.manual_seed(0)
    return ALIGNN(
        num_outputs=2,
        alignn_layers=2,
        gcn_layers=1,
        hidden_features=8,
        embedding_features=4,
        edge_input_features=6,
        triplet_input_features=4,
        head_hidden_layers=1,
        head_norm="batch",
    )


def test_alignn_parameters_all_grouped() -> None:
    groups = parameter_groups(_tiny_alignn())
    assert set(groups.values()) == set(GROUPS)


@pytest.mark.parametrize("strategy", ["last", "two_body_only", "three_body_only"])
def test_alignn_frozen_parts_stay_bit_identical(strategy: str) -> None:
    model = _tiny_alignn()
    spec = parse_freeze(strategy)
    before = copy.deepcopy(model.state_dict())
    summary = apply_freeze(model, spec)
    assert summary.frozen_norms  # the model does have BatchNorm in frozen groups
    _train_steps(model, _random_graph_batch())
    after = model.state_dict()
    for key in before:
        if _is_frozen_entry(key, spec):
            assert torch.equal(before[key], after[key]), key
    # Every trainable group learns (not every tensor: the last GCN layer's edge
    # outputs, for one, feed nothing and get no gradient).
    changed = {
        group_of(k) for k, _ in model.named_parameters() if not torch.equal(before[k], after[k])
    }
    assert changed == set(spec.trainable)
