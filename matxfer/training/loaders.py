"""PyG data loaders over labelled :class:`~matxfer.graphs.data.CrystalGraph` lists.

Shuffling is a pure function of ``(seed, epoch)``: Lightning calls
:meth:`EpochShuffleSampler.set_epoch` before every epoch, including the
first epoch after ``--resume``, so an interrupted and resumed run sees the
same batches as an uninterrupted one.

Data-parallel (DDP) training splits each epoch's one permutation among the
processes: rank ``r`` of ``N`` takes positions ``r, r + N, r + 2N, ...``
in batches of ``B / N``. Step ``k`` of all ranks together then sees positions
``kB`` to ``(k + 1)B - 1``, the very batch one process with batch ``B`` sees
(when ``N`` divides the record count; otherwise the permutation is padded
with its first records, like :class:`torch.utils.data.DistributedSampler`,
so that every rank takes the same number of steps). Every epoch is shuffled
anew on every rank; the reference ALIGNN's DDP sampler never got
``set_epoch`` and repeated the first epoch's order.
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
    """Random permutation of ``range(n)`` seeded by ``(seed, epoch)``; a rank's share of it.

    Args:
        n: Dataset length.
        seed: Run seed.
        replicas: Data-parallel processes sharing the epoch (default: ``1``).
        rank: This process's rank, ``0 <= rank < replicas`` (default: ``0``).
    """

    def __init__(self, n: int, seed: int, replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < replicas:
            raise ValueError(f"rank {rank} outside 0..{replicas - 1}")
        self.n = n
        self.seed = seed
        self.replicas = replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (called by Lightning's fit loop)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        if self.replicas == 1:
            return iter(order)
        padding = len(self) * self.replicas - self.n
        order += (order * math.ceil(padding / max(self.n, 1)))[:padding]
        return iter(order[self.rank :: self.replicas])

    def __len__(self) -> int:
        return math.ceil(self.n / self.replicas)


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
    replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """A PyG loader; ``shuffle_seed`` set → epoch-seeded shuffling, else record order.

    Args:
        graphs: The graphs.
        batch_size: Graphs per batch.
        shuffle_seed: Seed of :class:`EpochShuffleSampler`, ``None`` for no shuffling.
        num_workers: Worker processes (0: load in the main process).
        replicas: Data-parallel processes sharing the shuffled epoch (with ``shuffle_seed``).
        rank: This process's rank among them.
    """
    sampler = None
    if shuffle_seed is not None:
        sampler = EpochShuffleSampler(len(graphs), shuffle_seed, replicas, rank)
    return DataLoader(
        list(graphs),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
