"""Preparing a pre-trained checkpoint for fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from matxfer.data.transforms import TargetTransform
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import save_model
from matxfer.transfer.finetune import load_for_finetuning


@pytest.fixture
def checkpoint(tmp_path: Path) -> tuple[Path, ALIGNN]:
    torch.manual_seed(0)
    model = ALIGNN(
        num_outputs=2,
        alignn_layers=1,
        gcn_layers=1,
        hidden_features=8,
        embedding_features=4,
        edge_input_features=6,
        triplet_input_features=4,
    )
    transform = TargetTransform("standardize", 2).fit(torch.randn(10, 2))
    path = save_model(tmp_path / "pt.ckpt", model, transform, GraphConfig(cutoff=6.0), ["a", "b"])
    return path, model


def test_weights_kept_head_replaced_groups_frozen(checkpoint: tuple[Path, ALIGNN]) -> None:
    path, pretrained = checkpoint
    prepared = load_for_finetuning(path, 1, strategy="three_body_only", head="new", seed=0)
    model = prepared.model
    assert prepared.graph_config.cutoff == 6.0
    assert model.training
    assert model.config_dict()["num_outputs"] == 1
    reference = pretrained.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(value, reference[key]), key
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"alignn_layers", "head"}
    assert prepared.freeze.num_frozen > 0


def test_reuse_with_other_output_count_fails(checkpoint: tuple[Path, ALIGNN]) -> None:
    with pytest.raises(ConfigError, match="'new'"):
        load_for_finetuning(checkpoint[0], 1, head="reuse")
