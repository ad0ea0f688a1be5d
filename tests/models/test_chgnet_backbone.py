"""CHGNet as a backbone: its features, config round trip and layer groups (needs chgnet)."""

from __future__ import annotations

import sys

import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch_geometric.loader import DataLoader

from matxfer.errors import DataError, MissingDependencyError
from matxfer.transfer.freeze import parameter_groups

chgnet = pytest.importorskip("chgnet")

from matxfer.models.chgnet_backbone import (  # noqa: E402  (after the skip)
    INSTALL_HINT,
    CHGNetRegressor,
    require_chgnet,
)


@pytest.fixture(scope="module")
def regressor() -> CHGNetRegressor:
    return CHGNetRegressor.from_pretrained(num_outputs=2, seed=0).eval()


def _batch(model: CHGNetRegressor, structures: list[Structure]) -> object:
    graphs = model.featurize(structures)
    return next(iter(DataLoader(graphs, batch_size=len(graphs))))


def test_features_are_chgnets_mean_pooled(
    regressor: CHGNetRegressor, small_structures: list[Structure]
) -> None:
    """Same numbers as CHGNet's own forward pass (its sum-pooled crystal feature / atoms)."""
    from chgnet.model import CHGNet
    from chgnet.model.model import BatchedGraph

    reference = CHGNet.load(use_device="cpu", verbose=False)
    batch = _batch(regressor, small_structures)
    graphs = list(batch.chgnet_graph)
    batched = BatchedGraph.from_graphs(
        graphs, reference.bond_basis_expansion, reference.angle_basis_expansion
    )
    with torch.no_grad():
        expected = reference._compute(batched, return_crystal_feas=True)
        features = regressor.crystal_features(batch)
    mean = expected["crystal_fea"] / expected["atoms_per_graph"].unsqueeze(1)
    torch.testing.assert_close(features, mean)
    assert regressor(batch).shape == (len(small_structures), 2)


def test_config_round_trip(regressor: CHGNetRegressor, small_structures: list[Structure]) -> None:
    rebuilt = CHGNetRegressor.from_config_dict(regressor.config_dict()).eval()
    rebuilt.load_state_dict(regressor.state_dict(), strict=True)
    batch = _batch(regressor, small_structures[:3])
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), regressor(batch))


def test_every_parameter_in_a_chgnet_block_group(regressor: CHGNetRegressor) -> None:
    groups = parameter_groups(regressor)
    assert set(groups.values()) == {"embedding", "two_body", "three_body", "head"}
    by_block = {
        block: {g for n, g in groups.items() if n.startswith(f"backbone.{block}")}
        for block in ("atom_embedding", "atom_conv", "bond_conv", "angle_layers")
    }
    assert by_block == {
        "atom_embedding": {"embedding"},
        "atom_conv": {"two_body"},
        "bond_conv": {"three_body"},
        "angle_layers": {"three_body"},
    }
    assert groups["backbone.readout_norm.weight"] == "head"
    # CHGNet's energy readout and composition model are gone, not merely unused.
    assert not any(n.startswith(("backbone.mlp", "backbone.composition")) for n in groups)


def test_graphs_carry_no_gradient_state(
    regressor: CHGNetRegressor, small_structures: list[Structure]
) -> None:
    """Cached graphs are reused every epoch: they must not collect gradients."""
    graph = regressor.featurize(small_structures[:1])[0].chgnet_graph
    assert not graph.atom_frac_coord.requires_grad
    assert not graph.lattice.requires_grad


def test_elements_beyond_chgnets_embedding_are_named_not_an_index_error(
    regressor: CHGNetRegressor, small_structures: list[Structure]
) -> None:
    americium = Structure(Lattice.cubic(3.0), ["Am", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(DataError, match="1 of 2 structures hold elements CHGNet cannot") as bad:
        regressor.featurize([small_structures[0], americium], ids=["ok", "am"])
    assert [str(p) for p in bad.value.problems] == [
        "input: record 1 (id am): element(s) Am beyond CHGNet's Z 1-94"
    ]


def test_missing_chgnet_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chgnet", None)  # import chgnet raises ImportError
    with pytest.raises(MissingDependencyError, match="matxfer\\[chgnet\\]") as error:
        require_chgnet()
    assert INSTALL_HINT in str(error.value)
    assert "\n" not in str(error.value)
