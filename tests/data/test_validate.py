"""Every validation reason, each from a broken record in an otherwise valid ALIGNN file."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.data import ValidationConfig, read_dataset, validate_records
from matxfer.data.records import Record
from matxfer.data.validate import (
    InvalidRecordError,
    _reduced,
    as_element,
    check_min_distance,
    check_neighbors,
)
from matxfer.errors import DataError
from matxfer.graphs.config import GraphConfig

NACL = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def atoms(**fields: object) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        for key, value in fields.items():
            if value is ...:
                del record["atoms"][key]
            else:
                record["atoms"][key] = value

    return edit


def top(**fields: object) -> Callable[[dict], None]:
    def edit(record: dict) -> None:
        for key, value in fields.items():
            if value is ...:
                del record[key]
            else:
                record[key] = value

    return edit


# (case, edit of record 1, expected words of the reason)
BROKEN = [
    ("target NaN", top(target=math.nan), "is NaN"),
    ("target inf", top(target=math.inf), "infinite"),
    ("target string", top(target="1.0"), "is a string"),
    ("target null", top(target=None), "is null"),
    ("target bool", top(target=True), "boolean"),
    ("target list", top(target=[1.0, 2.0]), "not a single number"),
    ("target missing", top(target=...), "no target field 'target'"),
    ("id null", top(jid=None), "id is null"),
    ("id missing", top(jid=...), "no 'jid' or 'id' field"),
    ("id object", top(jid={"a": 1}), "id must be a string or an integer"),
    ("atoms missing", top(atoms=...), "no 'atoms' field"),
    ("atoms list", top(atoms=[1, 2]), "atoms is a list"),
    ("lattice missing", atoms(lattice_mat=...), "no 'lattice_mat'"),
    ("lattice 2x3", atoms(lattice_mat=[[4, 0, 0], [0, 4, 0]]), "must be 3x3"),
    ("lattice 3x2", atoms(lattice_mat=[[4, 0], [0, 4], [0, 0]]), "must be 3x3"),
    ("lattice strings", atoms(lattice_mat=[["4", 0, 0], [0, 4, 0], [0, 0, 4]]), "a string '4'"),
    ("lattice null", atoms(lattice_mat=None), "lattice_mat must be a list"),
    ("lattice NaN", atoms(lattice_mat=[[math.nan, 0, 0], [0, 4, 0], [0, 0, 4]]), "NaN or infinite"),
    (
        "zero vector",
        atoms(lattice_mat=[[0, 0, 0], [0, 4, 0], [0, 0, 4]]),
        "vector a has zero length",
    ),
    ("coplanar", atoms(lattice_mat=[[4, 0, 0], [0, 4, 0], [4, 4, 0]]), "singular"),
    ("tiny volume", atoms(lattice_mat=[[4, 0, 0], [0, 4, 0], [0, 0.001, 0.004]]), "below 0.1"),
    ("huge lattice", atoms(lattice_mat=[[4e5, 0, 0], [0, 4, 0], [0, 0, 4]]), "wrong units?"),
    ("coords far away", atoms(coords=[[0, 0, 0], [1e7, 0, 0]]), "million cells outside"),
    ("coords dict", atoms(coords={"a": [0, 0, 0]}), "coords must be a list"),
    ("coords short", atoms(coords=[[0, 0, 0]]), "1 coordinate rows for 2 elements"),
    ("coords 2 columns", atoms(coords=[[0, 0], [0.5, 0.5]]), "rows of 3 numbers"),
    ("coords flat", atoms(coords=[0, 0, 0, 0.5, 0.5, 0.5]), "must be a list of 3 numbers"),
    ("coords NaN", atoms(coords=[[0, 0, 0], [math.nan, 0, 0]]), "NaN or infinite"),
    ("coords bool", atoms(coords=[[0, 0, 0], [True, 0.5, 0.5]]), "boolean"),
    ("cartesian string", atoms(cartesian="yes"), "cartesian must be true or false"),
    ("lowercase element", atoms(elements=["na", "Cl"]), "unknown element 'na'"),
    ("dummy element", atoms(elements=["X", "Cl"]), "unknown element 'X'"),
    ("isotope", atoms(elements=["D", "Cl"]), "isotope symbol 'D'"),
    ("empty symbol", atoms(elements=["", "Cl"]), "unknown element ''"),
    ("numeric element", atoms(elements=[11, "Cl"]), "not a symbol"),
    ("no features", atoms(elements=["Rf", "Cl"]), "Z=104"),
    ("elements string", atoms(elements="NaCl"), "elements must be a list"),
    ("no atoms", atoms(elements=[], coords=[]), "structure has no atoms"),
    ("close atoms", atoms(coords=[[0, 0, 0], [0.01, 0, 0]]), "atoms 0 and 1 are 0.04 Å apart"),
    ("close after wrap", atoms(coords=[[0, 0, 0], [0.99, 0, 0]]), "0.04 Å apart"),
    (
        "self image",
        atoms(lattice_mat=[[0.3, 0, 0], [0, 4, 0], [0, 0, 4]], elements=["Na"], coords=[[0, 0, 0]]),
        "own periodic image",
    ),
    (
        "vacuum",
        atoms(
            lattice_mat=[[40, 0, 0], [0, 40, 0], [0, 0, 40]], elements=["Na"], coords=[[0, 0, 0]]
        ),
        "only 0 neighbours within 30.0 Å",
    ),
]


@pytest.mark.parametrize(("case", "edit", "reason"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_record_is_one_named_problem(
    tmp_path: Path, case: str, edit: Callable[[dict], None], reason: str
) -> None:
    good, bad = alignn_entry(NACL, jid=7), alignn_entry(NACL, jid=8)
    edit(bad)
    path = tmp_path / "data.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    problems = caught.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.source == str(path)
    assert problem.index == 1
    assert reason in problem.reason
    line = str(problem)
    assert line.startswith(f"{path}: record 1")
    if problem.record_id is not None:
        assert "(id 8)" in line
    # skip_invalid keeps the good record and reports the bad one
    dataset = read_dataset(path, skip_invalid=True)
    assert dataset.ids == ["7"]
    assert dataset.skipped == problems


VALID_VARIANTS = [
    ("cartesian missing", atoms(cartesian=...)),
    ("cartesian coords", atoms(cartesian=True, coords=[[0, 0, 0], [2, 2, 2]])),
    ("left-handed lattice", atoms(lattice_mat=[[4, 0, 0], [0, 4, 0], [0, 0, -4]])),
    ("coords outside the cell", atoms(coords=[[1.0, -1.0, 2.0], [0.5, 0.5, 1.5]])),
    ("negative target", top(target=-1e6)),
    ("integer target", top(target=3)),
    ("string id", top(jid="JVASP-1")),
    ("id key", lambda r: r.update({"id": r.pop("jid")})),
]


@pytest.mark.parametrize(("case", "edit"), VALID_VARIANTS, ids=[c[0] for c in VALID_VARIANTS])
def test_unusual_but_valid_records_read(tmp_path: Path, case: str, edit: Callable) -> None:
    record = alignn_entry(NACL, jid=1)
    edit(record)
    path = tmp_path / "ok.json"
    path.write_text(json.dumps([record]))
    (read,) = read_dataset(path).records
    assert len(read.structure) == 2
    # wrapped into the cell, and the Na-Cl distance is that of the input
    assert ((read.structure.frac_coords >= 0) & (read.structure.frac_coords < 1)).all()
    assert read.structure.get_distance(0, 1) == pytest.approx(np.sqrt(3) * 2, abs=1e-6)


def test_nan_literal_in_json_is_rejected(tmp_path: Path) -> None:
    text = json.dumps([alignn_entry(NACL)]).replace('"target": 0.5', '"target": NaN')
    path = tmp_path / "nan.json"
    path.write_text(text)
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert "is NaN" in caught.value.problems[0].reason


def test_duplicate_ids(tmp_path: Path) -> None:
    path = tmp_path / "dup.json"
    path.write_text(
        json.dumps([alignn_entry(NACL, 1), alignn_entry(NACL, 1), alignn_entry(NACL, 2)])
    )
    dataset = read_dataset(path)
    assert dataset.ids == ["1", "2"]
    assert dataset.duplicates_dropped == 1
    path.write_text(
        json.dumps(
            [alignn_entry(NACL, 1), alignn_entry(NACL, 1, target=0.7), alignn_entry(NACL, 2)]
        )
    )
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    assert [p.index for p in caught.value.problems] == [0, 1]
    assert all("used by records 0, 1" in p.reason for p in caught.value.problems)
    assert read_dataset(path, skip_invalid=True).ids == ["2"]


def test_all_problems_are_listed(tmp_path: Path) -> None:
    records = [alignn_entry(NACL, jid=i, target=math.nan if i % 2 else 1.0) for i in range(10)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match="5 of 10 records are invalid") as caught:
        read_dataset(path)
    assert [p.index for p in caught.value.problems] == [1, 3, 5, 7, 9]


def test_validate_records_on_memory_records(rocksalt: Structure) -> None:
    disordered = rocksalt.copy()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    records = [
        Record("a", rocksalt, {"target": 1.0}),
        Record("b", rocksalt, {"target": math.nan}, index=1),
        Record("c", disordered, {"target": 1.0}, index=2),
        Record("d", rocksalt, {}, index=3),
    ]
    problems = validate_records(records)
    assert [(p.record_id, p.index) for p in problems] == [("b", 1), ("c", 2), ("d", 3)]
    assert "disordered" in problems[1].reason
    assert "no target values" in problems[2].reason


def test_thresholds_are_configurable() -> None:
    lattice = np.eye(3) * 4.0
    cart = np.array([[0.0, 0, 0], [0.8, 0, 0]])
    check_min_distance(lattice, cart, ValidationConfig())
    with pytest.raises(InvalidRecordError, match=r"0\.8 Å apart"):
        check_min_distance(lattice, cart, ValidationConfig(min_distance=1.0))
    box = np.eye(3) * 20.0
    check_neighbors(box, cart, ValidationConfig(neighbor_cutoff=30.0, min_neighbors=1))
    with pytest.raises(InvalidRecordError, match=r"only 1 neighbours within 10\.0"):
        check_neighbors(box, cart, ValidationConfig(neighbor_cutoff=10.0, min_neighbors=2))
    assert ValidationConfig.for_graphs(
        GraphConfig(max_cutoff=20.0, max_neighbors=6)
    ) == ValidationConfig(neighbor_cutoff=20.0, min_neighbors=6)
    # The defaults are the graph defaults, not numbers of their own.
    assert ValidationConfig() == ValidationConfig.for_graphs(GraphConfig())


def test_skewed_cell_does_not_explode() -> None:
    # A valid but very skewed basis of a 4 Å cubic lattice: the check must reduce it.
    lattice = np.array([[4.0, 0, 0], [400.0, 4, 0], [0, 400.0, 4]])
    reduced = _reduced(lattice)
    assert np.linalg.norm(reduced, axis=1) == pytest.approx([4.0, 4.0, 4.0])
    assert abs(np.linalg.det(reduced)) == pytest.approx(64.0)
    one_atom = np.zeros((1, 3))
    assert check_min_distance(lattice, one_atom, ValidationConfig()) is None
    assert check_neighbors(lattice, one_atom, ValidationConfig()) is None
    # The reduced cell is searched correctly: a second atom 0.3 Å away is found.
    close = np.array([[0.0, 0, 0], [0.3, 0, 0]])
    with pytest.raises(InvalidRecordError, match=r"atoms 0 and 1 are 0\.3 Å apart"):
        check_min_distance(lattice, close, ValidationConfig())


@pytest.mark.parametrize("symbol", ["Fe", "H", "Fm"])
def test_supported_elements(symbol: str) -> None:
    assert as_element(symbol) == symbol


def test_neighbor_bound_needs_no_pairwise_array() -> None:
    import tracemalloc

    from matxfer.data.validate import _neighbor_counts, _neighbor_lower_bound

    rng = np.random.default_rng(0)
    lattice = np.eye(3) * 60.0  # every edge over 30 Å: the bound needs a diameter
    cart = rng.uniform(0, 60.0, size=(3000, 3))
    tracemalloc.start()
    try:
        _neighbor_lower_bound(lattice, cart, 30.0, 12)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5e6  # an N x N x 3 float array would take 216 MB
    # Still a lower bound: compact clusters in a big box, checked against a real search.
    for scale in (3.0, 8.0):
        small = rng.uniform(0, scale, size=(40, 3))
        bound = _neighbor_lower_bound(np.eye(3) * 35.0, small, 30.0, 10**6)
        assert 0 < bound <= _neighbor_counts(np.eye(3) * 35.0, small, 30.0).min()


def test_atom_count_limit_is_named_and_configurable() -> None:
    big = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big.make_supercell([3, 3, 3])  # 54 atoms
    records = [Record("big", big, {"target": 1.0}, "mem.json", 0)]
    (problem,) = validate_records(records, ValidationConfig(max_atoms=50))
    assert problem.record_id == "big"
    assert "54 atoms, over the limit of 50 (max_atoms" in problem.reason
    assert validate_records(records, ValidationConfig(max_atoms=54)) == []
    assert ValidationConfig().max_atoms == 5000
