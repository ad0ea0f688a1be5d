"""Structure matching across datasets and the multi-property merge."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from matxfer.data.records import Record
from matxfer.errors import ConfigError
from matxfer.transfer.merge import MatchSettings, StructureIndex, find_matches, merge_datasets

_FCC = [[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]


def _rocksalt(a: float, cation: str, anion: str) -> Structure:
    """Conventional 8-atom rock-salt cell (built directly: faster than from_spacegroup)."""
    anion_sites = [[(x + 0.5) % 1, y, z] for x, y, z in _FCC]
    return Structure(Lattice.cubic(a), [cation] * 4 + [anion] * 4, _FCC + anion_sites)


@pytest.fixture(scope="module")
def nacl() -> Structure:
    return _rocksalt(5.64, "Na", "Cl")


def _variant(structure: Structure, seed: int) -> Structure:
    """The same crystal, written differently: supercell, shifted origin, jiggled sites."""
    copy = structure * (2, 1, 1)
    copy.translate_sites(range(len(copy)), [0.13, 0.07, 0.31])
    rng = np.random.default_rng(seed)
    for i in range(len(copy)):
        copy.translate_sites([i], rng.normal(0, 0.01, 3), frac_coords=False)
    return copy


def _records(prefix: str, structures: list[Structure]) -> list[Record]:
    return [Record(f"{prefix}{i}", s, {"target": float(i)}) for i, s in enumerate(structures)]


@pytest.fixture(scope="module")
def others() -> dict[str, Structure]:
    return {
        "KCl": _rocksalt(6.29, "K", "Cl"),
        # Same formula and volume per atom as rock-salt NaCl, but CsCl-type.
        "NaCl-B2": Structure(
            Lattice.cubic((5.64**3 / 4) ** (1 / 3)), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
        ),
        "MgO": _rocksalt(4.21, "Mg", "O"),
    }


def test_find_matches_same_crystal_only(nacl: Structure, others: dict[str, Structure]) -> None:
    left = [nacl, others["KCl"]]
    right = [others["NaCl-B2"], _variant(nacl, 0), others["MgO"], _variant(others["KCl"], 1)]
    assert find_matches(left, right) == [(0, 1), (1, 3)]


def test_structure_index_reuses_reduced_cells(
    nacl: Structure, others: dict[str, Structure]
) -> None:
    right = [_variant(nacl, 8), others["KCl"]]
    index = StructureIndex([others["MgO"]])
    index.extend(StructureIndex(right))
    assert (
        find_matches([nacl], index)
        == [(0, 1)]
        == [(i, j + 1) for i, j in find_matches([nacl], right)]
    )
    reduced = index.reduced(1)
    assert index.reduced(1) is reduced
    assert len(reduced) == 2  # primitive rock-salt cell of the 16-atom supercell


def test_volume_prefilter(nacl: Structure) -> None:
    expanded = nacl.copy()
    expanded.scale_lattice(nacl.volume * 1.3)
    assert find_matches([nacl], [expanded]) == []
    assert find_matches([nacl], [expanded], MatchSettings(volume_tol=0.5)) == [(0, 0)]


def test_merge_joins_shared_crystals(nacl: Structure, others: dict[str, Structure]) -> None:
    a = _records("a", [nacl, others["KCl"]])
    b = _records("b", [others["MgO"], _variant(nacl, 2)])
    merged, report = merge_datasets({"ph": a, "dc": b})
    by_id = {r.id: r for r in merged}
    assert set(by_id) == {"ph:a0|dc:b1", "ph:a1", "dc:b0"}
    assert by_id["ph:a0|dc:b1"].targets == {"ph": 0.0, "dc": 1.0}
    assert by_id["ph:a0|dc:b1"].structure is nacl
    assert by_id["dc:b0"].targets == {"dc": 0.0}
    assert report.counts == {"ph": 2, "dc": 2}
    assert report.overlaps == {("ph", "dc"): 1}
    assert report.merged_total == 3 == report.input_total - 1
    # nothing counted twice: every input label appears exactly once
    assert sum(len(r.targets) for r in merged) == report.input_total


def test_duplicate_within_one_dataset_stays_separate(nacl: Structure) -> None:
    a = _records("a", [nacl])
    b = _records("b", [_variant(nacl, 3), _variant(nacl, 4)])
    merged, report = merge_datasets({"a": a, "b": b})
    assert [r.id for r in merged] == ["a:a0|b:b0", "b:b1"]
    assert report.duplicates_within == {"a": 0, "b": 1}


def test_three_datasets_pairwise_overlaps(nacl: Structure, others: dict[str, Structure]) -> None:
    data = {
        "x": _records("x", [nacl, others["MgO"]]),
        "y": _records("y", [_variant(nacl, 5)]),
        "z": _records("z", [_variant(others["MgO"], 6), _variant(nacl, 7)]),
    }
    merged, report = merge_datasets(data)
    assert report.overlaps == {("x", "y"): 1, ("x", "z"): 2, ("y", "z"): 1}
    assert sorted(r.id for r in merged) == ["x:x0|y:y0|z:z1", "x:x1|z:z0"]


def test_multi_target_records_keep_their_names(nacl: Structure) -> None:
    record = Record("m1", nacl, {"gap": 1.0, "energy": -2.0})
    merged, _ = merge_datasets({"mp": [record]})
    assert merged[0].targets == {"mp.gap": 1.0, "mp.energy": -2.0}


def test_bad_dataset_names(nacl: Structure) -> None:
    with pytest.raises(ConfigError, match="'a:b'"):
        merge_datasets({"a:b": _records("a", [nacl])})


@pytest.mark.shared_data
def test_real_pools_merge(
    shared_datasets: Path, read_jarvis_json: Callable[..., list[Record]]
) -> None:
    ph = read_jarvis_json(shared_datasets / "ph" / "pool.json.gz", 400)
    dc = read_jarvis_json(shared_datasets / "dc" / "pool.json.gz", 400)
    merged, report = merge_datasets({"ph": ph, "dc": dc})
    shared = report.overlaps[("ph", "dc")]
    assert shared > 0
    assert report.merged_total == len(ph) + len(dc) - shared
    assert sum(len(r.targets) == 2 for r in merged) == shared
