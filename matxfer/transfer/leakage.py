"""Leakage audit: fine-tuning test crystals hidden in the pre-training data.

Datasets of different properties drawn from one database share crystals. A
model pre-trained on dataset A (with A's label) then fine-tuned and tested on
dataset B has already seen many of B's test structures: 97 of the 127 phonon
test crystals of Devi, Butler & Sai Gautam (arXiv 2406.13142) are in the
dielectric pool. The label differs, but the structure representation was
trained on them. :func:`audit_leakage` measures this;
:func:`exclude_structures` removes such crystals from the pre-training data
(``--exclude-test-structures``). Matching is :func:`matxfer.transfer.merge.find_matches`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from matxfer.data.records import Record
from matxfer.transfer.merge import MatchSettings, StructureIndex, find_matches


@dataclass
class LeakageReport:
    """Fine-tuning structures that also occur in the pre-training data.

    Args:
        num_pretrain: Pre-training records audited.
        num_train: Fine-tuning training records audited.
        num_test: Fine-tuning test records audited.
        test_in_pretrain: FT test id → ids of the PT records with that crystal.
        train_in_pretrain: FT train id → ids of the PT records with that crystal.
    """

    num_pretrain: int
    num_train: int
    num_test: int
    test_in_pretrain: dict[str, list[str]]
    train_in_pretrain: dict[str, list[str]]

    @property
    def test_fraction(self) -> float:
        """Share of FT test records whose crystal is in the PT data."""
        return len(self.test_in_pretrain) / self.num_test if self.num_test else 0.0

    @property
    def train_fraction(self) -> float:
        """Share of FT training records whose crystal is in the PT data."""
        return len(self.train_in_pretrain) / self.num_train if self.num_train else 0.0

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "num_pretrain": self.num_pretrain,
            "num_train": self.num_train,
            "num_test": self.num_test,
            "test_leaked": len(self.test_in_pretrain),
            "train_leaked": len(self.train_in_pretrain),
            "test_in_pretrain": self.test_in_pretrain,
            "train_in_pretrain": self.train_in_pretrain,
        }

    def __str__(self) -> str:
        return (
            f"{len(self.test_in_pretrain)} of {self.num_test} fine-tuning test structures "
            f"({self.test_fraction:.0%}) and {len(self.train_in_pretrain)} of {self.num_train} "
            f"training structures ({self.train_fraction:.0%}) occur in the "
            f"{self.num_pretrain} pre-training records"
        )


def _occurrences(
    queries: Sequence[Record],
    pool: Sequence[Record],
    pool_index: StructureIndex,
    settings: MatchSettings | None,
) -> dict[str, list[str]]:
    """Query id → ids of the pool records holding the same crystal."""
    found: dict[str, list[str]] = defaultdict(list)
    pairs = find_matches([r.structure for r in queries], pool_index, settings)
    for i, j in pairs:
        found[queries[i].id].append(pool[j].id)
    return dict(found)


def audit_leakage(
    pt_records: Sequence[Record],
    ft_train: Sequence[Record],
    ft_test: Sequence[Record],
    settings: MatchSettings | None = None,
) -> LeakageReport:
    """Count FT train and test crystals that also occur in the PT data.

    Args:
        pt_records: Pre-training records (any labels).
        ft_train: Fine-tuning training (and validation) records.
        ft_test: Fine-tuning test records.
        settings: Match tolerances (default: :class:`MatchSettings`).
    """
    pt_index = StructureIndex(r.structure for r in pt_records)  # shared by both audits
    return LeakageReport(
        num_pretrain=len(pt_records),
        num_train=len(ft_train),
        num_test=len(ft_test),
        test_in_pretrain=_occurrences(ft_test, pt_records, pt_index, settings),
        train_in_pretrain=_occurrences(ft_train, pt_records, pt_index, settings),
    )


def exclude_structures(
    pt_records: Sequence[Record],
    ft_test: Sequence[Record],
    settings: MatchSettings | None = None,
) -> list[Record]:
    """Pre-training records whose crystal is in none of ``ft_test`` (order kept).

    Args:
        pt_records: Pre-training records.
        ft_test: Structures the pre-trained model must not see.
        settings: Match tolerances (default: :class:`MatchSettings`).
    """
    pairs = find_matches(
        [r.structure for r in ft_test], [r.structure for r in pt_records], settings
    )
    leaked = {j for _, j in pairs}
    return [record for j, record in enumerate(pt_records) if j not in leaked]
