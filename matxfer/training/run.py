"""``train``: records → graphs → Lightning fit → best checkpoint → evaluated run directory.

A run directory holds ``best.ckpt`` (lowest validation MAE: the weights every
reported number comes from), ``last.ckpt`` (written atomically every epoch,
for ``resume``), ``config.yaml``, ``metrics.json``, ``predictions_test.csv``,
``parity.png``, ``learning_curve.png``, ``MODEL_CARD.md``, ``logs/``
(CSV and TensorBoard) and, written last, ``done.json`` (see
:mod:`~matxfer.training.rundir`: the directory lock, new/resumed/overwritten
runs, :func:`is_finished`).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch import nn

from matxfer.data.transforms import TargetTransform
from matxfer.locking import DirectoryLock
from matxfer.models import ALIGNN
from matxfer.ranks import is_secondary_rank
from matxfer.training.averaging import EMAWeights
from matxfer.training.checkpoint import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    atomic_torch_save,
    read_checkpoint,
)
from matxfer.training.config import TrainConfig
from matxfer.training.datamodule import GraphDataModule
from matxfer.training.distributed import end_secondary_rank, make_strategy, share_threads
from matxfer.training.inputs import DataSpec, Splits, labelled_graphs, prepare_splits
from matxfer.training.module import ParamGroups, PropertyModule
from matxfer.training.outputs import (
    data_hash,
    epoch_log,
    keep_csv_log,
    plot_learning_curve,
    plot_parity,
    predictions_frame,
    write_csv,
    write_model_card,
)
from matxfer.training.predictor import labels_of, predict_graphs, split_metrics
from matxfer.training.rundir import (
    CONFIG_FILE,
    CSV_LOG_DIR,
    CSV_LOGGER,
    LEARNING_CURVE_PLOT,
    LOG_DIR,
    MODEL_CARD_FILE,
    PARITY_PLOT,
    PREDICTIONS_TEST_FILE,
    TENSORBOARD_LOGGER,
    check_run_dir,
    check_same_data,
    mark_finished,
    saved_threads,
    write_config,
    write_metrics,
    write_run_info,
)
from matxfer.training.rundir import is_finished as is_finished  # re-exported
from matxfer.training.threads import use_idle_cores

#: Lightning messages that say nothing actionable in matxfer's setting.
_QUIET = [
    r".*does not have many workers.*",
    r".*exists and is not empty.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    # Lightning 2.6 calling a torch 2.13 deprecation inside its own batching
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O whose writes are atomic (temporary file + rename), so
    ``kill -9`` while saving leaves the previous ``last.ckpt`` intact."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        atomic_torch_save(checkpoint, path)


class EpochTimer(Callback):
    """Logs ``epoch_seconds``: wall time of each training epoch, validation included.

    The running total is kept in the checkpoint (``total_seconds``), so a run resumed
    after a kill still knows how long its earlier attempts trained (see
    :func:`trained_seconds`).
    """

    def __init__(self) -> None:
        self.total_seconds = 0.0
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self._start is not None
        seconds = time.perf_counter() - self._start
        self.total_seconds += seconds
        self._start = None
        pl_module.log("epoch_seconds", seconds, on_epoch=True, sync_dist=True)

    def state_dict(self) -> dict[str, float]:
        # Checkpoints are written after validation, inside the epoch: count it so far.
        running = 0.0 if self._start is None else time.perf_counter() - self._start
        return {"total_seconds": self.total_seconds + running}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.total_seconds = float(state_dict.get("total_seconds", 0.0))


def trained_seconds(checkpoint: Path) -> float:
    """Seconds of training epochs a checkpoint's run had done (0 when it does not say)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    timer = state.get("callbacks", {}).get(EpochTimer.__qualname__, {})
    return float(timer.get("total_seconds", 0.0))


class _DropLightningChatter(logging.Filter):
    """Hide Lightning's advertisements and internal notes; keep device and stop messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("💡", "Loading `train_dataloader`"))


def _quiet_lightning() -> None:
    target = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningChatter) for f in target.filters):
        target.addFilter(_DropLightningChatter())


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        run_dir: The run directory.
        best_checkpoint: ``run_dir/best.ckpt``.
        metrics: Content of ``metrics.json``.
        config: The resolved config.
    """

    run_dir: Path
    best_checkpoint: Path
    metrics: dict[str, Any]
    config: TrainConfig


def build_model(config: TrainConfig, num_outputs: int) -> ALIGNN:
    """The ALIGNN a config describes, initialised from the config's seed."""
    pl.seed_everything(config.seed, workers=True, verbose=False)
    return ALIGNN(num_outputs=num_outputs, **dict(config.model))  # every field, cutoff too


def make_trainer(
    out: Path, config: TrainConfig, progress: bool, callbacks: Sequence[Callback] = ()
) -> pl.Trainer:
    """Lightning trainer with atomic checkpoints of the best and the last epoch, on
    ``config.devices`` data-parallel processes (see :mod:`~matxfer.training.distributed`),
    with an average of the weights when ``config.ema_decay`` is set
    (:mod:`~matxfer.training.averaging`)."""
    _quiet_lightning()
    best = ModelCheckpoint(
        dirpath=out,
        filename="best",
        monitor="val_mae",
        mode="min",
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # A separate unmonitored callback: ModelCheckpoint(save_last=True) skips last.ckpt in
    # epochs that do not improve the monitored metric (Lightning 2.6), breaking resume.
    last = ModelCheckpoint(
        dirpath=out,
        filename="last",
        monitor=None,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    stoppers = []
    if config.early_stopping_patience is not None:
        stoppers.append(
            EarlyStopping(monitor="val_mae", mode="min", patience=config.early_stopping_patience)
        )
    if config.max_minutes is not None:
        # Checked at epoch ends, so every epoch trained is also validated.
        stoppers.append(Timer(timedelta(minutes=config.max_minutes), interval="epoch"))
    # Validation, both checkpoints' weights and the end of training use the average.
    averaging = [] if config.ema_decay is None else [EMAWeights(config.ema_decay)]
    return pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        precision=config.precision or "32-true",
        strategy=make_strategy(config, _trains_on_cpu(config)),
        # The data module shares each shuffled epoch among the processes itself.
        use_distributed_sampler=False,
        deterministic="warn",
        callbacks=[best, last, EpochTimer(), *averaging, *stoppers, *callbacks],
        logger=[
            # Flushed every epoch so a killed run keeps its log up to its last checkpoint.
            CSVLogger(out / LOG_DIR, name=CSV_LOGGER, version="", flush_logs_every_n_steps=1),
            TensorBoardLogger(
                out / LOG_DIR, name=TENSORBOARD_LOGGER, version="", default_hp_metric=False
            ),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )


def stop_reason(trainer: pl.Trainer) -> str:
    """Why training ended: ``diverged``, ``early_stopping``, ``time_budget`` or ``max_epochs``."""
    stoppers = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    # By name: EarlyStoppingReason is missing from older Lightning releases.
    non_finite = any(
        getattr(getattr(c, "stopping_reason", None), "name", "") == "NON_FINITE_METRIC"
        for c in stoppers
    )
    if non_finite or getattr(trainer.lightning_module, "diverged_at", None) is not None:
        return "diverged"
    if any(c.stopped_epoch > 0 for c in stoppers):
        return "early_stopping"
    if any(isinstance(c, Timer) and c.time_remaining() <= 0 for c in trainer.callbacks):
        return "time_budget"
    return "max_epochs"


def _write_outputs(
    out: Path,
    module: PropertyModule,
    splits: Splits,
    graphs: dict[str, list],
    config: TrainConfig,
    info: dict[str, Any],
    best_epoch: int | None,
    epochs_trained: int,
    stopped_by: str,
) -> dict[str, Any]:
    """Evaluate the best weights on every split and write metrics, predictions and plots."""
    names, transform = splits.target_names, module.transform
    metrics: dict[str, Any] = {
        "targets": names,
        "target_transform": transform.kind,
        "best_epoch": best_epoch,
        "epochs_trained": epochs_trained,
        "stopped_by": stopped_by,
    }
    outputs: dict[str, Any] = {}
    for split, records in splits.parts().items():
        if not records:
            continue
        raw = predict_graphs(
            module.model,
            graphs[split],
            batch_size=config.batch_size * 4,
            ids=[r.id for r in records],
            source=f"the best checkpoint ({out / BEST_CHECKPOINT})",
        )
        predictions = transform.inverse(raw.reshape(len(records), -1))
        labels = labels_of(records, names)
        outputs[split] = (labels, predictions)
        metrics[split] = split_metrics(labels, predictions, transform, names)
    write_metrics(out, metrics)
    if "test" in outputs:
        labels, predictions = outputs["test"]
        frame = predictions_frame([r.id for r in splits.test], predictions, names, labels)
        write_csv(frame, out / PREDICTIONS_TEST_FILE)
        plot_parity(out / PARITY_PLOT, labels, predictions, names, metrics["test"])
    plot_learning_curve(out / LEARNING_CURVE_PLOT, epoch_log(out / CSV_LOG_DIR), best_epoch)
    write_model_card(out / MODEL_CARD_FILE, (out / CONFIG_FILE).read_text(), metrics, info)
    return metrics


def _trains_on_cpu(config: TrainConfig) -> bool:
    """Whether the run trains on the CPU: no GPU, or the config asks for the CPU."""
    return config.accelerator == "cpu" or not torch.cuda.is_available()


def train(
    data: str | Path | DataSpec | Splits,
    out: str | Path,
    test: str | Path | None = None,
    config: TrainConfig | None = None,
    *,
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
    model: nn.Module | None = None,
    param_groups: ParamGroups | None = None,
    keep: Collection[str] = (),
    finish: Callable[[TrainResult], None] | None = None,
) -> TrainResult:
    """Train an ALIGNN model and leave an evaluated run directory.

    The run holds ``out``'s lock throughout (a second process on the same
    ``out`` is refused) and writes ``done.json`` last (:func:`is_finished`).
    With ``config.devices`` > 1 it trains data-parallel (DDP): Lightning re-runs
    the command for ranks 1 to N-1, which train alongside and exit when
    training ends (``SystemExit(0)``); rank 0 returns the result. A script
    calling :func:`train` is re-run from the top by those ranks.

    Args:
        data: What to train on (:class:`~matxfer.training.inputs.DataSpec`); or its
            ``data`` (a dataset file/directory, a named dataset such as ``ph``
            under ``data_dir``) with the other options (``test`` to
            ``skip_invalid``) given loose; or prepared
            :class:`~matxfer.training.inputs.Splits` (e.g. merged multi-property
            records), used as they are: the data options are then ignored and
            ``run_info.json`` records the spec the splits carry, if any.
        out: Run directory (created).
        test: Test dataset; default: the named dataset's fixed test set, else a
            seeded ``config.test_fraction`` of ``data``.
        config: Resolved config (default: the ``paper`` profile).
        data_dir: Where named datasets live.
        trial: The study's trial (named datasets, with ``size``).
        size: Training + validation records to use.
        target_key: Which target the records carry.
        format: File format, when the suffix does not tell.
        skip_invalid: Skip invalid records instead of failing.
        resume: Continue the interrupted run in ``out`` from ``last.ckpt``.
        overwrite: Delete what a non-empty ``out`` holds (an old run) and start
            a new run there; without it, a non-empty ``out`` is refused.
        progress: Progress bars (default: when stderr is a terminal).
        callbacks: Extra Lightning callbacks.
        model: A prepared model (e.g. pre-trained, head replaced, layers frozen)
            to train instead of a new one built from ``config.model``; it must
            expect graphs built with ``config.graph``. Its ``config_dict()`` is
            what the checkpoints store.
        param_groups: Optimizer parameter groups with their own learning rates
            (see :class:`~matxfer.training.module.PropertyModule`).
        keep: Names in ``out`` a caller wrote for this run before calling
            (e.g. fine-tuning's ``transfer.json``): not an old run, never cleared.
        finish: Called with the result after the outputs are written and before
            the run is marked finished (fine-tuning completes its records).

    Raises:
        MatxferError: Bad data or options, a non-empty ``out`` without
            ``resume`` or ``overwrite``, another process using ``out``, or a
            resume with different config or data.
    """
    config = config or TrainConfig(profile="paper")
    out = Path(out)
    progress = sys.stderr.isatty() if progress is None else progress
    with DirectoryLock(out, purpose="training run"):
        check_run_dir(out, config, resume, overwrite, keep)
        threads = None
        secondary = is_secondary_rank()  # a DDP rank > 0: rank 0 prepared ``out``
        if _trains_on_cpu(config):
            # Float sums depend on the thread count: a resumed run keeps the one it started;
            # DDP ranks > 0 take the one rank 0 recorded before starting them.
            threads = use_idle_cores(saved_threads(out) if resume or secondary else None)
            share_threads(threads, config.devices)
        if isinstance(data, Splits):
            splits = data
        else:
            splits = prepare_splits(
                data, config, test, data_dir, trial, size, target_key, format, skip_invalid
            )
        info = {
            "source": splits.source,
            "test_source": splits.test_source,
            "counts": splits.counts,
            "skipped": splits.skipped,
            "cpu_threads": threads,  # of all DDP processes together; None: on the GPU
            "data_hash": data_hash(splits.train + splits.val + splits.test),
            "split_hashes": {split: data_hash(rs) for split, rs in splits.parts().items()},
            # Lets fine-tuning re-resolve the records this run trained on (leakage audit).
            "data_spec": None if splits.spec is None else splits.spec.to_dict(),
        }
        if not secondary:
            check_same_data(out, info, resume)
            write_config(out, config)
            write_run_info(out, info)
            if resume:
                keep_csv_log(out / CSV_LOG_DIR)
        metrics = _fit(out, config, splits, info, resume, progress, callbacks, model, param_groups)
        result = TrainResult(out, out / BEST_CHECKPOINT, metrics, config)
        if finish is not None:
            finish(result)
        mark_finished(out)
    return result


def _fit(
    out: Path,
    config: TrainConfig,
    splits: Splits,
    info: dict[str, Any],
    resume: bool,
    progress: bool,
    callbacks: Sequence[Callback],
    model: nn.Module | None,
    param_groups: ParamGroups | None,
) -> dict[str, Any]:
    """Build graphs and the module, fit, test the best weights and write the outputs."""
    graphs = {  # a prepared model of another architecture builds its own inputs
        split: labelled_graphs(records, splits.target_names, config.graph, progress, model)
        for split, records in splits.parts().items()
    }
    transform = TargetTransform(config.target_transform, len(splits.target_names))
    transform.fit(labels_of(splits.train, splits.target_names), splits.target_names)
    if model is None:
        model = build_model(config, len(splits.target_names))
    else:
        pl.seed_everything(config.seed, workers=True, verbose=False)
    module = PropertyModule(
        model,
        transform,
        splits.target_names,
        config.graph,
        loss=config.loss,
        huber_delta=config.huber_delta,
        lr=config.lr,
        weight_decay=config.weight_decay,
        scheduler=config.scheduler,
        pct_start=config.pct_start,
        param_groups=param_groups,
    )
    datamodule = GraphDataModule(
        graphs["train"],
        graphs["val"],
        graphs["test"],
        config.batch_size,
        config.seed,
        config.num_workers,
    )
    with warnings.catch_warnings():
        for pattern in _QUIET:
            warnings.filterwarnings("ignore", message=pattern)
        trainer = make_trainer(out, config, progress, callbacks)
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=out / LAST_CHECKPOINT if resume else None
        )
        best = read_checkpoint(out / BEST_CHECKPOINT)
        module.load_state_dict(best["state_dict"], strict=True)
        if graphs["test"]:
            trainer.test(module, datamodule=datamodule, verbose=False)
    end_secondary_rank(trainer)  # outputs are rank 0's, on the full splits
    return _write_outputs(
        out,
        module,
        splits,
        graphs,
        config,
        info,
        best.get("epoch"),
        trainer.current_epoch,
        stop_reason(trainer),
    )
