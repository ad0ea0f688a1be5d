"""PyG data loaders over labelled :class:`~matxfer.graphs.data.CrystalGraph` lists.

Shuffling is a pure function of ``(seed, epoch)``: Lightning calls
:meth:`EpochShuffleSampler.set_epoch` before every epoch, including the
first epoch after ``--resume``, so an interrupted and resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from torch_geometric.loader import DataLoader

from matxfer.data.records import Record
from matxfer.graphs.data import CrystalGraph


class EpochShuffleSampler(Sampler[int]):
    """Random permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    Args:
        n: Dataset length.
        seed: Run seed.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called by Lightning's fit loop)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def with_targets(
    graphs: Sequence[CrystalGraph], records: Sequence[Record], names: Sequence[str]
) -> list[CrystalGraph]:
    """Shallow copies of ``graphs`` carrying ``y`` ``[1, P]`` in original units.

    Args:
        graphs: One graph per record, same order.
        records: The records (their ``targets`` give ``y``; missing → NaN).
        names: Target names, the column order of ``y``.
    """
    out = []
    for graph, record in zip(graphs, records, strict=True):
        labelled = copy.copy(graph)
        values = [record.targets.get(name, math.nan) for name in names]
        labelled.y = torch.tensor([values], dtype=torch.float32)
        out.append(labelled)
    return out


def graph_loader(
    graphs: Sequence[CrystalGraph],
    batch_size: int,
    shuffle_seed: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A PyG loader; ``shuffle_seed`` set → epoch-seeded shuffling, else record order.

    Args:
        graphs: The graphs.
        batch_size: Graphs per batch.
        shuffle_seed: Seed of :class:`EpochShuffleSampler`, ``None`` for no shuffling.
        num_workers: Worker processes (0: load in the main process).
    """
    sampler = EpochShuffleSampler(len(graphs), shuffle_seed) if shuffle_seed is not None else None
    return DataLoader(
        list(graphs),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
