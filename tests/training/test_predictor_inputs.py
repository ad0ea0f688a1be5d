"""``Predictor.predict`` holds in-memory structures to the checks of records read from files."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from builders import TINY_MODEL
from pymatgen.core import Lattice, Structure

from matxfer.data.transforms import TargetTransform
from matxfer.errors import DataError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import load_predictor, save_model
from matxfer.training.predictor import Predictor

NACL = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A predictor of a tiny untrained model (its outputs do not matter here)."""
    path = tmp_path_factory.mktemp("model") / "model.ckpt"
    transform = TargetTransform().fit(np.array([0.0, 1.0, 2.0]))
    save_model(path, ALIGNN(**TINY_MODEL), transform, GraphConfig(), ["target"])
    return load_predictor(path, device="cpu")


def test_invalid_structures_are_named_by_index_and_id(predictor: Predictor) -> None:
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.01, 0, 0]])
    vacuum = Structure(Lattice.cubic(40.0), ["Na"], [[0, 0, 0]])
    molecule = Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])
    items = [NACL, overlapping, vacuum, molecule, "POSCAR"]
    with pytest.raises(DataError, match="4 of 5 structures are invalid") as caught:
        predictor.predict(items, ids=["ok", "close", "empty", "h2", "text"])
    problems = caught.value.problems
    assert [(p.index, p.record_id) for p in problems] == [
        (1, "close"),
        (2, "empty"),
        (3, "h2"),
        (4, "text"),
    ]
    assert "0.04 Å apart" in problems[0].reason
    assert "neighbours within 30.0 Å" in problems[1].reason
    assert "periodic 3-D cell" in problems[2].reason
    assert "got str" in problems[3].reason
    assert str(problems[0]).startswith("structures: record 1 (id close)")
    with pytest.raises(DataError) as caught:
        predictor.predict([overlapping])
    assert caught.value.problems[0].index == 0


def test_valid_structures_still_predict(predictor: Predictor) -> None:
    out = predictor.predict([NACL, NACL.copy()], ids=["a", "b"])
    assert out.shape == (2, 1) and np.isfinite(out).all()
    with pytest.raises(DataError, match="2 structures but 1 ids"):
        predictor.predict([NACL, NACL], ids=["a"])
    assert predictor.predict(NACL).shape == (1, 1)
