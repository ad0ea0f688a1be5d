"""Fixtures of the uncertainty tests: a tiny dataset in the study layout and runs on it.

The runs hold lean, untrained checkpoints (the calibration's bookkeeping does not care
how the weights came about) plus the ``config.yaml`` and ``run_info.json`` that
``train`` writes, so their records can be re-derived exactly as for a real run.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from builders import TINY_MODEL, alignn_entry
from pymatgen.core import Lattice, Structure
from uq_helpers import POOL, TEST, MakeRun

from matxfer.data.transforms import TargetTransform
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import TrainConfig, save_model
from matxfer.training.inputs import DataSpec, prepare_splits
from matxfer.training.outputs import data_hash
from matxfer.training.rundir import write_config, write_run_info


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the tests' graph and calibration caches out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


def _structure(i: int) -> Structure:
    pairs = [("Na", "Cl"), ("Mg", "O"), ("Li", "F"), ("K", "Br"), ("Ca", "S")]
    return Structure(Lattice.cubic(3.5 + 0.02 * i), list(pairs[i % 5]), [[0, 0, 0], [0.5] * 3])


def _write(path: Path, ids: range) -> None:
    entries = [alignn_entry(_structure(i), jid=i, target=0.01 * i) for i in ids]
    with gzip.open(path, "wt") as handle:
        json.dump(entries, handle)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study-layout folder: a 60-record pool, a 12-record test set and trials of 20
    and 50 records (trials 1, 2)."""
    folder = tmp_path_factory.mktemp("data") / "tiny"
    folder.mkdir()
    _write(folder / "pool.json.gz", range(POOL))
    _write(folder / "test.json.gz", range(POOL, POOL + TEST))
    trials = {
        "1": {"20": list(range(0, 20)), "50": list(range(0, 50))},
        "2": {"20": list(range(10, 30)), "50": list(range(10, 60))},
    }
    (folder / "trials.json").write_text(json.dumps(trials))
    return folder


@pytest.fixture(scope="session")
def make_run() -> MakeRun:
    """``make_run(run_dir, spec, seed=0, weights=None, **config)``: a run directory as
    ``train`` leaves it (config, run info with data spec and split hashes, ``best.ckpt``);
    ``weights`` seeds the weights (default: ``seed``, which also seeds the split)."""

    def make(
        run_dir: Path, spec: DataSpec, seed: int = 0, weights: int | None = None, **config: object
    ) -> Path:
        settings = TrainConfig(seed=seed, **config)
        splits = prepare_splits(spec, settings)
        run_dir.mkdir(parents=True)
        write_config(run_dir, settings)
        hashes = {part: data_hash(records) for part, records in splits.parts().items()}
        write_run_info(run_dir, {"data_spec": spec.to_dict(), "split_hashes": hashes})
        init = seed if weights is None else weights
        torch.manual_seed(init)
        transform = TargetTransform("standardize", 1).fit(torch.rand(20, 1) * (init + 1))
        model = ALIGNN(num_outputs=1, **TINY_MODEL)
        save_model(run_dir / "best.ckpt", model, transform, GraphConfig(), splits.target_names)
        (run_dir / "done.json").write_text("{}")
        return run_dir

    return make
