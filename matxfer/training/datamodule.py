"""Lightning data module over prebuilt :class:`~matxfer.graphs.data.CrystalGraph` lists
(training shuffles by ``(seed, epoch)``, see :mod:`matxfer.training.loaders`)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
from torch_geometric.loader import DataLoader

from matxfer.graphs.data import CrystalGraph
from matxfer.training.loaders import graph_loader


class GraphDataModule(pl.LightningDataModule):
    """Train/validation/test loaders over labelled graphs.

    Under data-parallel training (DDP, ``N`` processes) each process trains
    on its share of every shuffled epoch in batches of ``batch_size / N``,
    so ``batch_size`` stays the global batch; every process validates and
    tests on the whole split (no padding duplicates: the metrics reduced
    across processes equal one process's).

    Args:
        train: Training graphs (with ``y``).
        val: Validation graphs.
        test: Test graphs (may be empty).
        batch_size: Graphs per (global) batch (default: ``16``).
        seed: Seed of the training shuffle (default: ``0``).
        num_workers: Loader worker processes (default: ``0``).
    """

    def __init__(
        self,
        train: Sequence[CrystalGraph],
        val: Sequence[CrystalGraph],
        test: Sequence[CrystalGraph] = (),
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.train = list(train)
        self.val = list(val)
        self.test = list(test)
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer  # None outside a Trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return graph_loader(
            self.train, self.batch_size // replicas, self.seed, self.num_workers, replicas, rank
        )

    def val_dataloader(self) -> DataLoader:
        return graph_loader(self.val, self.batch_size, None, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return graph_loader(self.test, self.batch_size, None, self.num_workers)
