"""Shared fixtures: tiny synthetic structures and the optional real datasets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

#: ``../shared/datasets`` beside the project root; tests needing it skip when absent.
SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session", autouse=True)
def _fixed_thread_count() -> Iterator[None]:
    """Training sizes its thread pool by the machine's load and float sums depend on
    the thread count; tests compare runs bit for bit, so they fix it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_THREADS", "1")
        yield


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "ph" / "pool.json.gz").exists():
        pytest.skip("../shared/datasets not present")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def simple_cubic() -> Structure:
    return Structure(Lattice.cubic(3.0), ["Po"], [[0, 0, 0]])


@pytest.fixture(scope="session")
def rocksalt() -> Structure:
    return Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )


@pytest.fixture(scope="session")
def small_structures() -> list[Structure]:
    """A dozen small, varied, valid crystals (deterministic)."""
    rng = np.random.default_rng(0)
    out = []
    elements = ["Li", "O", "Si", "Na", "Cl", "Mg", "Al", "Fe", "Ti", "N"]
    for i in range(12):
        a = 3.5 + 0.1 * i
        n = 1 + i % 4
        species = [elements[(i + k) % len(elements)] for k in range(n)]
        # Jittered positions on a coarse grid keep atoms > 1 Å apart.
        grid = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])[:n]
        coords = grid + rng.uniform(-0.03, 0.03, size=grid.shape)
        lattice = Lattice.from_parameters(a, a * 1.05, a * 0.97, 88 + i % 5, 90, 91)
        out.append(Structure(lattice, species, coords))
    return out
