"""Leakage audit between pre-training and fine-tuning data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pymatgen.core import Structure

from matxfer.data.records import Record
from matxfer.transfer.leakage import audit_leakage, exclude_structures


def _record(prefix: str, i: int, structure: Structure) -> Record:
    return Record(f"{prefix}{i}", structure, {"target": 0.0})


@pytest.fixture
def split(small_structures: list[Structure]) -> tuple[list[Record], list[Record], list[Record]]:
    """PT holds FT test crystals 0 and 1 (one as a supercell) and FT train crystal 4."""
    s = small_structures
    pt = [_record("pt", i, x) for i, x in enumerate([s[0] * (1, 1, 2), s[9], s[1], s[4]])]
    train = [_record("tr", i, x) for i, x in enumerate([s[4], s[5], s[6]])]
    test = [_record("te", i, x) for i, x in enumerate([s[0], s[1], s[2], s[3]])]
    return pt, train, test


def test_audit_counts_and_ids(split: tuple[list[Record], list[Record], list[Record]]) -> None:
    pt, train, test = split
    report = audit_leakage(pt, train, test)
    assert report.test_in_pretrain == {"te0": ["pt0"], "te1": ["pt2"]}
    assert report.train_in_pretrain == {"tr0": ["pt3"]}
    assert report.test_fraction == pytest.approx(2 / 4)
    assert "2 of 4 fine-tuning test structures" in str(report)
    assert report.to_dict()["test_leaked"] == 2


def test_exclude_drops_only_test_crystals(
    split: tuple[list[Record], list[Record], list[Record]],
) -> None:
    pt, train, test = split
    kept = exclude_structures(pt, test)
    assert [r.id for r in kept] == ["pt1", "pt3"]
    assert audit_leakage(kept, train, test).test_in_pretrain == {}


@pytest.mark.shared_data
def test_phonon_test_in_dielectric_pool(
    shared_datasets: Path, read_jarvis_json: Callable[..., list[Record]]
) -> None:
    dc_pool = read_jarvis_json(shared_datasets / "dc" / "pool.json.gz")
    ph_test = read_jarvis_json(shared_datasets / "ph" / "test.json.gz")
    report = audit_leakage(dc_pool, [], ph_test)
    # 46 by structure (52 share a reduced formula). The often-quoted 97 is the
    # number of equal jid *numbers*, which are row indices, not shared materials.
    assert 40 <= len(report.test_in_pretrain) <= 52
    kept = exclude_structures(dc_pool, ph_test)
    leaked = {j for ids in report.test_in_pretrain.values() for j in ids}
    assert len(kept) == len(dc_pool) - len(leaked)
