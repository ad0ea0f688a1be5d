"""Lightning module, data module and loss resolution, without a Trainer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch_geometric.data import Batch
from training_helpers import smooth_target, synthetic_structures

from matxfer.data.records import Record
from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError
from matxfer.graphs import build_graphs
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training.loaders import EpochShuffleSampler, graph_loader, with_targets
from matxfer.training.module import PropertyModule, resolve_loss


def tiny_module(records: list[Record], names: list[str]) -> PropertyModule:
    torch.manual_seed(0)
    model = ALIGNN(
        num_outputs=len(names),
        alignn_layers=1,
        gcn_layers=1,
        hidden_features=8,
        embedding_features=8,
        edge_input_features=8,
        triplet_input_features=4,
    )
    values = torch.tensor([[r.targets.get(n, math.nan) for n in names] for r in records])
    transform = TargetTransform("standardize", len(names)).fit(values)
    return PropertyModule(model, transform, names, GraphConfig(), loss="l1")


def test_unknown_loss_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"'hinge'.*\['huber', 'l1', 'masked_l1', 'mse'\]"):
        resolve_loss("hinge")
    assert resolve_loss("MSE")(torch.tensor([1.0]), torch.tensor([3.0])) == 4.0


def test_sampler_depends_only_on_seed_and_epoch() -> None:
    first, second = EpochShuffleSampler(20, seed=5), EpochShuffleSampler(20, seed=5)
    second.set_epoch(3)
    second.set_epoch(1)
    first.set_epoch(1)
    assert list(first) == list(second)
    assert sorted(first) == list(range(20))
    first.set_epoch(2)
    assert list(first) != list(second)


def test_step_masks_missing_labels_and_works_in_transformed_units() -> None:
    structures = synthetic_structures(6)
    records = [
        Record(str(i), s, {"a": smooth_target(s), **({"b": float(i)} if i % 2 else {})})
        for i, s in enumerate(structures)
    ]
    graphs = with_targets(
        build_graphs(structures, GraphConfig(), progress=False), records, ["a", "b"]
    )
    assert torch.isnan(graphs[0].y[0, 1]) and graphs[1].y[0, 1] == 1.0
    module = tiny_module(records, ["a", "b"])
    batch = Batch.from_data_list(graphs)
    metrics = module.step(batch)
    prediction = module.model(batch)
    target = module.transform(batch.y)
    mask = ~torch.isnan(target)
    expected = (prediction[mask] - target[mask]).abs().mean()
    assert torch.allclose(metrics["loss"], expected)
    metrics["loss"].backward()
    head_grads = [p.grad for p in module.model.head.parameters()]
    assert all(g is not None and bool(g.abs().sum() > 0) for g in head_grads)


def test_loader_keeps_order_without_seed() -> None:
    structures = synthetic_structures(5)
    records = [Record(str(i), s, {"target": float(i)}) for i, s in enumerate(structures)]
    graphs = with_targets(
        build_graphs(structures, GraphConfig(), progress=False), records, ["target"]
    )
    labels = torch.cat([b.y for b in graph_loader(graphs, batch_size=2)])
    assert labels.flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_optimizer_is_fused_adamw_with_the_configured_schedule() -> None:
    records = [Record(str(i), s, {"a": 1.0 + i}) for i, s in enumerate(synthetic_structures(3))]
    module = tiny_module(records, ["a"])
    module.trainer = SimpleNamespace(estimated_stepping_batches=40)  # type: ignore[assignment]
    config = module.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    assert optimizer.defaults["weight_decay"] == 1e-5
    assert schedule.total_steps == 40
