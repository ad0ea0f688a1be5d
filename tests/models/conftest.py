"""Fixtures for model tests: small synthetic graphs (see ``model_graphs.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from model_graphs import random_graph

from matxfer.graphs.data import CrystalGraph


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run on one thread: these tensors are tiny, and on a shared 2-core machine
    two OpenMP threads wait on each other at every op (50x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def graphs() -> list[CrystalGraph]:
    """Five small random graphs of different sizes."""
    return [random_graph(n, 3 * n, seed=n) for n in (2, 3, 4, 5, 6)]
