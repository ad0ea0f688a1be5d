"""Fixtures for graph tests: tie-free random crystals and real records read directly."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

#: Records of the fe pool compared against the reference ALIGNN.
REFERENCE_SAMPLE = 100


def read_pool(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` records of a JARVIS-format ``.json.gz`` file."""
    with gzip.open(path, "rt") as file:
        return json.load(file)[:count]


def to_structure(atoms: dict[str, Any]) -> Structure:
    """A JARVIS ``atoms`` dict as a pymatgen Structure (coordinates kept as given)."""
    return Structure(
        Lattice(atoms["lattice_mat"]),
        atoms["elements"],
        atoms["coords"],
        coords_are_cartesian=atoms["cartesian"],
    )


def _random_crystal(seed: int, n_atoms: int = 5, k: int = 12) -> Structure:
    """A low-symmetry crystal whose k-th and (k+1)-th neighbour distances differ.

    Atoms are at least 1.5 Å apart, and every atom's k-th neighbour is clear of
    the next one by 1e-3 Å, so rounding cannot decide which neighbours are kept
    (an atom's images at +I and -I are always tied, so this is not automatic).
    """
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(4.1, 4.7, 5.3, 83.0, 97.0, 104.0)
    species = ["Si", "O", "Mg", "Al", "Fe", "Ti", "N", "Li"][:n_atoms]
    while True:
        crystal = Structure(lattice, species, rng.random((n_atoms, 3)))
        centre, _, _, distance = crystal.get_neighbor_list(12.0)
        gaps = [
            np.diff(np.sort(distance[centre == atom])[k - 1 : k + 1])[0] for atom in range(n_atoms)
        ]
        if crystal.distance_matrix[np.triu_indices(n_atoms, 1)].min(initial=9) > 1.5 and (
            min(gaps) > 1e-3
        ):
            return crystal


@pytest.fixture(scope="session")
def random_crystal() -> Callable[..., Structure]:
    """``random_crystal(seed, n_atoms=5)``: a low-symmetry crystal without distance ties."""
    return _random_crystal


@pytest.fixture(scope="session")
def fe_sample(shared_datasets: Path) -> list[tuple[dict[str, Any], Structure]]:
    """The first records of the formation-energy pool: (JARVIS dict, Structure)."""
    records = read_pool(shared_datasets / "fe" / "pool.json.gz", REFERENCE_SAMPLE)
    return [(record, to_structure(record["atoms"])) for record in records]
