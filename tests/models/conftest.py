"""Fixtures for model tests: small synthetic graphs (see ``model_graphs.py``)."""

from __future__ import annotations

import pytest
from model_graphs import random_graph

from matxfer.graphs.data import CrystalGraph


@pytest.fixture(scope="session")
def graphs() -> list[CrystalGraph]:
    """Five small random graphs of different sizes."""
    return [random_graph(n, 3 * n, seed=n) for n in (2, 3, 4, 5, 6)]
