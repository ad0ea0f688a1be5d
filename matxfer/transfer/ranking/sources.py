"""Rank pre-training sources for a target without fine-tuning them.

For each candidate pre-trained model, the target's training structures (the
records a fine-tuning run would learn from: training + validation split, never
the test set) go through the frozen model in eval mode; the pooled crystal
feature the output head reads (:meth:`matxfer.models.ALIGNN.embed`; for a model
without ``embed``, e.g. the foundation model ``chgnet``, the input of its head) is
the embedding. :mod:`~matxfer.transfer.ranking.scores` then scores how well those
embeddings predict the target: LogME (the ranking key), a ridge probe and a kNN
probe (out-of-fold R²). Each candidate's time (graphs, embedding, scores) is kept,
to weigh against the cost of fine-tuning every candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch_geometric.data import Data

from matxfer.data.records import Record
from matxfer.errors import MatxferError
from matxfer.training.checkpoint import LoadedModel, load_model, resolve_checkpoint
from matxfer.training.config import TrainConfig
from matxfer.training.inputs import DataSpec, model_inputs, prepare_splits
from matxfer.training.loaders import graph_loader
from matxfer.training.predictor import PREDICT_BATCH_SIZE, default_device, labels_of
from matxfer.transfer.foundation import foundation_source
from matxfer.transfer.ranking.scores import (
    FOLDS,
    NEIGHBORS,
    fold_ids,
    knn_cv_r2,
    logme,
    ridge_cv_r2,
)

#: The scores of a source, in table order; LogME ranks.
SCORE_NAMES = ("logme", "ridge_r2", "knn_r2")


def _embedding_function(model: nn.Module, source: str) -> Callable[[Any], torch.Tensor]:
    """``batch -> [B, F]``: the model's ``embed``, else whatever its ``head`` receives."""
    embed = getattr(model, "embed", None)
    if callable(embed):
        return embed
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise MatxferError(
            f"{source}: a {type(model).__name__} has neither embed() nor a head module, so "
            "its crystal embedding cannot be read; rank-sources needs an ALIGNN-like model"
        )

    def through_head(batch: Any) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
        try:
            model(batch)
        finally:
            hook.remove()
        return seen[-1]

    return through_head


def record_graphs(
    loaded: LoadedModel, records: Sequence[Record], progress: bool = False
) -> list[Data]:
    """The model's input graphs of ``records``, exactly as for its predictions (ALIGNN's
    with its graph settings and matxfer's graph cache; a foundation model's own)."""
    ids = [r.id for r in records]
    structures = [r.structure for r in records]
    return model_inputs(loaded.model, structures, loaded.graph_config, progress, ids)


@torch.inference_mode()
def embed_graphs(
    loaded: LoadedModel,
    graphs: Sequence[Data],
    device: torch.device | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> np.ndarray:
    """Frozen embeddings ``[N, F]`` of ``graphs`` (graph order, eval mode, float64).

    Raises:
        MatxferError: The model has no readable embedding, or it is NaN/infinite.
    """
    device = device or default_device()
    model = loaded.model.eval().to(device)
    embed = _embedding_function(model, str(loaded.path))
    parts = [embed(batch.to(device)).float().cpu() for batch in graph_loader(graphs, batch_size)]
    features = torch.cat(parts).double().numpy() if parts else np.zeros((0, 0))
    if not np.isfinite(features).all():
        raise MatxferError(
            f"{loaded.path}: its embeddings of the target's structures hold NaN or infinity; "
            "its weights are unusable (did its training diverge?)"
        )
    return features


def embed_records(
    loaded: LoadedModel,
    records: Sequence[Record],
    device: torch.device | None = None,
    batch_size: int = PREDICT_BATCH_SIZE,
    progress: bool = False,
) -> np.ndarray:
    """Frozen embeddings ``[N, F]`` of ``records`` (record order): :func:`record_graphs`
    then :func:`embed_graphs`."""
    return embed_graphs(loaded, record_graphs(loaded, records, progress), device, batch_size)


def load_candidate(source: str | Path, seed: int = 0) -> LoadedModel:
    """A candidate: a foundation model by name (``chgnet``, its pre-trained weights and a
    fresh head, which the embedding does not use) or a run directory or checkpoint."""
    foundation = foundation_source(source)
    return foundation.load(1, seed) if foundation is not None else load_model(source)


def score_features(
    features: np.ndarray,
    labels: np.ndarray,
    folds: int = FOLDS,
    neighbors: int = NEIGHBORS,
    seed: int = 0,
) -> dict[str, float]:
    """LogME, ridge R² and kNN R² of ``features`` for ``labels`` ``[N, P]``.

    Each target column is scored on its labelled rows; with several targets the
    scores are their means (as LogME's multi-output form, You et al. 2021).
    """
    per_target: dict[str, list[float]] = {name: [] for name in SCORE_NAMES}
    for column in labels.T:
        known = np.isfinite(column)
        x, y = features[known], column[known]
        per_target["logme"].append(logme(x, y))
        per_target["ridge_r2"].append(ridge_cv_r2(x, y, folds, seed))
        per_target["knn_r2"].append(knn_cv_r2(x, y, folds, seed, neighbors))
    return {name: float(np.mean(values)) for name, values in per_target.items()}


@dataclass
class SourceScore:
    """The scores of one candidate pre-training source.

    Attributes:
        source: The candidate as given (run directory or checkpoint).
        checkpoint: Its checkpoint file.
        pt_targets: What it was pre-trained to predict.
        features: Width of its embedding.
        logme: LogME (evidence per structure; higher ranks first).
        ridge_r2: Out-of-fold R² of the ridge probe.
        knn_r2: Out-of-fold R² of the kNN probe.
        graph_seconds: Building (or reading from the cache) the target's graphs with
            this model's graph settings; shared with a fine-tuning run from it.
        embed_seconds: Loading the model and embedding.
        score_seconds: The three scores.
        rank: 1 = highest LogME.
    """

    source: str
    checkpoint: str
    pt_targets: list[str]
    features: int
    logme: float
    ridge_r2: float
    knn_r2: float
    graph_seconds: float
    embed_seconds: float
    score_seconds: float
    rank: int = 0

    @property
    def seconds(self) -> float:
        """Time this candidate took in all."""
        return self.graph_seconds + self.embed_seconds + self.score_seconds


@dataclass
class SourceRanking:
    """Candidates for one target, best LogME first.

    Attributes:
        data: The target's training data, in words.
        target_names: The target(s) scored.
        n: Structures embedded (training + validation records).
        scores: One entry per candidate, ranked.
        seconds: Wall time of the whole ranking (data reading included).
        cpu_seconds: CPU time of this process over the ranking (all threads): the
            cost on a shared machine, where wall time also counts other jobs.
        settings: Folds, neighbours and seed of the probes.
    """

    data: str
    target_names: list[str]
    n: int
    scores: list[SourceScore] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    settings: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``rank-sources --json`` prints)."""
        return {
            "data": self.data,
            "target_names": self.target_names,
            "n": self.n,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "settings": self.settings,
            "sources": [{**asdict(score), "seconds": score.seconds} for score in self.scores],
        }


def target_records(
    data: DataSpec, seed: int = 0
) -> tuple[list[Record], np.ndarray, str, list[str]]:
    """The records a fine-tuning run on ``data`` learns from, and their labels.

    The same splits as ``matxfer finetune`` with the same data options and seed
    (:func:`~matxfer.training.inputs.prepare_splits`); training and validation
    records both count, the test set never.

    Returns:
        (records, labels ``[N, P]``, description, target names).
    """
    splits = prepare_splits(data, TrainConfig(seed=seed))
    records = splits.train + splits.val
    return records, labels_of(records, splits.target_names), splits.source, splits.target_names


def rank_sources(
    data: DataSpec | str | Path,
    sources: Sequence[str | Path],
    *,
    seed: int = 0,
    folds: int = FOLDS,
    neighbors: int = NEIGHBORS,
    device: torch.device | str | None = None,
    progress: bool = False,
    on_source: Callable[[SourceScore], None] | None = None,
) -> SourceRanking:
    """Score every candidate pre-trained model for the target ``data``; rank by LogME.

    Args:
        data: The fine-tuning data (a :class:`DataSpec`, or a dataset name/path).
        sources: Pre-training run directories, checkpoint files, or foundation models
            by name (``chgnet``, see :mod:`matxfer.transfer.foundation`).
        seed: Seed of the data split/sample (as ``finetune --seed``) and of the folds.
        folds: Folds of the ridge and kNN probes.
        neighbors: Neighbours of the kNN probe.
        device: Where to embed (default: GPU if present, else CPU).
        progress: Progress bars while building graphs.
        on_source: Called with each candidate's scores as soon as they exist.

    Raises:
        MatxferError: No candidates, a candidate that is no run or checkpoint
            (checked before any data is read), unreadable data, or too few
            labelled structures for the folds.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    if not sources:
        raise MatxferError("no candidate sources: pass pre-training runs or checkpoints")
    for source in sources:
        if foundation_source(source) is None:
            resolve_checkpoint(source)  # fail on a typo before minutes of reading and graphs
    spec = data if isinstance(data, DataSpec) else DataSpec(data)
    records, labels, description, names = target_records(spec, seed)
    fold_ids(len(records), folds)  # too few structures for the folds: say so before embedding
    target_device = torch.device(device) if device is not None else None
    scores = []
    for source in sources:
        began = time.perf_counter()
        loaded = load_candidate(source, seed)
        graphs = record_graphs(loaded, records, progress)
        built = time.perf_counter()
        features = embed_graphs(loaded, graphs, target_device)
        embedded = time.perf_counter()
        values = score_features(features, labels, folds, neighbors, seed)
        score = SourceScore(
            source=str(source),
            checkpoint=str(loaded.path),
            pt_targets=list(loaded.target_names),
            features=features.shape[1],
            graph_seconds=built - began,
            embed_seconds=embedded - built,
            score_seconds=time.perf_counter() - embedded,
            **values,
        )
        scores.append(score)
        if on_source is not None:
            on_source(score)
    scores.sort(key=lambda s: s.logme, reverse=True)
    for rank, score in enumerate(scores, 1):
        score.rank = rank
    return SourceRanking(
        description,
        names,
        len(records),
        scores,
        time.perf_counter() - start,
        time.process_time() - cpu_start,
        {"folds": folds, "neighbors": neighbors, "seed": seed},
    )
