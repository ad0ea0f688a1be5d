"""Checkpoints that rebuild a model without the training code or config.

A matxfer checkpoint is a ``torch.save``-d dict with (at least)

* ``state_dict``: parameters and buffers, keys ``model.*`` (the
  :class:`~matxfer.models.ALIGNN`) and ``transform.*`` (the fitted
  :class:`~matxfer.data.transforms.TargetTransform`);
* ``matxfer``: a JSON-ready payload: checkpoint format, matxfer version,
  model class and constructor arguments (``model.config_dict()``), target
  transform, graph config and target names.

Lightning's ``.ckpt`` files (``best.ckpt``, ``last.ckpt``) are such dicts
(the payload is added in ``on_save_checkpoint``), with optimizer and loop
states besides; :func:`save_model` writes a lean one. :func:`load_model`
reads either and loads the weights with ``strict=True``. Every file is
written to a temporary name and renamed into place, so a run killed while
saving never leaves a truncated checkpoint.
"""

from __future__ import annotations

import importlib
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from matxfer import __version__
from matxfer.atomic import atomic_path
from matxfer.data.transforms import TargetTransform
from matxfer.data.validate import describe_error
from matxfer.errors import MatxferError, MissingDependencyError
from matxfer.graphs.config import GraphConfig
from matxfer.models import ALIGNN
from matxfer.training.shipped import resolve_shipped, shipped_models

#: Bump when the payload layout changes incompatibly.
CHECKPOINT_FORMAT = 1
#: Model classes a checkpoint may name, by the name it stores.
MODEL_CLASSES: dict[str, type[nn.Module]] = {"ALIGNN": ALIGNN}
#: Model classes of optional dependencies, imported when a checkpoint names them (the
#: module raises a one-line install hint when its dependency is missing).
OPTIONAL_MODEL_CLASSES: dict[str, str] = {
    "CHGNetRegressor": "matxfer.models.chgnet_backbone",
}
#: Checkpoint a run directory resolves to.
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
#: Payload fields every matxfer checkpoint has, with the type each must have.
_PAYLOAD_FIELDS: dict[str, tuple[type, str]] = {
    "model_class": (str, "a string"),
    "model_config": (dict, "a dict"),
    "transform": (dict, "a dict"),
    "graph_config": (dict, "a dict"),
    "target_names": (list, "a list"),
}


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a unique temporary file beside ``path``, fsync, then rename over
    ``path`` (see :func:`matxfer.atomic.atomic_path`)."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)


def checkpoint_payload(
    model: nn.Module,
    transform: TargetTransform,
    graph_config: GraphConfig,
    target_names: list[str],
) -> dict[str, Any]:
    """Everything besides the weights needed to rebuild and use ``model``.

    Args:
        model: The model; must have ``config_dict()``.
        transform: The fitted target transform.
        graph_config: How its input graphs are built.
        target_names: Names of its P outputs, in order.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "matxfer_version": __version__,
        "torch_version": str(torch.__version__),
        "model_class": type(model).__name__,
        "model_config": model.config_dict(),
        "transform": transform.to_dict(),
        "graph_config": graph_config.model_dump(mode="json"),
        "target_names": list(target_names),
    }


def save_model(
    path: str | Path,
    model: nn.Module,
    transform: TargetTransform,
    graph_config: GraphConfig,
    target_names: list[str],
) -> Path:
    """Write a lean checkpoint (weights + payload, no optimizer state) atomically.

    Args:
        path: Destination file (e.g. ``model.ckpt``).
        model: The model.
        transform: Its fitted target transform.
        graph_config: Graph construction it expects.
        target_names: Names of its outputs.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    state.update({f"transform.{k}": v for k, v in transform.state_dict().items()})
    payload = checkpoint_payload(model, transform, graph_config, target_names)
    atomic_torch_save({"state_dict": state, "matxfer": payload}, path)
    return Path(path)


def resolve_checkpoint(run_or_ckpt: str | Path) -> Path:
    """A checkpoint file, a run directory's ``best.ckpt``, or a shipped model by name.

    An existing path wins over a shipped model of the same name (see
    :mod:`~matxfer.training.shipped`).

    Raises:
        MatxferError: None of them exists (the message says what was looked for).
    """
    path = Path(run_or_ckpt)
    if path.is_dir():
        best = path / BEST_CHECKPOINT
        if not best.is_file():
            raise MatxferError(
                f"{path} holds no {BEST_CHECKPOINT}: is it a finished training run "
                "(matxfer train --out DIR)?"
            )
        return best
    if path.is_file():
        return path
    shipped = resolve_shipped(str(run_or_ckpt))
    if shipped is not None:
        return shipped
    raise MatxferError(
        f"{path}: no such run directory or checkpoint file, nor a shipped model "
        f"({', '.join(shipped_models()) or 'none installed'}; matxfer models list)"
    )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a matxfer checkpoint dict (tensors on CPU, ``weights_only``).

    Raises:
        MatxferError: The file is not a readable checkpoint, lacks the matxfer
            payload, or was written by an incompatible matxfer.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MatxferError(f"{path}: checkpoint file not found") from None
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as error:
        raise MatxferError(
            f"{path}: not a readable checkpoint ({str(error).splitlines()[0]}); "
            "the file may be truncated or corrupted: re-copy it or retrain"
        ) from None
    except Exception as error:  # a crafted pickle can fail the unpickler in many ways
        raise MatxferError(
            f"{path}: not a readable checkpoint ({describe_error(error)}); "
            "use a checkpoint written by matxfer train"
        ) from None
    if not isinstance(checkpoint, dict) or "matxfer" not in checkpoint:
        raise MatxferError(
            f"{path}: not a matxfer checkpoint (no model description); "
            "use a checkpoint written by matxfer train"
        )
    _check_payload(checkpoint, path)
    return checkpoint


def _check_payload(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse missing or mistyped payload fields, naming them all, so that no later
    ``.get`` or ``**config`` fails with a bare AttributeError or TypeError."""
    info = checkpoint["matxfer"]
    if not isinstance(info, dict):
        raise MatxferError(
            f"{path}: the checkpoint's model description is {type(info).__name__}, "
            "expected a dict; was the file edited or written by another program?"
        )
    fmt = info.get("format")
    if fmt != CHECKPOINT_FORMAT:
        raise MatxferError(
            f"{path}: checkpoint format {fmt!r} written by matxfer "
            f"{info.get('matxfer_version')!r}; this matxfer ({__version__}) reads "
            f"format {CHECKPOINT_FORMAT}"
        )
    wrong = [
        f"'{key}' " + ("is missing" if key not in info else f"is not {what}")
        for key, (kind, what) in _PAYLOAD_FIELDS.items()
        if not isinstance(info.get(key), kind)
    ]
    names = info.get("target_names")
    if isinstance(names, list) and not (names and all(isinstance(n, str) for n in names)):
        wrong.append("'target_names' is not a non-empty list of strings")
    if wrong:
        raise MatxferError(
            f"{path}: invalid model description ({'; '.join(wrong)}); "
            "was the file edited or written by another program?"
        )
    state = checkpoint.get("state_dict")
    if state is None:
        raise MatxferError(f"{path}: checkpoint holds no weights (state_dict)")
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise MatxferError(
            f"{path}: the checkpoint's weights (state_dict) are {type(state).__name__}, "
            "expected a dict of named tensors"
        )
    epoch = checkpoint.get("epoch")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise MatxferError(f"{path}: the checkpoint's epoch is {epoch!r}, expected an integer")


def split_state_dict(state: dict[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    """Entries of ``state`` under ``prefix.`` with the prefix removed."""
    head = prefix + "."
    return {k[len(head) :]: v for k, v in state.items() if k.startswith(head)}


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with what it needs to predict.

    Attributes:
        model: The model (eval mode, CPU).
        transform: Its fitted target transform (maps outputs to original units by ``inverse``).
        graph_config: How input graphs must be built.
        target_names: Names of the outputs.
        path: The checkpoint file.
        info: The checkpoint's matxfer payload (versions, model config).
        epoch: Training epoch of the weights, when stored.
    """

    model: nn.Module
    transform: TargetTransform
    graph_config: GraphConfig
    target_names: list[str]
    path: Path
    info: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None


def model_class_of(name: str, path: Path) -> type[nn.Module]:
    """The model class a checkpoint names (importing an optional one on demand).

    Raises:
        MatxferError: Unknown name, or an optional class whose dependency is missing.
    """
    if name in OPTIONAL_MODEL_CLASSES:
        return getattr(importlib.import_module(OPTIONAL_MODEL_CLASSES[name]), name)
    model_class = MODEL_CLASSES.get(name)
    if model_class is None:
        raise MatxferError(
            f"{path}: unknown model class {name!r}; this matxfer knows "
            f"{sorted([*MODEL_CLASSES, *OPTIONAL_MODEL_CLASSES])}"
        )
    return model_class


def load_model(run_or_ckpt: str | Path) -> LoadedModel:
    """Rebuild a model and its target transform from a checkpoint, strictly.

    Args:
        run_or_ckpt: A checkpoint file or a run directory (its ``best.ckpt``).

    Raises:
        MatxferError: Missing or corrupted file, unknown model class, or
            weights that do not match the stored model configuration.
    """
    path = resolve_checkpoint(run_or_ckpt)
    checkpoint = read_checkpoint(path)
    info = checkpoint["matxfer"]
    model_class = model_class_of(info["model_class"], path)
    try:
        model = model_class.from_config_dict(info["model_config"])  # type: ignore[attr-defined]
        model.load_state_dict(split_state_dict(checkpoint["state_dict"], "model"), strict=True)
        transform = TargetTransform.from_dict(info["transform"])
        graph_config = GraphConfig.model_validate(info["graph_config"])
    except MissingDependencyError:  # an optional model's package: the install hint, as it is
        raise
    except Exception as error:  # any bad value of a crafted payload, named with the file
        raise MatxferError(
            f"{path}: the weights do not match the stored model description "
            f"({describe_error(error)}); was the file edited or written by another program?"
        ) from None
    model.eval()
    return LoadedModel(
        model=model,
        transform=transform,
        graph_config=graph_config,
        target_names=list(info["target_names"]),
        path=path,
        info=info,
        epoch=checkpoint.get("epoch"),
    )
