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

    Args:
        train: Training graphs (with ``y``).
        val: Validation graphs.
        test: Test graphs (may be empty).
        batch_size: Graphs per batch (default: ``16``).
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
        return graph_loader(self.train, self.batch_size, self.seed, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return graph_loader(self.val, self.batch_size, None, self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return graph_loader(self.test, self.batch_size, None, self.num_workers)
