"""Reference ``alignn`` checkpoints load into matxfer and predict the same values."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
import torch
from model_graphs import random_graph
from torch_geometric.data import Batch

from matxfer.errors import ConfigError, DataError
from matxfer.models import ALIGNN
from matxfer.models.features import cgcnn_feature_table
from matxfer.models.reference import (
    load_reference_checkpoint,
    reference_inputs,
    reference_key_to_matxfer,
)

pytestmark = pytest.mark.reference
alignn = pytest.importorskip("alignn")

SMALL = {"alignn_layers": 2, "gcn_layers": 2, "hidden_features": 32, "embedding_features": 16}
PURE = {
    "name": "alignn_atomwise_pure",
    "atom_input_features": 92,
    "atom_features": "cgcnn",
    "gradwise_weight": 0,
    "calculate_gradient": False,
    # Off so the reference accepts several outputs; only its energy output uses it.
    "energy_mult_natoms": False,
}


def _pure_model(**settings):
    from alignn.models.alignn_atomwise_pure import ALIGNNAtomWisePure, ALIGNNAtomWisePureConfig

    config = {key: value for key, value in settings.items() if key != "atom_features"}
    return ALIGNNAtomWisePure(ALIGNNAtomWisePureConfig(**config))


@pytest.fixture
def alignn_2021(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The reference 2021 model module, runnable via the DGL stand-ins in fake_dgl.py."""
    import alignn.models.alignn as module
    import fake_dgl

    monkeypatch.setattr(module, "fn", fake_dgl.fn)
    monkeypatch.setattr(module, "AvgPooling", fake_dgl.AvgPooling)
    return module


def _randomise_norms(model: torch.nn.Module) -> None:
    """Move norm weights and running statistics off their defaults so they matter."""
    torch.manual_seed(3)
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm | torch.nn.BatchNorm1d):
            with torch.no_grad():
                module.weight.add_(0.2 * torch.randn_like(module.weight))
                module.bias.add_(0.2 * torch.randn_like(module.bias))
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 1.5)


@pytest.fixture(scope="module")
def batch() -> Batch:
    return Batch.from_data_list([random_graph(n, 3 * n, seed=10 + n) for n in (2, 3, 4, 5)])


@pytest.mark.parametrize("training", [False, True])
def test_pure_reference_predictions_and_gradients_are_equal(batch: Batch, training: bool) -> None:
    torch.manual_seed(0)
    settings = {**PURE, **SMALL, "output_features": 3}
    reference = _pure_model(**settings)
    _randomise_norms(reference)
    model = load_reference_checkpoint(reference.state_dict(), settings)
    reference.train(training)
    model.train(training)

    expected = reference(reference_inputs(batch))["out"]
    predicted = model(batch)
    assert predicted.shape == expected.shape == (4, 3)
    assert (predicted - expected).abs().max() < 1e-4

    expected.square().sum().backward()
    predicted.square().sum().backward()
    ours = dict(model.named_parameters())
    for key, parameter in reference.named_parameters():
        if parameter.grad is None:
            assert ours[reference_key_to_matxfer(key)].grad is None, key
            continue
        torch.testing.assert_close(
            ours[reference_key_to_matxfer(key)].grad, parameter.grad, rtol=1e-4, atol=1e-5
        )


def _fake_dgl_inputs(batch: Batch) -> tuple:
    import fake_dgl

    num_graphs = batch.num_graphs
    atom_graph = fake_dgl.FakeGraph(
        batch.edge_index[0], batch.edge_index[1], batch.num_nodes,
        ndata={"atom_features": cgcnn_feature_table()[batch.z]},
        edata={"r": batch.edge_vec}, node_graph=batch.batch, num_graphs=num_graphs,
    )  # fmt: skip
    line_graph = fake_dgl.FakeGraph(
        batch.lg_edge_index[0], batch.lg_edge_index[1], batch.edge_index.size(1),
        edata={"h": batch.angle_cos},
    )  # fmt: skip
    return atom_graph, line_graph, None


@pytest.mark.parametrize("training", [False, True])
def test_2021_reference_predictions_and_running_statistics_are_equal(
    alignn_2021: ModuleType, batch: Batch, training: bool
) -> None:
    torch.manual_seed(0)
    settings = {"name": "alignn", **SMALL}
    reference = alignn_2021.ALIGNN(alignn_2021.ALIGNNConfig(**settings))
    _randomise_norms(reference)
    model = load_reference_checkpoint(reference.state_dict(), {"model": settings})
    assert model.norm == "batch"
    reference.train(training)
    model.train(training)

    expected = reference(_fake_dgl_inputs(batch))
    predicted = model(batch)
    assert predicted.shape == (4, 1)
    assert (predicted.view(-1) - expected).abs().max() < 1e-4
    ours = model.state_dict()
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(ours[reference_key_to_matxfer(key)], value, rtol=1e-5, atol=1e-6)

    expected.square().sum().backward()
    predicted.square().sum().backward()
    # Biases in front of a training-mode BatchNorm have zero gradient up to
    # rounding, so compare against the largest gradient, not per tensor.
    scale = max(p.grad.abs().max() for p in reference.parameters() if p.grad is not None)
    parameters = dict(model.named_parameters())
    for key, parameter in reference.named_parameters():
        grad = parameters[reference_key_to_matxfer(key)].grad
        if parameter.grad is None:
            assert grad is None, key
        else:
            assert (grad - parameter.grad).abs().max() < 1e-4 * scale, key


def test_2021_study_checkpoint_is_consumed_completely(alignn_2021: ModuleType) -> None:
    reference = alignn_2021.ALIGNN(alignn_2021.ALIGNNConfig(name="alignn"))
    state = reference.state_dict()
    model = load_reference_checkpoint(state, {"model": {"name": "alignn"}})
    ours = model.state_dict()
    assert {reference_key_to_matxfer(key) for key in state} == set(ours)
    for key, value in state.items():
        assert torch.equal(ours[reference_key_to_matxfer(key)], value), key
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) == 4_026_753


def test_pure_study_settings_have_equal_parameter_counts() -> None:
    settings = {**PURE, "alignn_layers": 4, "gcn_layers": 4, "hidden_features": 256}
    reference = _pure_model(**settings)
    model = load_reference_checkpoint(reference.state_dict(), settings)
    assert sum(p.numel() for p in model.parameters()) == 4_026_753
    assert sum(p.numel() for p in reference.parameters()) == 4_026_753


def test_checkpoint_files_load(tmp_path: Path, batch: Batch) -> None:
    settings = {**PURE, **SMALL}
    reference = _pure_model(**settings).eval()
    torch.save(reference.state_dict(), tmp_path / "best_model.pt")
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 3, "model": settings}))
    model = load_reference_checkpoint(tmp_path / "best_model.pt", tmp_path / "config.json")
    expected = reference(reference_inputs(batch))["out"]
    assert (model(batch).view(-1) - expected).abs().max() < 1e-4


def test_mismatched_checkpoint_lists_every_bad_key() -> None:
    settings = {**PURE, **SMALL}
    state = _pure_model(**settings).state_dict()
    state["extra.weight"] = torch.zeros(3)
    state["fc.weight"] = torch.zeros(2, 32)
    del state["gcn_layers.1.dst_update.bias"]
    with pytest.raises(DataError) as caught:
        load_reference_checkpoint(state, settings)
    problems = {problem.record_id: problem.reason for problem in caught.value.problems}
    assert set(problems) == {"extra.weight", "fc.weight", "gcn_layers.1.dst_update.bias"}
    assert "shape (2, 32)" in problems["fc.weight"]


def test_species_table_must_hold_cgcnn_features() -> None:
    settings = {**PURE, **SMALL}
    state = _pure_model(**settings).state_dict()
    table = torch.zeros(120, 92)
    table[:119] = cgcnn_feature_table()
    state["_species_table"] = table
    load_reference_checkpoint(state, settings)
    table[6, 0] = 1 - table[6, 0]
    with pytest.raises(DataError, match="1 problems"):
        load_reference_checkpoint(state, settings)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "alignn_atomwise"}, "supported: \\['alignn', 'alignn_atomwise_pure'\\]"),
        ({"name": "alignn", "link": "log"}, "link='log'"),
        ({"name": "alignn", "classification": True}, "classification"),
        ({"epochs": 3}, "'name'"),
        ({"atom_features": "cfid", "model": {"name": "alignn"}}, "atom_features='cfid'"),
    ],
)
def test_unsupported_reference_configs_are_config_errors(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_reference_checkpoint({}, config)


def test_cgcnn_table_is_jarvis_tools_table() -> None:
    import jarvis.core.specie as specie

    jarvis_table = json.loads(Path(specie.cgcnn_feature_json).read_text())
    table = cgcnn_feature_table()
    for z in range(1, 101):
        assert table[z].tolist() == [float(v) for v in jarvis_table[str(z)]], z


def test_rbf_expansion_equals_reference() -> None:
    from alignn.models.utils import RBFExpansion as ReferenceRBF

    from matxfer.models import RBFExpansion

    values = torch.linspace(-1.5, 9.0, 57)
    for vmin, vmax, bins in ((0.0, 8.0, 80), (-1.0, 1.0, 40)):
        torch.testing.assert_close(
            RBFExpansion(vmin, vmax, bins)(values), ReferenceRBF(vmin, vmax, bins)(values)
        )


def test_model_is_returned_in_eval_mode() -> None:
    settings = {**PURE, **SMALL}
    model = load_reference_checkpoint(_pure_model(**settings).state_dict(), settings)
    assert isinstance(model, ALIGNN) and not model.training
