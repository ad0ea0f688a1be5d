"""Crafted or damaged checkpoints: one MatxferError naming the file, never a bare traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from builders import TINY_MODEL

from matxfer.data.transforms import TargetTransform
from matxfer.errors import MatxferError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training import load_model, save_model


@pytest.fixture(scope="module")
def lean_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The dict of a valid lean checkpoint of a tiny untrained model."""
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_model(path, ALIGNN(**TINY_MODEL), TargetTransform(), GraphConfig(), ["target"])
    assert load_model(path).target_names == ["target"]
    return torch.load(path, weights_only=True)


def _set(key: str, value: object) -> Callable[[dict], None]:
    def edit(checkpoint: dict) -> None:
        checkpoint["matxfer"][key] = value

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda checkpoint: checkpoint["matxfer"].pop(key)


def _top(key: str, value: object) -> Callable[[dict], None]:
    return lambda checkpoint: checkpoint.update({key: value})


# (case, edit of the checkpoint dict, words of the message)
CRAFTED = [
    ("payload a list", _top("matxfer", [1, 2]), "model description is list, expected a dict"),
    ("payload a string", _top("matxfer", "x"), "model description is str"),
    ("format missing", _drop("format"), "checkpoint format None"),
    ("format a list", _set("format", [1]), "checkpoint format [1]"),
    ("model class a list", _set("model_class", ["ALIGNN"]), "'model_class' is not a string"),
    ("model class unknown", _set("model_class", "GCN"), "unknown model class 'GCN'"),
    ("model config missing", _drop("model_config"), "'model_config' is missing"),
    ("model config a list", _set("model_config", [1]), "'model_config' is not a dict"),
    ("model config bad value", _set("model_config", {"hidden_features": "x"}), "do not match"),
    ("model config unknown key", _set("model_config", {"colour": 1}), "unknown ALIGNN config"),
    ("transform a number", _set("transform", 3), "'transform' is not a dict"),
    ("transform empty", _set("transform", {}), "target transform description lacks"),
    ("graph config a string", _set("graph_config", "k"), "'graph_config' is not a dict"),
    ("graph config bad", _set("graph_config", {"max_neighbors": "many"}), "do not match"),
    ("target names a dict", _set("target_names", {"a": 1}), "'target_names' is not a list"),
    ("target names numbers", _set("target_names", [1]), "non-empty list of strings"),
    ("state dict missing", lambda c: c.pop("state_dict"), "holds no weights"),
    ("state dict a list", _top("state_dict", [1]), "weights (state_dict) are list"),
    ("state dict values", _top("state_dict", {"model.x": 1}), "do not match"),
    ("epoch a string", _top("epoch", "7"), "epoch is '7'"),
]


@pytest.mark.parametrize(("case", "edit", "words"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_payload_is_one_clear_error(
    lean_checkpoint: dict, tmp_path: Path, case: str, edit: Callable[[dict], None], words: str
) -> None:
    checkpoint = {**lean_checkpoint, "matxfer": dict(lean_checkpoint["matxfer"])}
    edit(checkpoint)
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(MatxferError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    assert words in message


@pytest.mark.parametrize("content", [[1, 2], {"matxfer": None}, "text", 42])
def test_non_dict_checkpoints_are_refused(tmp_path: Path, content: object) -> None:
    path = tmp_path / "odd.ckpt"
    torch.save(content, path)
    with pytest.raises(MatxferError, match=str(path)):
        load_model(path)
