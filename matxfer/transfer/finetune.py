"""Fine-tuning: a pre-trained checkpoint, a head choice and a freezing strategy, then training.

Fine-tuning = pre-trained weights + a head choice (:mod:`~matxfer.transfer.heads`)
+ a freezing strategy (:mod:`~matxfer.transfer.freeze`). The training loop is
:func:`matxfer.training.train`'s; this module prepares the model, fixes the
config to what the pre-trained layers expect, audits leakage and records all
of it in ``RUN/transfer.json``.

* **Architecture and graphs** come from the checkpoint: the model is rebuilt
  from its stored constructor arguments and the fine-tuning graphs are built
  with its graph config (the embeddings learned those cutoffs and neighbour
  counts). ``config.model`` is overwritten with the pre-trained architecture
  (after the head change), so ``config.yaml`` describes the model trained.
* **Target transform** is not carried over: the fine-tuning property has its
  own scale, so a new transform is fitted on the fine-tuning training split.
* **Frozen layers** stay bit-identical, BatchNorm running statistics
  included: they get no gradient, are not in the optimizer (no weight decay)
  and their normalisation layers run in eval mode (see
  :func:`~matxfer.transfer.freeze.apply_freeze`).
* **Leakage audit**: how many fine-tuning test and training crystals occur in
  the pre-training records (:mod:`~matxfer.transfer.pretrained`).
* **Foundation models** (``pretrained="chgnet"``, :mod:`~matxfer.transfer.foundation`)
  bring their own architecture and graphs: the config's model and graph sections
  are left as they are (unused), ``transfer.json`` and the checkpoint describe the
  model, and the leakage entry carries the source's note instead of an audit.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from matxfer.data.records import Record
from matxfer.errors import ConfigError
from matxfer.graphs.config import GraphConfig
from matxfer.locking import locks_directory
from matxfer.models import ALIGNN
from matxfer.training.checkpoint import (
    LoadedModel,
    load_model,
    resolve_checkpoint,
)
from matxfer.training.config import ModelSettings, TrainConfig
from matxfer.training.inputs import DataSpec, Splits, prepare_splits
from matxfer.training.outputs import strict_json_value, write_text_atomic
from matxfer.training.rundir import (
    MODEL_CARD_FILE,
    TRANSFER_FILE,
    check_start,
    read_transfer_record,
    write_transfer_record,
)
from matxfer.training.shipped import shipped_record
from matxfer.transfer.foundation import (
    check_foundation_options,
    foundation_source,
    retitle_model_card,
)
from matxfer.transfer.freeze import (
    FreezeSpec,
    FreezeSummary,
    apply_freeze,
    param_groups,
    parse_freeze,
    parse_lr_multipliers,
)
from matxfer.transfer.heads import HEAD_MODES, HeadMode, prepare_head, reuse_outputs
from matxfer.transfer.pretrained import checkpoint_sha256, leakage_entry, pretrain_excluding

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback

    from matxfer.training.run import TrainResult

#: Sub-directory of the fine-tuning run holding a pre-training repeated without
#: the fine-tuning test crystals (``exclude_test_structures``).
EXCLUDED_PRETRAINING_DIR = "pretrain_excluding_test"
#: What fine-tuning writes into its run directory before training starts.
FINETUNE_SETUP = (TRANSFER_FILE, EXCLUDED_PRETRAINING_DIR)
#: Choices a resumed fine-tuning must repeat (compared with ``transfer.json``).
RESUME_SETTINGS = (
    "strategy",
    "head",
    "head_outputs",
    "extra_layers",
    "lr_multipliers",
    "probe_epochs",
    "l2sp",
)


@dataclass
class FineTuneModel:
    """A pre-trained model prepared for fine-tuning.

    Attributes:
        model: The model (train mode), head replaced and groups frozen as asked.
        freeze: Trainable/frozen parameter counts per group.
        graph_config: The pre-trained model's graph settings; fine-tuning
            graphs must be built with them (the embeddings learned these
            cutoffs and neighbour counts).
        pretrained: The loaded checkpoint (path, payload, target names).
    """

    model: nn.Module
    freeze: FreezeSummary
    graph_config: GraphConfig
    pretrained: LoadedModel


def load_for_finetuning(
    checkpoint: str | Path,
    num_outputs: int,
    strategy: FreezeSpec | str = "all",
    head: HeadMode = "reuse",
    extra_layers: int = 2,
    seed: int | None = None,
    head_outputs: Sequence[str] | None = None,
) -> FineTuneModel:
    """Load a pre-trained checkpoint, set its head, and freeze layer groups.

    Args:
        checkpoint: A checkpoint file or run directory (see
            :func:`matxfer.training.load_model`), or a foundation model's name
            (:data:`~matxfer.transfer.foundation.FOUNDATION_SOURCES`, e.g. ``"chgnet"``).
        num_outputs: Properties the fine-tuned model predicts.
        strategy: A :class:`FreezeSpec` or a string for
            :func:`~matxfer.transfer.freeze.parse_freeze` (default: ``"all"``,
            fine-tune everything, the study's best).
        head: ``"reuse"`` (default; the study's pair-wise transfer keeps the
            pre-trained output layer), ``"new"`` or ``"deeper"``.
        extra_layers: Hidden blocks added by ``head="deeper"``.
        seed: Seed of a fresh head's weights.
        head_outputs: With ``head="reuse"``: the pre-trained outputs (by
            target name) to keep, one per fine-tuning target, e.g. ``["ph"]``
            of a multi-property model.

    Raises:
        MatxferError: Unreadable checkpoint, or a model the strategy cannot
            be applied to.
        ConfigError: Bad strategy or head options (e.g. ``reuse`` with a
            different number of outputs).
    """
    spec = parse_freeze(strategy) if isinstance(strategy, str) else strategy
    if head not in HEAD_MODES:
        raise ConfigError(f"unknown head mode {head!r}; choose one of {list(HEAD_MODES)}")
    source = foundation_source(checkpoint)
    if source is not None:
        check_foundation_options(source, head, exclude_test=False)
        loaded = source.load(num_outputs, seed)
    else:
        loaded = load_model(checkpoint)
    if head_outputs:
        if head != "reuse":
            raise ConfigError(f"head outputs {list(head_outputs)} apply to head 'reuse' only")
        reuse_outputs(loaded, head_outputs, num_outputs)
    elif head == "reuse" and len(loaded.target_names) != num_outputs:
        raise ConfigError(
            f"cannot reuse the pre-trained head: it predicts {len(loaded.target_names)} "
            f"properties {loaded.target_names}, the fine-tuning data has {num_outputs}; use "
            "head 'new' (a fresh head; --head new) or keep the pre-trained output of one "
            "property with --head-output NAME"
        )
    model = prepare_head(loaded.model, head, num_outputs, extra_layers, seed)
    model.train()
    summary = apply_freeze(model, spec)
    return FineTuneModel(model, summary, loaded.graph_config, loaded)


def finetune_config(config: TrainConfig, prepared: FineTuneModel) -> TrainConfig:
    """``config`` with the pre-trained model's graph config and architecture.

    A model of another architecture (a foundation model) keeps ``config`` as it is:
    it builds its own graphs and describes itself in its checkpoints.

    Raises:
        ConfigError: ``config`` asks for other (non-default) graph settings
            than the pre-trained model was trained with.
    """
    if not isinstance(prepared.model, ALIGNN):
        return config
    graph = prepared.graph_config
    if config.graph not in (graph, GraphConfig()):
        raise ConfigError(
            f"the config's graph settings {config.graph.model_dump()} differ from those the "
            f"pre-trained model was trained with {graph.model_dump()}; fine-tuning uses the "
            "latter: drop the graph section from the config"
        )
    architecture = prepared.model.config_dict()  # type: ignore[operator]
    model = ModelSettings(**{k: architecture[k] for k in ModelSettings.model_fields})
    return config.model_copy(update={"graph": graph, "model": model})


def _optimizer_groups(
    multipliers: Mapping[str, float], l2sp: float = 0.0, lr_scale: float = 1.0
) -> Callable[[nn.Module, float, float], list[dict[str, Any]]]:
    def build(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        groups = param_groups(model, lr * lr_scale, multipliers, weight_decay)
        if l2sp:  # L2-SP replaces the decay towards zero of the backbone
            for group in groups:
                group["weight_decay"] = weight_decay if group["name"] == "head" else 0.0
        return groups

    return build


def _model_card_section(record: dict[str, Any]) -> str:
    pt, leakage = record["pretrained"], record["leakage"]
    lines = [
        "",
        "## Transfer",
        "",
        *([f"- source: {pt['description']}"] if pt.get("description") else []),
        f"- fine-tuned from `{pt['checkpoint']}` (sha256 `{pt['sha256']}`), "
        f"pre-trained on {pt['target_names']}",
        f"- strategy: {record['strategy']}; head: {record['head']}"
        + (f" (outputs {record['head_outputs']})" if record["head_outputs"] else ""),
        f"- learning-rate multipliers: {record['lr_multipliers'] or 'none'}"
        + (
            f"; every rate × {record['lr_scale']:g} for this source"
            if record["lr_scale"] != 1.0
            else ""
        ),
        f"- linear probe (head only) first: {record['probe_epochs'] or 'no'} epochs; "
        f"L2-SP strength: {record['l2sp'] or 'off'}",
        f"- trainable parameters: {record['freeze']['num_trainable']:,}, "
        f"frozen: {record['freeze']['num_frozen']:,}",
        "- leakage: "
        + (leakage["summary"] if leakage["audited"] else f"not audited ({leakage['reason']})"),
    ]
    if record["excluded_pretraining"]:
        count = record["excluded_pretraining"]["num_excluded"]
        lines.append(
            f"- pre-training repeated without {count} crystals of the fine-tuning test set"
        )
    return "\n".join(lines) + "\n"


def _start_record(out: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Check ``out`` for this run and write ``transfer.json`` with its settings first.

    ``transfer.json`` is completed when the run ends (:func:`_complete_record`);
    written at the start, it lets a resume compare the transfer settings with
    those of the interrupted run (:data:`RESUME_SETTINGS`).

    Raises:
        ConfigError: A resume with other transfer settings (the message names them).
        MatxferError: See :func:`~matxfer.training.rundir.check_start`.
    """
    check_start(out, resume, overwrite, FINETUNE_SETUP)  # before the audit and any pre-training
    path = out / TRANSFER_FILE
    current = json.loads(json.dumps(strict_json_value(settings)))
    if resume and path.is_file():
        saved = read_transfer_record(out)
        changed = [
            f"{key} {saved[key]!r} -> {current[key]!r}"
            for key in RESUME_SETTINGS
            if key in saved and key in current and saved[key] != current[key]
        ]
        if changed:
            raise ConfigError(
                f"{out}: cannot resume with other transfer settings (changed: "
                f"{'; '.join(changed)}); use the options of the interrupted run "
                f"(see {path}) or a new --out"
            )
    write_transfer_record(out, {"complete": False, **current})


def _complete_record(out: Path, record: dict[str, Any]) -> None:
    """Write the complete ``transfer.json`` and add the Transfer section to the model card."""
    write_transfer_record(out, {"complete": True, **record})
    card = out / MODEL_CARD_FILE
    if card.is_file():
        text = retitle_model_card(card.read_text(), record["pretrained"].get("source"))
        write_text_atomic(card, text + _model_card_section(record))


@locks_directory("out", purpose="fine-tuning run")
def finetune(
    data: str | Path | DataSpec | Splits,
    pretrained: str | Path,
    out: str | Path,
    strategy: FreezeSpec | str = "all",
    head: HeadMode | None = None,
    lr_multipliers: Mapping[str, float] | str | None = None,
    *,
    test: str | Path | None = None,
    config: TrainConfig | None = None,
    head_outputs: Sequence[str] | None = None,
    extra_layers: int = 2,
    pretrain_data: str | Path | Sequence[Record] | None = None,
    exclude_test_structures: bool = False,
    excluded_dir: str | Path | None = None,
    probe_epochs: int = 0,
    l2sp: float = 0.0,
    audit: bool = True,
    data_dir: str | Path | None = None,
    trial: int | None = None,
    size: int | None = None,
    target_key: str | None = None,
    format: str | None = None,
    skip_invalid: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Fine-tune a pre-trained model on ``data``; leaves a run directory like ``train``'s.

    Besides :func:`matxfer.training.train`'s outputs, ``out`` holds
    ``transfer.json``: the pre-trained checkpoint (path, sha256, targets),
    strategy, head, learning-rate multipliers, frozen/trainable counts and the
    leakage audit; ``MODEL_CARD.md`` gets a "Transfer" section.

    Args:
        data: Fine-tuning data (:class:`~matxfer.training.inputs.DataSpec`), or its
            dataset (file, folder, or named dataset under ``data_dir``) with the
            data options (``test``, ``data_dir`` to ``skip_invalid``) given loose, or
            prepared :class:`~matxfer.training.inputs.Splits` (an ensemble's members
            share one split), used as in ``train``.
        pretrained: Pre-training run directory or checkpoint file, or a foundation
            model by name (``"chgnet"``, see :mod:`~matxfer.transfer.foundation`).
        out: Run directory (created).
        strategy: Freezing strategy (see :func:`~matxfer.transfer.freeze.parse_freeze`;
            default ``"all"``: everything trains).
        head: ``reuse``, ``new`` or ``deeper`` (see :mod:`~matxfer.transfer.heads`;
            default: ``reuse``, or ``new`` for a foundation model).
        lr_multipliers: Per layer-group factors on the learning rate,
            ``{"embedding": 0.1, "head": 10}`` or ``"embedding=0.1,head=10"``.
        test: Test dataset (default as in ``train``).
        config: Training config (default: the ``paper`` profile); its graph
            and model sections are replaced by the pre-trained model's.
        head_outputs: Pre-trained outputs to reuse, by name (multi-property models).
        extra_layers: Hidden blocks added by ``head="deeper"``.
        pretrain_data: The pre-training dataset (or its records), for the
            leakage audit when the pre-training run does not record it.
        exclude_test_structures: First repeat the pre-training without the
            crystals of the fine-tuning test set (into
            ``out/pretrain_excluding_test``, reused when finished), then
            fine-tune from it. Needs a pre-training run directory.
        excluded_dir: Where that pre-training is trained, or found when finished on
            the same records (default: ``out/pretrain_excluding_test``); the members
            of an ensemble, which share one test set, share one.
        probe_epochs: Train only the head for this many epochs first, then
            the layers ``strategy`` trains (LP-FT, see
            :class:`~matxfer.transfer.callbacks.LinearProbe`; default ``0``: no probe).
        l2sp: L2-SP strength: pull the backbone towards its pre-trained
            weights with this factor instead of weight decay towards zero
            (see :class:`~matxfer.transfer.callbacks.L2SP`; default ``0``: off).
        audit: Run the leakage audit (default: ``True``).
        data_dir, trial, size, target_key, format, skip_invalid: Data options
            of the fine-tuning data, as in ``train``.
        resume: Continue an interrupted fine-tuning run in ``out`` (with the
            same strategy, head, head outputs and learning-rate multipliers).
        overwrite: Replace what a non-empty ``out`` holds (an old run); a
            finished ``pretrain_excluding_test`` in it is kept for reuse.
        progress: Progress bars (default: when stderr is a terminal).
        callbacks: Extra Lightning callbacks.

    Returns:
        The :class:`~matxfer.training.TrainResult`.

    Raises:
        MatxferError: Missing checkpoint, bad strategy/head/multipliers, bad
            data, a non-empty ``out`` without ``resume`` or ``overwrite``, or a
            resume with other settings.
    """
    from matxfer.training.run import train
    from matxfer.transfer.callbacks import recipe_callbacks  # imports Lightning, like train

    spec = parse_freeze(strategy) if isinstance(strategy, str) else strategy
    source = foundation_source(pretrained)
    head = head or ("new" if source is not None else "reuse")
    if head not in HEAD_MODES:  # checked again later; here before any data is read
        raise ConfigError(f"unknown head mode {head!r}; choose one of {list(HEAD_MODES)}")
    if source is not None:
        check_foundation_options(source, head, exclude_test_structures)
    multipliers = (
        parse_lr_multipliers(lr_multipliers)
        if isinstance(lr_multipliers, str)
        else dict(lr_multipliers or {})
    )
    config = config or TrainConfig(profile="paper")
    out = Path(out)
    settings = {
        "strategy": str(spec),
        "head": head,
        "head_outputs": list(head_outputs or []),
        "extra_layers": extra_layers if head == "deeper" else None,
        "lr_multipliers": multipliers,
        "probe_epochs": probe_epochs,
        "l2sp": l2sp,
    }
    _start_record(out, settings, resume, overwrite)
    checkpoint = resolve_checkpoint(pretrained) if source is None else Path(source.name)
    splits = (  # read once; train records splits.spec
        data
        if isinstance(data, Splits)
        else prepare_splits(
            data, config, test, data_dir, trial, size, target_key, format, skip_invalid
        )
    )
    excluded = None
    if exclude_test_structures:
        excluded = pretrain_excluding(
            checkpoint,
            splits.test,
            out / EXCLUDED_PRETRAINING_DIR if excluded_dir is None else Path(excluded_dir),
            progress=progress,
        )
        checkpoint = excluded.checkpoint
    prepared = load_for_finetuning(
        checkpoint, len(splits.target_names), spec, head, extra_layers, config.seed, head_outputs
    )
    recipe = recipe_callbacks(prepared.model, spec, probe_epochs, l2sp)
    ft_config = finetune_config(config, prepared)
    lr_scale = source.lr_scale if source is not None else 1.0
    record = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pretrained": source.record(prepared.pretrained)
        if source is not None
        else {
            "checkpoint": str(checkpoint.resolve()),
            **shipped_record(checkpoint),
            "sha256": checkpoint_sha256(checkpoint),
            "target_names": prepared.pretrained.target_names,
            "epoch": prepared.pretrained.epoch,
            "graph_config": prepared.graph_config.model_dump(mode="json"),
            "model_config": prepared.pretrained.info.get("model_config"),
        },
        **settings,
        "lr_scale": lr_scale,
        "frozen_groups": sorted(spec.frozen),
        "head_scope": spec.head_scope,
        "freeze": {
            "num_trainable": prepared.freeze.num_trainable,
            "num_frozen": prepared.freeze.num_frozen,
            "trainable": prepared.freeze.trainable,
            "frozen": prepared.freeze.frozen,
            "frozen_norms": prepared.freeze.frozen_norms,
        },
        "excluded_pretraining": None
        if excluded is None
        else {
            "run_dir": str(excluded.run_dir.resolve()),
            "reused": excluded.reused,
            "num_excluded": len(excluded.excluded),
            "excluded": excluded.excluded,
        },
        "leakage": source.leakage_entry()
        if source is not None
        else leakage_entry(checkpoint, splits, pretrain_data, splits.spec and splits.spec.data_dir)
        if audit
        else {"audited": False, "reason": "not requested"},
    }
    with warnings.catch_warnings():
        # Frozen normalisation layers are in eval mode on purpose (running statistics kept).
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        result = train(
            splits,
            out,
            config=ft_config,
            resume=resume,
            progress=progress,
            callbacks=[*recipe, *callbacks],
            model=prepared.model,
            param_groups=_optimizer_groups(multipliers, l2sp, lr_scale),
            keep=FINETUNE_SETUP,
            finish=lambda _: _complete_record(out, record),  # before done.json
        )
    return result
