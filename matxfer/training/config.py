"""Training configuration: one validated pydantic model, named profiles, YAML I/O.

A run is fully described by a :class:`TrainConfig`. It starts from a named
profile (``paper`` or ``fast``), is updated by a YAML file and then by
command-line flags, and the resolved result is written to ``RUN/config.yaml``.

Profiles:

* ``paper``: the configuration of the study (Devi, Butler & Sai Gautam,
  arXiv 2406.13142): ALIGNN with 4 ALIGNN + 4 GCN layers, hidden 256,
  embedding 64, BatchNorm, MSE loss, AdamW (lr 1e-3, weight decay 1e-5),
  one-cycle schedule, batch 16, 500 epochs, early stopping after 50 epochs
  without a better validation MAE, 90/10 train/validation split.
* ``fast``: a small model (2 + 2 layers, hidden 64, LayerNorm, L1 loss, a
  fixed 100 epochs, early stopping after 30) that trains the phonon set at
  size 800 (720 + 80 records) on two CPU cores in well under 15 minutes
  (about 4-6 s per epoch on an idle machine); the reference ALIGNN's
  pure-PyTorch model at this size reached test R² 0.98 in 59 epochs.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)

from matxfer.atomic import write_text_atomic
from matxfer.data.sampling import SamplingName
from matxfer.data.transforms import TransformKind as TransformName
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.models.alignn import RBF_CUTOFF
from matxfer.models.mlp import NormKind

#: Owned here: the training losses (:func:`matxfer.training.losses.resolve_loss`).
LossName = Literal["mse", "l1", "huber", "masked_l1"]
#: Owned here: the learning-rate schedules (:class:`matxfer.training.module.PropertyModule`).
SchedulerName = Literal["onecycle", "none"]


class ModelSettings(BaseModel):
    """Keyword arguments of :class:`matxfer.models.ALIGNN` chosen by a config.

    Args:
        alignn_layers: ALIGNN (atom graph + line graph) layers (default: ``4``).
        gcn_layers: Atom-graph-only edge-gated layers (default: ``4``).
        hidden_features: Width of node, edge and triplet features (default: ``256``).
        embedding_features: Width of the embedding MLPs' hidden layer (default: ``64``).
        edge_input_features: RBF expansion size of bond lengths (default: ``80``).
        triplet_input_features: RBF expansion size of bond-angle cosines (default: ``40``).
        cutoff: Last bond-length RBF centre in Å (default: ``8.0``, the reference's;
            :data:`matxfer.models.alignn.RBF_CUTOFF`). Written to configs only when
            changed, so configs and study job ids from before it existed stay the same.
        norm: ``"batch"`` (the 2021 ALIGNN the study used), ``"layer"``
            (the reference's pure-PyTorch model) or ``"none"`` (default: ``"batch"``).
        head_hidden_layers: Hidden MLP blocks of the output head (default: ``0``).
        head_hidden_features: Their width; ``None`` = ``hidden_features`` (default: ``None``).
        head_norm: Their normalisation (default: ``"none"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    alignn_layers: int = Field(4, ge=0)
    gcn_layers: int = Field(4, ge=0)
    hidden_features: int = Field(256, ge=1)
    embedding_features: int = Field(64, ge=1)
    edge_input_features: int = Field(80, ge=1)
    triplet_input_features: int = Field(40, ge=1)
    cutoff: float = Field(RBF_CUTOFF, gt=0)
    norm: NormKind = "batch"
    head_hidden_layers: int = Field(0, ge=0)
    head_hidden_features: int | None = Field(None, ge=1)
    head_norm: NormKind = "none"

    @model_serializer(mode="wrap")
    def _omit_default_cutoff(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.cutoff == RBF_CUTOFF:
            data.pop("cutoff", None)
        return data


#: Fields added after runs and studies existed: written only when set (not ``None``), so
#: the configs, resume checks and study job ids of earlier runs stay the same.
_WRITTEN_WHEN_SET = ("ema_decay", "precision")


class TrainConfig(BaseModel):
    """Everything that determines a training run (data paths excepted).

    Args:
        profile: Name of the profile this config started from (informational).
        seed: Seeds splits, initialisation and shuffling (default: ``0``).
        model: ALIGNN sizes, see :class:`ModelSettings`.
        graph: Graph construction, see :class:`~matxfer.graphs.config.GraphConfig`.
        loss: ``mse`` (the study), ``l1``, ``huber``, or ``masked_l1`` (the study's
            multi-property pre-training loss, divided by the batch size) (default: ``"mse"``).
        huber_delta: Threshold of the Huber loss, in transformed units (default: ``1.0``).
        lr: Peak learning rate of AdamW and the one-cycle schedule (default: ``1e-3``).
        weight_decay: AdamW weight decay (default: ``1e-5``).
        scheduler: ``onecycle`` (stepped per batch) or ``none`` (default: ``"onecycle"``).
        pct_start: Share of the one-cycle schedule spent warming up (default: ``0.3``).
        epochs: Maximum number of epochs (default: ``500``).
        batch_size: Structures per batch (default: ``16``).
        early_stopping_patience: Epochs without a better validation MAE before
            stopping; ``None`` never stops early (default: ``50``).
        val_fraction: Share of the training records held out for validation (default: ``0.1``).
        test_fraction: Share held out for testing when no test set is given (default: ``0.1``).
        test_seed: Seed of that held-out share; ``None`` uses ``seed``. Fix it to compare
            runs of several seeds on one test set (default: ``None``).
        sampling: How ``size`` records are drawn from a larger pool (default: ``"random"``).
        target_transform: Target normalisation fitted on the training split;
            ``both`` is the study's standardize-then-[-1, 1]; ``yeo-johnson`` tames
            heavy tails with a fitted power map (default: ``"both"``).
        num_workers: Data-loader worker processes; 0 keeps runs reproducible (default: ``0``).
        accelerator: Lightning accelerator, ``auto`` uses a GPU when present (default: ``"auto"``).
        max_minutes: Wall-clock budget of training, checked at the end of each
            epoch; once spent, training stops and the best checkpoint so far is tested
            as usual. The one-cycle schedule is not shortened, so a run cut short ends
            at a high learning rate. ``None``: no budget (default: ``None``).
        devices: Processes (one per GPU, or CPU processes sharing the run's threads)
            training data-parallel with DDP; ``batch_size`` stays the global batch,
            so each process takes ``batch_size / devices`` of it and must divide it
            (default: ``1``).
        strategy: ``auto`` (DDP when ``devices`` > 1) or ``ddp`` (also for one
            device). Both are execution settings: a resumed run may change them,
            the global batches stay the same (default: ``"auto"``).
        ema_decay: Keep an exponential moving average of the weights,
            :math:`\\bar\\theta \\leftarrow d\\,\\bar\\theta + (1 - d)\\,\\theta` after every
            optimizer step, and validate, checkpoint and test it instead of the trained
            weights (:mod:`~matxfer.training.averaging`): averaged weights are smoother
            and often generalise better on small data. Typical 0.99-0.999 (an average
            over about the last 100-1000 steps); ``None``: off. Written to configs only
            when set, so configs and study job ids from before it existed stay the same
            (default: ``None``).
        precision: ``bf16-mixed`` runs the forward pass under bfloat16 autocast
            (matmuls in bfloat16, sums, norms, losses and the weights in float32) on
            CPUs with AVX-512 BF16 or AMX, and on GPUs; ``32-true`` or ``None``: float32
            throughout. Measured on this project's CPU, one thread: 1.35-1.5× faster per
            step at the paper's 4 + 4 × 256, none at the ``fast`` profile's 2 + 2 × 64,
            where the elementwise work dominates (and runs in plain torch ops under
            autocast, not in the fused kernels). Opt-in: no profile uses it. Written to
            configs only when set (default: ``None``).
    """

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    seed: int = Field(0, ge=0)  # numpy's seed sequences take no negative seeds
    model: ModelSettings = ModelSettings()
    graph: GraphConfig = GraphConfig()
    loss: LossName = "mse"
    huber_delta: float = Field(1.0, gt=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    scheduler: SchedulerName = "onecycle"
    pct_start: float = Field(0.3, gt=0, lt=1)
    epochs: int = Field(500, ge=1)
    batch_size: int = Field(16, ge=1)
    early_stopping_patience: int | None = Field(50, ge=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    test_seed: int | None = Field(None, ge=0)
    sampling: SamplingName = "random"
    target_transform: TransformName = "both"
    num_workers: int = Field(0, ge=0)
    accelerator: str = "auto"
    max_minutes: float | None = Field(None, gt=0)
    devices: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = "auto"
    ema_decay: float | None = Field(None, gt=0, lt=1)
    precision: Literal["32-true", "bf16-mixed"] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_late_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in _WRITTEN_WHEN_SET:
            if getattr(self, key) is None:
                data.pop(key, None)
        return data

    @field_validator("devices")
    @classmethod
    def _divides_batch(cls, devices: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and batch_size % devices:
            raise ValueError(
                f"batch_size {batch_size} is the global batch and must be a multiple of "
                f"devices {devices} (each process takes batch_size / devices)"
            )
        return devices


#: Execution settings of data-parallel training: a resumed run may change them.
PARALLEL_KEYS = ("devices", "strategy")


#: Overrides applied to the :class:`TrainConfig` defaults by each profile.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": {
        "model": {"alignn_layers": 2, "gcn_layers": 2, "hidden_features": 64, "norm": "layer"},
        "loss": "l1",
        "epochs": 100,
        # The one-cycle rate anneals only in the last epochs, where the best models come
        # from; stopping on a noisy 10-record validation set before that cost fine-tuning
        # at size 100 half its epochs (measured: stopped at 52, test R² 0.52 vs 0.64 scratch).
        "early_stopping_patience": None,
    },
}


def merge_nested(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: sections (``model``, ``graph``) merge key by key."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, source: str) -> ConfigError:
    """A ConfigError naming every bad key, its value and what is wrong."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<top level>"
        if item["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        else:
            lines.append(f"{key}={item.get('input')!r}: {item['msg']}")
    return ConfigError(f"{source}: invalid training config: " + "; ".join(lines))


def resolve_config(
    profile: str | None = "paper",
    overrides: dict[str, Any] | None = None,
    source: str = "config",
) -> TrainConfig:
    """Build a validated config from a profile and nested overrides.

    Args:
        profile: ``paper`` or ``fast``; ``None`` takes the overrides' own
            ``profile`` key, else ``paper``.
        overrides: Nested values replacing the profile's (e.g. from YAML, then flags).
        source: Where the overrides came from, for error messages.

    Raises:
        ConfigError: Unknown profile, unknown key or invalid value (all named).
    """
    overrides = dict(overrides or {})
    name = profile or overrides.get("profile") or "paper"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    values = merge_nested({**PROFILES[name], "profile": name}, overrides)
    values["profile"] = name
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        raise _describe(error, source) from None


def describe_yaml_error(error: yaml.YAMLError) -> str:
    """PyYAML's multi-line report as one line: ``line L, column C: problem``."""
    if not isinstance(error, yaml.MarkedYAMLError) or error.problem_mark is None:
        return " ".join(str(error).split())
    mark = error.problem_mark
    context = f" ({error.context})" if error.context else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}{context}"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file as a nested dict (not yet validated).

    Raises:
        ConfigError: The file is missing, is not YAML, or is not a mapping.
    """
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {describe_yaml_error(error)}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    return loaded


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Profile, then YAML file, then overrides (e.g. command-line flags).

    Args:
        path: YAML file; its ``profile`` key is used when ``profile`` is ``None``.
        profile: Profile name; wins over the file's ``profile`` key.
        overrides: Values that win over the file's.

    Raises:
        ConfigError: Any invalid key or value, naming it and the file.
    """
    file_values = read_config_file(path) if path is not None else {}
    merged = merge_nested(file_values, overrides or {})
    if path is None:
        source = "options" if overrides else "config"
    else:
        source = f"{path} (or the options given with it)" if overrides else str(path)
    return resolve_config(profile, merged, source=source)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically: temp file, then rename)."""
    path = Path(path)
    write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
