"""Each reader on tiny files written here, format detection and in-memory records."""

from __future__ import annotations

import bz2
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.io import write as ase_write
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

from matxfer.data import detect_format, read_dataset, records_from_structures
from matxfer.errors import DataError


def matbench_table(structures: list[Structure], values: list[float], **columns: list) -> dict:
    names = ["structure", "e_form", *columns]
    rows = [[s.as_dict(), v, *(c[i] for c in columns.values())] for i, (s, v) in
            enumerate(zip(structures, values, strict=True))]  # fmt: skip
    return {"index": [f"mb-{i}" for i in range(len(rows))], "columns": names, "data": rows}


def same_structure(a: Structure, b: Structure) -> bool:
    return [s.specie.symbol for s in a] == [s.specie.symbol for s in b] and np.allclose(
        a.distance_matrix, b.distance_matrix, atol=1e-6
    ) and np.isclose(a.volume, b.volume)  # fmt: skip


@pytest.mark.parametrize("name", ["data.json", "data.json.gz"])
def test_alignn_reader(tmp_path: Path, small_structures: list[Structure], name: str) -> None:
    entries = [alignn_entry(s, i, 0.1 * i, gap=1.0 + i) for i, s in enumerate(small_structures)]
    path = tmp_path / name
    text = json.dumps(entries).encode()
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    dataset = read_dataset(path)
    assert dataset.format == "alignn"
    assert dataset.ids == [str(i) for i in range(len(small_structures))]
    assert [r.targets for r in dataset] == [{"target": 0.1 * i} for i in range(12)]
    assert all(
        same_structure(r.structure, s) for r, s in zip(dataset, small_structures, strict=True)
    )
    assert [r.index for r in dataset] == list(range(12))
    by_key = read_dataset(path, target_key="gap")
    assert [r.target for r in by_key] == [1.0 + i for i in range(12)]


@pytest.mark.parametrize(
    ("name", "pack"),
    [
        ("plain-named.json.gz", lambda b: b),  # says gzip, is plain
        ("gzipped.json", gzip.compress),  # says plain, is gzip
        ("bzipped.json", bz2.compress),
        ("bom.json", lambda b: b"\xef\xbb\xbf" + b),
    ],
)
def test_compression_and_bom_are_sniffed(
    tmp_path: Path, rocksalt: Structure, name: str, pack
) -> None:
    path = tmp_path / name
    path.write_bytes(pack(json.dumps([alignn_entry(rocksalt, "x", 1.0)]).encode()))
    assert read_dataset(path).ids == ["x"]


def test_matbench_reader(tmp_path: Path, small_structures: list[Structure]) -> None:
    path = tmp_path / "matbench_x.json.gz"
    table = matbench_table(small_structures, [float(i) for i in range(12)])
    path.write_bytes(gzip.compress(json.dumps(table).encode()))
    dataset = read_dataset(path)
    assert dataset.format == "matbench"
    assert dataset.ids == [f"mb-{i}" for i in range(12)]
    assert [r.targets["target"] for r in dataset] == [float(i) for i in range(12)]
    assert all(
        same_structure(r.structure, s) for r, s in zip(dataset, small_structures, strict=True)
    )


def test_matbench_target_and_id_columns(tmp_path: Path, small_structures: list[Structure]) -> None:
    structures = small_structures[:3]
    table = matbench_table(
        structures, [1.0, 2.0, 3.0], material_id=["mp-1", "mp-2", "mp-3"], nsites=[1, 2, 3]
    )
    path = tmp_path / "piezo.json"
    path.write_text(json.dumps(table))
    with pytest.raises(DataError, match=r"several numeric columns .*e_form, nsites"):
        read_dataset(path)
    dataset = read_dataset(path, target_key="e_form")
    assert dataset.ids == ["mp-1", "mp-2", "mp-3"]
    assert [r.target for r in dataset] == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="no column 'gap'"):
        read_dataset(path, target_key="gap")


def test_matbench_broken_structures(tmp_path: Path, rocksalt: Structure) -> None:
    disordered = rocksalt.as_dict()
    disordered["sites"][0]["species"] = [{"element": "Na", "occu": 0.5}]
    no_lattice = rocksalt.as_dict()
    del no_lattice["lattice"]
    table = {
        "index": ["a", "b", "c", "d"],
        "columns": ["structure", "n"],
        "data": [[rocksalt.as_dict(), 1.0], [disordered, 2.0], [no_lattice, 3.0], ["Na Cl", 4.0]],
    }
    path = tmp_path / "mb.json"
    path.write_text(json.dumps(table))
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    reasons = {p.record_id: p.reason for p in caught.value.problems}
    assert "partial occupancy" in reasons["b"]
    assert "no lattice" in reasons["c"]
    assert "structure is str" in reasons["d"]


def test_idprop_reader(tmp_path: Path, small_structures: list[Structure]) -> None:
    lines = []
    for i, structure in enumerate(small_structures[:4]):
        name = f"POSCAR-{i}.vasp" if i % 2 else f"s{i}.cif"
        structure.to(filename=str(tmp_path / name))
        lines.append(f"{name},{i * 0.5}")
    (tmp_path / "id_prop.csv").write_text(
        "\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n"
    )
    assert detect_format(tmp_path) == "idprop"
    dataset = read_dataset(tmp_path)
    assert dataset.ids == ["s0.cif", "POSCAR-1.vasp", "s2.cif", "POSCAR-3.vasp"]
    assert [r.target for r in dataset] == [0.0, 0.5, 1.0, 1.5]
    for record, structure in zip(dataset, small_structures, strict=False):
        assert record.structure.matches(
            structure, primitive_cell=False, scale=False
        )  # CIF reorders
    assert read_dataset(tmp_path / "id_prop.csv").ids == dataset.ids


def test_idprop_header_and_several_targets(tmp_path: Path, rocksalt: Structure) -> None:
    rocksalt.to(filename=str(tmp_path / "a.vasp"))
    rocksalt.to(filename=str(tmp_path / "b.vasp"))
    (tmp_path / "id_prop.csv").write_text("file,e_form,gap\na.vasp,1.0,2.0\nb.vasp,,3.0\n")
    dataset = read_dataset(tmp_path)
    assert [r.targets for r in dataset] == [{"e_form": 1.0, "gap": 2.0}, {"gap": 3.0}]
    assert [r.targets for r in read_dataset(tmp_path, target_key="gap")] == [
        {"target": 2.0},
        {"target": 3.0},
    ]
    (tmp_path / "id_prop.csv").write_text("a.vasp,1.0,2.0\n")
    assert read_dataset(tmp_path).records[0].targets == {"target": 1.0, "target_2": 2.0}


def test_idprop_problems(tmp_path: Path, rocksalt: Structure) -> None:
    rocksalt.to(filename=str(tmp_path / "a.vasp"))
    poscar = (tmp_path / "a.vasp").read_text().splitlines()
    poscar[6] = "1"  # atom counts no longer match the coordinates
    (tmp_path / "counts.vasp").write_text("\n".join(poscar))
    poscar[6] = "4 5"  # one atom more than coordinate lines
    (tmp_path / "more.vasp").write_text("\n".join(poscar))
    (tmp_path / "bad.cif").write_text("data_x\n_cell_length_a 4\nloop_\n_atom\n")
    (tmp_path / "id_prop.csv").write_text(
        "a.vasp,1.0\nmissing.vasp,2\nbad.cif,3\ncounts.vasp,4\na.vasp,\na.vasp,abc\n"
        "a.vasp,1,2\n../a.vasp,1\nmore.vasp,1\n"
    )
    with pytest.raises(DataError) as caught:
        read_dataset(tmp_path)
    reasons = [p.reason for p in caught.value.problems]
    assert [p.index for p in caught.value.problems] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "'missing.vasp' not found" in reasons[0]
    assert "cannot read structure file 'bad.cif'" in reasons[1]
    assert "2 element symbols but 1 atom counts" in reasons[2]
    assert "line 5: target value missing" in reasons[3]
    assert "not a number: 'abc'" in reasons[4]
    assert "line 7 has 3 columns" in reasons[5]
    assert "lies outside" in reasons[6]
    assert "counts give 9 atoms but fewer coordinate lines" in reasons[7]


def test_extxyz_reader(tmp_path: Path) -> None:
    crystal = Atoms("NaCl", positions=[[0, 0, 0], [2, 2, 2]], cell=[4, 4, 4], pbc=True)
    crystal.info.update(gap=1.5, id="nacl")
    slab = crystal.copy()
    slab.pbc = [True, True, False]
    slab.info = {"gap": 2.5}
    molecule = Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    molecule.info["gap"] = 6.0
    unlabelled = crystal.copy()
    unlabelled.info = {"energy_x": 1.0}
    path = tmp_path / "frames.extxyz"
    ase_write(str(path), [crystal, slab, molecule, unlabelled], format="extxyz")
    with pytest.raises(DataError, match="target_key"):
        read_dataset(path)
    with pytest.raises(DataError) as caught:
        read_dataset(path, target_key="gap")
    problems = caught.value.problems
    assert [(p.index, p.record_id) for p in problems] == [(2, "frames-2"), (3, "frames-3")]
    assert "not a periodic crystal" in problems[0].reason
    assert "no info field 'gap'" in problems[1].reason
    dataset = read_dataset(path, target_key="gap", skip_invalid=True)
    assert dataset.ids == ["nacl", "frames-1"]
    assert [r.target for r in dataset] == [1.5, 2.5]
    assert dataset.records[0].structure.get_distance(0, 1) == pytest.approx(2 * np.sqrt(3))


def _frame(n_declared: int, info: str, lattice: bool = True, atoms: int | None = None) -> str:
    """An extended XYZ frame of rock salt with ``info`` on its comment line."""
    lines = ["Na 0.0 0.0 0.0", "Cl 2.0 2.0 2.0"][: 2 if atoms is None else atoms]
    cell = 'Lattice="4 0 0 0 4 0 0 0 4" pbc="T T T" ' if lattice else ""
    header = f"{cell}Properties=species:S:1:pos:R:3 {info}"
    return "\n".join([str(n_declared), header, *lines]) + "\n"


def test_extxyz_target_defaults_like_json(tmp_path: Path) -> None:
    path = tmp_path / "frames.extxyz"
    path.write_text(_frame(2, "target=1.5 id=a") + _frame(2, "target=-2 gap=3.0 id=b"))
    dataset = read_dataset(path)
    assert dataset.ids == ["a", "b"]
    assert [r.target for r in dataset] == [1.5, -2.0]
    # Without "target" everywhere: the single numeric per-frame field (here ASE's energy).
    path.write_text(_frame(2, "energy=-3.5 id=a") + _frame(2, "energy=-4.5 jid=7"))
    assert [r.target for r in read_dataset(path)] == [-3.5, -4.5]
    path.write_text(_frame(2, "gap=1.0 bulk=2.0") + _frame(2, "gap=1.5 bulk=2.5"))
    with pytest.raises(DataError, match=r"numeric info fields: bulk \(2 of 2 frames\), gap"):
        read_dataset(path)
    assert [r.target for r in read_dataset(path, target_key="bulk")] == [2.0, 2.5]


def test_extxyz_malformed_frames_are_named(tmp_path: Path) -> None:
    path = tmp_path / "frames.extxyz.gz"
    frames = [
        _frame(2, "target=1.0 id=good"),
        _frame(3, "target=1.0 id=short"),  # declares 3 atoms, 2 lines follow
        _frame(2, "target=1.0 id=molecule", lattice=False),
        _frame(2, "target=abc id=text"),
        _frame(2, "target=2.0"),
        _frame(1, "target=1.0 id=long"),  # declares 1 atom, 2 lines follow
        _frame(2, "target=3.0 id=last"),
    ]
    path.write_bytes(gzip.compress("".join(frames).encode()))
    with pytest.raises(DataError) as caught:
        read_dataset(path)
    problems = caught.value.problems
    assert [(p.index, p.record_id) for p in problems] == [
        (1, "short"),
        (2, "molecule"),
        (3, "text"),
        (5, "long"),
    ]
    assert "line 5: the frame declares 3 atoms but 2 atom lines follow" in problems[0].reason
    assert "not a periodic crystal" in problems[1].reason
    assert "target 'target' is a string ('abc')" in problems[2].reason
    assert "more atom lines follow than the frame's count line (line 21)" in problems[3].reason
    dataset = read_dataset(path, skip_invalid=True)
    assert dataset.ids == ["good", "frames-4", "last"]
    path.write_bytes(gzip.compress(_frame(2, "target=1.0 id=cut").encode()[:-20]))
    with pytest.raises(DataError, match="no frame parses") as caught:
        read_dataset(path)
    (problem,) = caught.value.problems
    assert (problem.index, problem.record_id) == (0, "cut")
    assert "declares 2 atoms but 1 atom lines follow (the file ends: truncated?)" in problem.reason


def test_extxyz_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "broken.xyz"
    path.write_text("3\ncomment\nNa 0 0\n")
    with pytest.raises(DataError, match="cannot be read as extended XYZ"):
        read_dataset(path, target_key="gap")
    path.write_text("\u00b2\ncomment\nNa 0 0 0\n", encoding="utf-8")  # isdigit(), not int()
    with pytest.raises(DataError, match="line 1 should be an atom count, found '\u00b2'"):
        read_dataset(path)


def test_explicit_format(tmp_path: Path, rocksalt: Structure) -> None:
    path = tmp_path / "data.txt"
    path.write_text(json.dumps([alignn_entry(rocksalt, 1, 1.0)]))
    assert read_dataset(path, format="alignn").format == "alignn"
    with pytest.raises(DataError, match="read it with format 'alignn'"):
        read_dataset(path, format="matbench")
    with pytest.raises(DataError, match="unknown format 'cif'; choose one of alignn, idprop"):
        read_dataset(path, format="cif")


def test_records_from_structures(rocksalt: Structure, small_structures: list[Structure]) -> None:
    ase_atoms = Atoms("NaCl", positions=[[0, 0, 0], [2, 2, 2]], cell=[4, 4, 4], pbc=True)
    records = records_from_structures([rocksalt, ase_atoms], [1.0, 2.0], ids=["a", "b"], name="gap")
    assert [(r.id, r.targets) for r in records] == [("a", {"gap": 1.0}), ("b", {"gap": 2.0})]
    assert same_structure(records[0].structure, rocksalt)
    assert records[1].structure.get_distance(0, 1) == pytest.approx(2 * np.sqrt(3))
    defaults = records_from_structures(small_structures, list(range(12)))
    assert [r.id for r in defaults] == [str(i) for i in range(12)]
    with pytest.raises(DataError, match="2 structures but 1 targets"):
        records_from_structures([rocksalt, rocksalt], [1.0])
    overlapping = Structure(Lattice.cubic(4), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    with pytest.raises(DataError) as caught:
        records_from_structures([rocksalt, overlapping], [1.0, float("nan")], ids=["ok", "bad"])
    assert [(p.index, p.record_id) for p in caught.value.problems] == [(1, "bad")]


def test_dataset_summary(tmp_path: Path, small_structures: list[Structure]) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps([alignn_entry(s, i, float(i)) for i, s in enumerate(small_structures)])
    )
    dataset = read_dataset(path)
    summary = dataset.summary()
    sizes = [len(s) for s in small_structures]
    assert summary.n_records == 12
    assert (summary.atoms_min, summary.atoms_max) == (min(sizes), max(sizes))
    assert summary.atoms_mean == pytest.approx(np.mean(sizes))
    stats = summary.targets["target"]
    assert (stats.count, stats.min, stats.max, stats.mean) == (12, 0.0, 11.0, 5.5)
    symbols = {str(e) for s in small_structures for e in s.composition.elements}
    assert set(summary.elements) == symbols
    assert summary.elements.index("Li") < summary.elements.index("Fe")  # by atomic number
    assert "12 records" in repr(dataset)
