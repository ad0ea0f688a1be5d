"""Fixtures of the training tests: a private graph cache and a tiny labelled dataset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from training_helpers import synthetic_structures, tiny_config, write_alignn_json

from matxfer.training import TrainResult, save_config, train


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep graph caches of tests (and their subprocesses) out of the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 labelled synthetic crystals in one ALIGNN JSON file."""
    return write_alignn_json(
        tmp_path_factory.mktemp("data") / "tiny.json", synthetic_structures(36)
    )


@pytest.fixture(scope="session")
def tiny_config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny config (3 epochs) as YAML, for command-line and subprocess runs."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    save_config(tiny_config(), path)
    return path


@pytest.fixture(scope="session")
def trained_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One finished 3-epoch run on :func:`tiny_data`, shared by read-only tests."""
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(tiny_data, out, config=tiny_config(), progress=False)
