"""Fixtures for transfer tests: a stand-in ALIGNN with the real submodule names, and a loader."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure
from torch import Tensor, nn

from matxfer.data.records import DEFAULT_TARGET, Record
from matxfer.models.mlp import MLPHead

INPUT_FEATURES = 9  # 4 atom + 3 bond + 2 angle features


class _Update(nn.Module):
    """Linear → BatchNorm → SiLU, residual: BatchNorm gives running statistics to protect."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.nn.functional.silu(self.norm(self.linear(x)))


class _Conv(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.node_update = _Update(width)
        self.edge_update = _Update(width)


class StandInALIGNN(nn.Module):
    """Tiny dense model named like :class:`matxfer.models.ALIGNN` (groups, BatchNorm, MLPHead).

    ``forward(x [B, 9]) -> [B, P]``: the 9 inputs split into atom, bond and
    angle features; every parameter influences the output.
    """

    def __init__(self, num_outputs: int = 2, width: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.atom_embedding = nn.Sequential(nn.Linear(4, width), nn.BatchNorm1d(width))
        self.edge_embedding = nn.Linear(3, width)
        self.angle_embedding = nn.Linear(2, width)
        self.alignn_layers = nn.ModuleList(_Conv(width) for _ in range(layers))
        self.gcn_layers = nn.ModuleList(_Update(width) for _ in range(layers))
        self.head = MLPHead(width, num_outputs, hidden_layers=1, norm="batch")

    def forward(self, x: Tensor) -> Tensor:
        h = self.atom_embedding(x[:, :4])
        bond = self.edge_embedding(x[:, 4:7])
        angle = self.angle_embedding(x[:, 7:])
        for layer in self.alignn_layers:
            angle = layer.edge_update(angle)
            bond = bond + angle
            h = layer.node_update(h + bond)
        for layer in self.gcn_layers:
            h = layer(h)
        return self.head(h)


@pytest.fixture
def stand_in() -> StandInALIGNN:
    torch.manual_seed(0)
    return StandInALIGNN()


@pytest.fixture
def stand_in_inputs() -> Tensor:
    return torch.randn(16, INPUT_FEATURES, generator=torch.Generator().manual_seed(1))


def load_jarvis_json(path: Path, limit: int | None = None) -> list[Record]:
    """Read an ALIGNN/JARVIS ``.json.gz`` list (private: independent of the readers' API)."""
    with gzip.open(path, "rt") as handle:
        items = json.load(handle)
    records = []
    for index, item in enumerate(items[:limit]):
        atoms = item["atoms"]
        structure = Structure(
            Lattice(atoms["lattice_mat"]),
            atoms["elements"],
            atoms["coords"],
            coords_are_cartesian=atoms["cartesian"],
        )
        records.append(
            Record(str(item["jid"]), structure, {DEFAULT_TARGET: item["target"]}, str(path), index)
        )
    return records


@pytest.fixture(scope="session")
def read_jarvis_json():
    """:func:`load_jarvis_json`, as a fixture so tests need not import conftest."""
    return load_jarvis_json
