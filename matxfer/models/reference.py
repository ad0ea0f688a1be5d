"""Load checkpoints of the reference ``alignn`` package into :class:`~matxfer.models.ALIGNN`.

Two reference models are supported, both trained by ``alignn``'s
``train_alignn.py``, which writes ``best_model.pt`` (a ``state_dict``) and
``config.json`` (the training config, model settings under ``"model"``):

* ``"alignn"``: the 2021 DGL model (``alignn/models/alignn.py``, BatchNorm),
  loaded as ``ALIGNN(norm="batch")``;
* ``"alignn_atomwise_pure"``: the pure-PyTorch variant
  (``alignn/models/alignn_atomwise_pure.py``, LayerNorm), loaded as
  ``ALIGNN(norm="layer")``.

Every reference tensor is mapped through :data:`PREFIX_MAP` /
:data:`INFIX_MAP` (or listed in :data:`DROPPED_KEYS`) and shape-checked;
anything unmatched is an error that lists the keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from matxfer.errors import ConfigError, DataError, Problem
from matxfer.models.alignn import ALIGNN, graph_assignment
from matxfer.models.features import CGCNN_MAX_TABULATED, cgcnn_feature_table

#: Reference model name → matxfer normalisation.
REFERENCE_NORMS: dict[str, str] = {"alignn": "batch", "alignn_atomwise_pure": "layer"}

#: Reference key prefix → matxfer key prefix (the embeddings' ``nn.Sequential``
#: indices become named submodules; ``fc`` becomes the head's output layer).
PREFIX_MAP: dict[str, str] = {
    "atom_embedding.layer.0.": "atom_embedding.mlp.linear.",
    "atom_embedding.layer.1.": "atom_embedding.mlp.norm.",
    **{
        f"{name}_embedding.{ref}": f"{name}_embedding.{ours}"
        for name in ("edge", "angle")
        for ref, ours in (
            ("0.", "rbf."),
            ("1.layer.0.", "mlp.0.linear."),
            ("1.layer.1.", "mlp.0.norm."),
            ("2.layer.0.", "mlp.1.linear."),
            ("2.layer.1.", "mlp.1.norm."),
        )
    },
    "fc.": "head.out.",
}

#: Reference key fragment → matxfer fragment inside the convolutions.
INFIX_MAP: dict[str, str] = {".bn_edges.": ".norm_edges.", ".bn_nodes.": ".norm_nodes."}

#: Reference tensors with no matxfer counterpart, and why they can be dropped.
DROPPED_KEYS: dict[str, str] = {
    "_species_table": "atomic-number feature lookup of the pure model's TorchScript path; "
    "matxfer's fixed CGCNN table (checked to agree) plays its role",
}

#: Reference model options whose non-default values change predictions in
#: ways matxfer does not implement, with the value matxfer needs.
_REQUIRED_OPTIONS: dict[str, Any] = {
    "link": "identity",
    "classification": False,
    "extra_features": 0,
    "use_cutoff_function": False,
    "conv_type": "alignn",
    "atomwise_output_features": 0,
    "additional_output_features": 0,
}


def reference_key_to_matxfer(key: str) -> str:
    """The matxfer ``state_dict`` key of a reference key (unchanged if no rule applies)."""
    for ref_prefix, prefix in PREFIX_MAP.items():
        if key.startswith(ref_prefix):
            return prefix + key[len(ref_prefix) :]
    for ref_infix, infix in INFIX_MAP.items():
        key = key.replace(ref_infix, infix)
    return key


def _read_json(config: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(config, Mapping):
        return dict(config), "<config dict>"
    path = Path(config)
    try:
        return json.loads(path.read_text()), str(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read reference config {path}: {exc}") from None


def reference_model_config(config: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """matxfer ``ALIGNN`` constructor kwargs for a reference config.

    Args:
        config: The reference ``config.json`` (path or dict), either the full
            training config (model settings under ``"model"``) or the model
            settings themselves.

    Raises:
        ConfigError: for an unsupported model name or option.
    """
    data, source = _read_json(config)
    features = data.get("atom_features", "cgcnn")
    if features != "cgcnn":
        raise ConfigError(f"{source}: atom_features={features!r} is not supported (needs 'cgcnn')")
    model = data.get("model", data)
    if not isinstance(model, Mapping) or "name" not in model:
        raise ConfigError(f"{source}: no model settings with a 'name' (expected key 'model')")
    name = model["name"]
    if name not in REFERENCE_NORMS:
        raise ConfigError(
            f"{source}: reference model {name!r} is not supported; "
            f"supported: {sorted(REFERENCE_NORMS)}"
        )
    for option, needed in _REQUIRED_OPTIONS.items():
        if model.get(option, needed) not in (needed, None):
            raise ConfigError(
                f"{source}: option {option}={model[option]!r} is not supported (needs {needed!r})"
            )
    if model.get("calculate_gradient") and model.get("use_zbl"):
        raise ConfigError(f"{source}: ZBL repulsion (use_zbl) is not supported")
    defaults = {"alignn": 4, "alignn_atomwise_pure": 2}[name]
    width = {"alignn": 256, "alignn_atomwise_pure": 64}[name]
    return {
        "num_outputs": int(model.get("output_features", 1)),
        "alignn_layers": int(model.get("alignn_layers", defaults)),
        "gcn_layers": int(model.get("gcn_layers", defaults)),
        "hidden_features": int(model.get("hidden_features", width)),
        "embedding_features": int(model.get("embedding_features", 64)),
        "edge_input_features": int(model.get("edge_input_features", 80)),
        "triplet_input_features": int(model.get("triplet_input_features", 40)),
        "atom_input_features": int(model.get("atom_input_features", 92)),
        "norm": REFERENCE_NORMS[name],
    }


def _check_dropped(key: str, value: Tensor, model: ALIGNN, source: str) -> Problem | None:
    if key == "_species_table" and bool(value.any()):
        ours = model.atom_embedding.table[1 : CGCNN_MAX_TABULATED + 1]
        theirs = value[1 : CGCNN_MAX_TABULATED + 1].to(ours.dtype)
        if theirs.shape != ours.shape or not torch.equal(theirs, ours):
            return Problem(source, None, key, "atom feature table differs from CGCNN's")
    return None


def map_reference_state_dict(
    state_dict: Mapping[str, Tensor], model: ALIGNN, source: str = "<state dict>"
) -> dict[str, Tensor]:
    """Rename a reference ``state_dict`` for ``model``, checking every tensor.

    Raises:
        DataError: listing each reference key without a counterpart, each
            shape mismatch, each model tensor left unset, and RBF centres
            that differ from the model's.
    """
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    reported: set[str] = set()
    problems: list[Problem] = []
    for key, value in state_dict.items():
        if key in DROPPED_KEYS:
            problem = _check_dropped(key, value, model, source)
            problems += [problem] if problem else []
            continue
        target = reference_key_to_matxfer(key)
        reason = None
        if target not in ours:
            reason = "no matching matxfer parameter"
        elif tuple(ours[target].shape) != tuple(value.shape):
            reason = f"shape {tuple(value.shape)} != matxfer {target} {tuple(ours[target].shape)}"
        elif target.endswith("rbf.centers") and not torch.allclose(value, ours[target]):
            reason = "RBF centres differ from the config's"
        if reason is None:
            mapped[target] = value
        else:
            reported.add(target)
            problems.append(Problem(source, None, key, reason))
    problems += [
        Problem(source, None, key, "matxfer parameter missing from the checkpoint")
        for key in ours
        if key not in mapped and key not in reported
    ]
    if problems:
        raise DataError(
            f"{source}: reference checkpoint does not match the model ({len(problems)} problems)",
            problems,
        )
    return mapped


def load_reference_checkpoint(
    state_dict: str | Path | Mapping[str, Tensor],
    config: str | Path | Mapping[str, Any],
) -> ALIGNN:
    """Build a matxfer :class:`ALIGNN` holding a reference ``alignn`` model's weights.

    Args:
        state_dict: ``best_model.pt`` (path) or the loaded ``state_dict``.
        config: The reference ``config.json`` (path or dict), see
            :func:`reference_model_config`.

    Returns:
        The model, in eval mode; it predicts what the reference predicts on
        the same graphs.

    Raises:
        ConfigError: unsupported reference model or options.
        DataError: the checkpoint cannot be read or does not match (every
            unmatched key listed).
    """
    model = ALIGNN(**reference_model_config(config))
    source = "<state dict>"
    if not isinstance(state_dict, Mapping):
        source = str(state_dict)
        try:
            state_dict = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for unreadable files
            raise DataError(f"cannot read reference checkpoint {source}: {exc}") from None
        if not isinstance(state_dict, Mapping):
            raise DataError(f"{source}: expected a state_dict, found {type(state_dict).__name__}")
    model.load_state_dict(map_reference_state_dict(state_dict, model, source), strict=True)
    return model.eval()


def reference_inputs(graph: Any) -> tuple[Any, Any, None]:
    """The pure reference model's input for a ``CrystalGraph`` or ``Batch`` (needs ``alignn``).

    Builds the ``(TorchGraph, TorchGraph, lattice)`` triple of
    ``ALIGNNAtomWisePure.forward`` from the same edges, line graph and bond
    vectors, so both models can be compared on identical graphs.
    """
    from alignn.torch_graph_builder import TorchGraph

    num_atoms = graph.z.numel()
    node_graph, num_graphs = graph_assignment(graph, num_atoms, graph.z.device)
    src, dst = graph.edge_index
    atom_graph = TorchGraph(
        num_nodes=num_atoms,
        src=src,
        dst=dst,
        ndata={"atom_features": cgcnn_feature_table()[graph.z]},
        edata={"r": graph.edge_vec},
        batch_num_nodes=torch.bincount(node_graph, minlength=num_graphs),
        batch_num_edges=torch.bincount(node_graph[src], minlength=num_graphs),
    )
    line_graph = TorchGraph(
        num_nodes=src.numel(),
        src=graph.lg_edge_index[0],
        dst=graph.lg_edge_index[1],
        edata={"h": graph.angle_cos},
    )
    return atom_graph, line_graph, None
