"""ALIGNN model: shapes, invariances, configuration, initialisation, gradients."""

from __future__ import annotations

import json

import pytest
import torch
from model_graphs import permuted, random_graph
from torch_geometric.data import Batch

from matxfer.errors import ConfigError, DataError
from matxfer.graphs.data import CrystalGraph
from matxfer.models import ALIGNN, ALIGNNConv, EdgeGatedGraphConv, MLPHead

SMALL = {"alignn_layers": 2, "gcn_layers": 2, "hidden_features": 16, "embedding_features": 8}


def small_model(norm: str = "batch", num_outputs: int = 1, **kwargs) -> ALIGNN:
    torch.manual_seed(0)
    return ALIGNN(num_outputs=num_outputs, norm=norm, **{**SMALL, **kwargs})


@pytest.mark.parametrize("num_outputs", [1, 3])
def test_output_shape_is_graphs_by_outputs(graphs: list[CrystalGraph], num_outputs: int) -> None:
    model = small_model(num_outputs=num_outputs)
    assert model(Batch.from_data_list(graphs)).shape == (len(graphs), num_outputs)
    model.eval()
    assert model(graphs[0]).shape == (1, num_outputs)


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_batch_prediction_equals_single_predictions(graphs: list[CrystalGraph], norm: str) -> None:
    model = small_model(norm, num_outputs=2)
    model.train()
    model(Batch.from_data_list(graphs))  # move BatchNorm running statistics off their defaults
    model.eval()
    with torch.no_grad():
        batched = model(Batch.from_data_list(graphs))
        single = torch.cat([model(graph) for graph in graphs])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_prediction_is_invariant_to_atom_bond_and_pair_order(
    graphs: list[CrystalGraph], norm: str
) -> None:
    model = small_model(norm).eval()
    with torch.no_grad():
        for seed, graph in enumerate(graphs):
            torch.testing.assert_close(
                model(graph), model(permuted(graph, seed)), rtol=1e-5, atol=1e-5
            )


def test_study_settings_have_the_reference_parameter_count() -> None:
    # 4 + 4 layers, hidden 256, embedding 64: the reference's 4,026,753 parameters.
    for norm in ("batch", "layer"):
        model = ALIGNN(norm=norm)
        assert sum(p.numel() for p in model.parameters()) == 4_026_753


def test_named_layer_groups_and_blocks() -> None:
    model = small_model()
    for names in ALIGNN.LAYER_GROUPS.values():
        for name in names:
            assert isinstance(getattr(model, name), torch.nn.Module)
    assert all(isinstance(layer, ALIGNNConv) for layer in model.alignn_layers)
    assert isinstance(model.alignn_layers[0].node_update, EdgeGatedGraphConv)
    assert isinstance(model.alignn_layers[0].edge_update, EdgeGatedGraphConv)
    assert all(isinstance(layer, EdgeGatedGraphConv) for layer in model.gcn_layers)
    assert isinstance(model.head, MLPHead)
    assert isinstance(model.head.out, torch.nn.Linear)


def test_repr_shows_key_hyperparameters() -> None:
    assert repr(small_model("layer", num_outputs=3)) == (
        "ALIGNN(alignn_layers=2, gcn_layers=2, hidden_features=16, embedding_features=8, "
        "norm='layer', num_outputs=3)"
    )
    assert repr(EdgeGatedGraphConv(8, 8, norm="batch")) == (
        "EdgeGatedGraphConv(8, 8, norm='batch', residual=True)"
    )
    assert repr(MLPHead(16, 2, hidden_layers=1)) == (
        "MLPHead(16, 2, hidden_layers=1, hidden_features=16, norm='none')"
    )


def test_config_round_trip_rebuilds_the_same_model(graphs: list[CrystalGraph]) -> None:
    model = small_model("layer", num_outputs=2, head_hidden_layers=1, head_hidden_features=12)
    config = json.loads(json.dumps(model.config_dict()))
    rebuilt = ALIGNN.from_config_dict(config)
    assert rebuilt.config_dict() == model.config_dict()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    batch = Batch.from_data_list(graphs)
    torch.testing.assert_close(rebuilt.eval()(batch), model.eval()(batch))


def test_config_dict_follows_a_replaced_head() -> None:
    model = small_model()
    model.head = MLPHead(16, 4, hidden_layers=2, hidden_features=8)
    config = model.config_dict()
    assert (
        config["num_outputs"],
        config["head_hidden_layers"],
        config["head_hidden_features"],
    ) == (
        4,
        2,
        8,
    )
    model.head = torch.nn.Linear(16, 1)
    with pytest.raises(ConfigError, match="MLPHead"):
        model.config_dict()


def test_bad_configuration_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"\['batch', 'layer', 'none'\]"):
        ALIGNN(norm="group")
    with pytest.raises(ConfigError, match="unknown ALIGNN config keys \\['hidden'\\]"):
        ALIGNN.from_config_dict({"hidden": 3})
    with pytest.raises(ConfigError, match="atom_input_features"):
        ALIGNN(atom_input_features=10)


def test_out_of_range_atomic_number_is_a_data_error(graphs: list[CrystalGraph]) -> None:
    graph = graphs[0].clone()
    graph.z = graph.z.clone()
    graph.z[0] = 0
    with pytest.raises(DataError, match=r"\[0\]"):
        small_model()(graph)


def test_reset_parameters_changes_every_weight_matrix() -> None:
    model = small_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(1)
    model.reset_parameters()
    for key, value in model.state_dict().items():
        if key.endswith("weight") and value.dim() == 2:
            assert not torch.equal(value, before[key]), key
        if key.endswith("centers"):
            assert torch.equal(value, before[key])


# The last ALIGNN layer's angle output and the last GCN layer's bond output are
# never used (as in the reference), so their edge normalisations get no gradient.
UNUSED_BY_DESIGN = {
    "alignn_layers.1.edge_update.norm_edges.weight",
    "alignn_layers.1.edge_update.norm_edges.bias",
    "gcn_layers.1.norm_edges.weight",
    "gcn_layers.1.norm_edges.bias",
}


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_gradient_reaches_every_used_parameter(graphs: list[CrystalGraph], norm: str) -> None:
    model = small_model(norm, num_outputs=2)
    model(Batch.from_data_list(graphs)).square().sum().backward()
    for name, parameter in model.named_parameters():
        if name in UNUSED_BY_DESIGN:
            assert parameter.grad is None, name
        else:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_training_changes_predictions_and_fits_a_batch(graphs: list[CrystalGraph]) -> None:
    model = small_model("layer", num_outputs=2)
    batch = Batch.from_data_list(graphs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = (model(batch) - batch.y).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_larger_random_graph_runs_in_float64() -> None:
    graph = random_graph(9, 40, seed=3)
    model = small_model("batch").double()
    graph.edge_vec = graph.edge_vec.double()
    graph.angle_cos = graph.angle_cos.double()
    model.eval()
    assert model(graph).dtype == torch.float64


def test_real_crystal_graphs_predict_rotation_invariantly(small_structures) -> None:
    from pymatgen.core import Structure
    from scipy.spatial.transform import Rotation

    from matxfer.graphs import build_graph

    model = small_model("batch", num_outputs=2)
    model(Batch.from_data_list([build_graph(s) for s in small_structures[:4]]))
    model.eval()
    rotation = Rotation.from_euler("xyz", [30, 70, -20], degrees=True).as_matrix()
    for structure in small_structures[:4]:
        rotated = Structure(
            structure.lattice.matrix @ rotation.T, structure.species, structure.frac_coords
        )
        with torch.no_grad():
            torch.testing.assert_close(
                model(build_graph(structure)), model(build_graph(rotated)), rtol=1e-4, atol=1e-5
            )


def test_autocast_bfloat16_runs_and_stays_close(graphs: list[CrystalGraph]) -> None:
    model = small_model("layer", num_outputs=2).eval()
    batch = Batch.from_data_list(graphs)
    with torch.no_grad():
        full = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)
    assert torch.isfinite(low).all()
    assert (low.float() - full).abs().max() < 0.1 * (full.abs().max() + 1)


def test_graph_without_bond_pairs_leaves_batch_norm_statistics_alone() -> None:
    graph = random_graph(3, 4, seed=7)
    graph.lg_edge_index = graph.lg_edge_index[:, :0]
    graph.angle_cos = graph.angle_cos[:0]
    model = small_model("batch")
    before = model.alignn_layers[0].edge_update.norm_edges.running_var.clone()
    out = model(graph)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(model.alignn_layers[0].edge_update.norm_edges.running_var, before)
