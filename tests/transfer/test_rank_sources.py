"""Ranking pre-training sources: embeddings of tiny models, the API and ``rank-sources``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import TINY_MODEL
from typer.testing import CliRunner

from matxfer.cli import app
from matxfer.data.transforms import TargetTransform
from matxfer.errors import MatxferError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training.checkpoint import load_model, save_model
from matxfer.training.inputs import DataSpec, graphs_of
from matxfer.training.loaders import graph_loader
from matxfer.transfer.foundation import FOUNDATION_SOURCES, FoundationSource
from matxfer.transfer.ranking import embed_records, rank_sources, target_records

#: The shipped demo phonon data: its trial 1 at size 100 (no --data-dir needed).
DEMO = DataSpec("demo-ph", trial=1, size=100)


@pytest.fixture(autouse=True)
def _private_graph_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("MATXFER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny untrained models: a run directory (``best.ckpt``) and a bare checkpoint."""
    folder = tmp_path_factory.mktemp("candidates")
    paths = []
    for seed, path in ((0, folder / "run-a" / "best.ckpt"), (1, folder / "b.ckpt")):
        torch.manual_seed(seed)
        model = ALIGNN(**TINY_MODEL, norm="layer")
        transform = TargetTransform("standardize", 1).fit(torch.randn(8, 1))
        save_model(path, model, transform, GraphConfig(), ["pt"])
        paths.append(path)
    return [paths[0].parent, paths[1]]


def test_target_records_are_the_fine_tuning_training_and_validation_records() -> None:
    records, labels, source, names = target_records(DEMO)
    assert len(records) == 100 and labels.shape == (100, 1) and np.isfinite(labels).all()
    assert "trial 1, size 100" in source and names == ["target"]


def test_embeddings_are_the_pooled_features_before_the_head(candidates: list[Path]) -> None:
    records, *_ = target_records(DEMO)
    records = records[:10]
    loaded = load_model(candidates[0])
    features = embed_records(loaded, records, torch.device("cpu"), batch_size=4)
    graphs = graphs_of([r.structure for r in records], loaded.graph_config)
    with torch.no_grad():
        expected = loaded.model.embed(next(iter(graph_loader(graphs, 10)))).double().numpy()
    assert features.shape == (10, TINY_MODEL["hidden_features"])
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)

    class HeadOnly(torch.nn.Module):  # no embed(): the head's input is read by a hook
        def __init__(self, model: ALIGNN) -> None:
            super().__init__()
            self.inner, self.head = model, model.head

        def forward(self, batch: object) -> torch.Tensor:
            return self.head(self.inner.embed(batch))

    loaded.model = HeadOnly(loaded.model)
    hooked = embed_records(loaded, records, torch.device("cpu"), batch_size=4)
    np.testing.assert_allclose(hooked, features, rtol=1e-6)
    loaded.model = torch.nn.Linear(2, 2)
    with pytest.raises(MatxferError, match="neither embed"):
        embed_records(loaded, records, torch.device("cpu"))


def test_rank_sources_scores_and_ranks_every_candidate(candidates: list[Path]) -> None:
    seen = []
    ranking = rank_sources(DEMO, candidates, device="cpu", on_source=seen.append)
    assert [s.source for s in seen] == [str(c) for c in candidates]
    assert ranking.n == 100 and ranking.target_names == ["target"]
    logmes = [s.logme for s in ranking.scores]
    assert logmes == sorted(logmes, reverse=True) and [s.rank for s in ranking.scores] == [1, 2]
    for score in ranking.scores:
        assert score.features == TINY_MODEL["hidden_features"] and score.pt_targets == ["pt"]
        assert score.checkpoint.endswith(".ckpt") and score.seconds > 0
        assert np.isfinite([score.logme, score.ridge_r2, score.knn_r2]).all()
    again = rank_sources(DEMO, candidates[::-1], device="cpu")
    assert [s.logme for s in again.scores] == logmes  # order of --from does not matter


def test_a_foundation_model_is_a_candidate_by_name(
    candidates: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--from NAME`` of :mod:`matxfer.transfer.foundation` loads through its source
    (a stand-in here: CHGNet itself is exercised in test_foundation.py)."""
    loads = []

    def load(num_outputs: int, seed: int | None) -> object:
        loads.append((num_outputs, seed))
        return load_model(candidates[1])

    fake = FoundationSource("fakefm", "a stand-in", "none", ("energy",), load)
    monkeypatch.setitem(FOUNDATION_SOURCES, "fakefm", fake)
    ranking = rank_sources(DEMO, ["fakefm", candidates[1]], seed=3, device="cpu")
    by_source = {s.source: s for s in ranking.scores}
    assert loads == [(1, 3)]
    assert by_source["fakefm"].logme == by_source[str(candidates[1])].logme


def test_cli_table_and_json(candidates: list[Path]) -> None:
    runner = CliRunner()
    args = ["rank-sources", "demo-ph", "--size", "100", "--trial", "1", "--from"]
    table = runner.invoke(app, [*args, *map(str, candidates)])
    assert table.exit_code == 0, table.output
    assert "ranked by LogME" in table.output and "ridge R²" in table.output
    assert "run-a" in table.output and "b.ckpt" in table.output
    repeated = [*args, str(candidates[0]), "--from", str(candidates[1]), "--json"]
    printed = runner.invoke(app, repeated)
    assert printed.exit_code == 0, printed.output
    result = json.loads(printed.stdout)
    assert result["n"] == 100 and result["settings"] == {"folds": 5, "neighbors": 5, "seed": 0}
    assert [s["rank"] for s in result["sources"]] == [1, 2]
    assert {s["source"] for s in result["sources"]} == {str(c) for c in candidates}
    parts = ("graph_seconds", "embed_seconds", "score_seconds")
    assert all(s["seconds"] == pytest.approx(sum(s[p] for p in parts)) for s in result["sources"])
    assert result["cpu_seconds"] > 0


def test_cli_errors_name_what_is_wrong(candidates: list[Path], tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "no-such-run"
    unknown = runner.invoke(
        app, ["rank-sources", "demo-ph", "--from", str(candidates[1]), str(missing)]
    )
    assert unknown.exit_code != 0
    assert isinstance(unknown.exception, MatxferError) and str(missing) in str(unknown.exception)
    no_data = runner.invoke(
        app, ["rank-sources", str(tmp_path / "nothing.json"), "--from", str(candidates[1])]
    )
    assert no_data.exit_code != 0 and "nothing.json" in str(no_data.exception)
    few = ["rank-sources", "demo-ph", "--size", "10", "--trial", "1", "--folds", "8"]
    too_few = runner.invoke(app, [*few, "--from", str(candidates[1])])
    assert too_few.exit_code != 0 and "too few for 8-fold" in str(too_few.exception)
