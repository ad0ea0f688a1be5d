"""A few dozen mutations of a tiny dataset (the quick form of ``scripts/fuzz_inputs.py``)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest
from builders import alignn_entry
from pymatgen.core import Lattice, Structure

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_inputs.py"


@pytest.fixture(scope="module")
def fuzz() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def seeds(fuzz: ModuleType) -> list:
    nacl = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure(Lattice.cubic(5.43), ["Si", "Si"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    records = [alignn_entry(nacl, 1, 1.5), alignn_entry(si, "JVASP-2", -0.25)]
    return fuzz.seeds_of(records, "tiny")


def test_every_mutant_reads_or_fails_cleanly(fuzz: ModuleType, seeds: list, tmp_path: Path) -> None:
    tally = fuzz.Tally()
    mutants = fuzz.mutations(seeds, random.Random(0), flips=30, edits=15, cuts=6)
    fuzz.run(mutants, tmp_path, tally)
    assert sum(tally.outcomes.values()) == 51
    assert tally.flips == 30
    assert tally.failures == []
    outcomes = {outcome for _, outcome in tally.outcomes}
    assert outcomes == {"read", "refused"}  # the mutants are neither all fine nor all broken


def test_unmutated_seeds_read(fuzz: ModuleType, seeds: list, tmp_path: Path) -> None:
    for seed in seeds:
        path = tmp_path / seed.name
        path.write_bytes(seed.text)
        assert fuzz.check(path) == ("read", ""), seed.name


def test_a_masked_exception_counts_as_a_failure(
    fuzz: ModuleType, seeds: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matxfer.data.formats.json_tables as json_tables

    def broken(*args: object) -> None:
        raise TypeError("a check nobody wrote")

    monkeypatch.setattr(json_tables, "build_record", broken)
    path = tmp_path / seeds[0].name
    path.write_bytes(seeds[0].text)
    outcome, detail = fuzz.check(path)
    assert outcome == "failure"
    assert "TypeError: a check nobody wrote" in detail
