"""What the ``matxfer`` commands share: typer option aliases, the consoles, the metrics print.

Declared once here so that ``train`` (:mod:`matxfer.cli`) and the transfer commands
(:mod:`matxfer.cli_transfer`) take the same options with the same help.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

TestOption = Annotated[
    Path | None,
    typer.Option(
        help="Test dataset (default: a named dataset's fixed test set, else 10% of DATA)."
    ),
]
ProfileOption = Annotated[str | None, typer.Option(help="paper (the study) or fast.")]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML config file.")]
DataDirOption = Annotated[Path | None, typer.Option(help="Folder of named datasets.")]
TrialOption = Annotated[int | None, typer.Option(help="The study's trial (with --size).")]
SizeOption = Annotated[int | None, typer.Option(help="Training + validation records.")]
TargetKeyOption = Annotated[str | None, typer.Option(help="Field holding the target.")]
FormatOption = Annotated[str | None, typer.Option(help="alignn, idprop, matbench, extxyz.")]
EpochsOption = Annotated[int | None, typer.Option(help="Maximum epochs.")]
EnsembleOption = Annotated[
    int | None,
    typer.Option(
        help="K models on one split (seeds SEED..SEED+K-1: initialisation, batch order) "
        "into OUT/member-<k>, for `evaluate|predict OUT DATA --interval 0.9`."
    ),
]
BatchSizeOption = Annotated[int | None, typer.Option(help="Structures per (global) batch.")]
LrOption = Annotated[float | None, typer.Option(help="Peak learning rate.")]
ResumeOption = Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")]
OverwriteOption = Annotated[
    bool, typer.Option(help="Delete what a non-empty --out holds and start a new run there.")
]
SkipInvalidOption = Annotated[bool, typer.Option(help="Skip invalid records.")]
ValFractionOption = Annotated[float | None, typer.Option(help="Validation share.")]
SamplingOption = Annotated[str | None, typer.Option(help="random, stratified or normal.")]
ProgressOption = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bars (default: tty).")
]
DevicesOption = Annotated[
    int | None, typer.Option(help="Data-parallel processes (GPUs or CPU processes), with DDP.")
]
_DDP_HELP = "auto (DDP when --devices > 1) or ddp."
DdpStrategyOption = Annotated[str | None, typer.Option("--strategy", help=_DDP_HELP)]
# finetune's --strategy names the layers to train: there the DDP choice is --ddp-strategy.
FinetuneDdpStrategyOption = Annotated[str | None, typer.Option("--ddp-strategy", help=_DDP_HELP)]

# Markup off: ids, paths and target names are user text, and "[...]" in them must print
# as written, not be parsed as rich markup (a stray "[/b]" would raise MarkupError).
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)


def print_metrics(metrics: dict, splits: tuple[str, ...], run_dir: Path | None = None) -> None:
    """The metrics table; for a new run, its best epoch and how training ended."""
    from matxfer.training.outputs import metrics_table, stop_description

    console.print(metrics_table(metrics, splits))
    if run_dir is not None:
        console.print(
            f"best epoch {metrics['best_epoch']} of {metrics['epochs_trained']} (training "
            f"ended by {stop_description(metrics)}); run saved in {run_dir}"
        )


def _reflowed(doc: str) -> str:
    """``doc`` with each prose paragraph on one line, so the terminal wraps it (typer keeps
    a docstring's line breaks); a paragraph with indented lines (examples) keeps its own."""
    paragraphs = doc.split("\n\n")
    return "\n\n".join(
        p if any(line.startswith(" ") for line in p.splitlines()) else " ".join(p.split("\n"))
        for p in paragraphs
    )


def reflow_help(app: typer.Typer) -> None:
    """Reflow the docstring help of every command of ``app`` and of its sub-apps."""
    for command in app.registered_commands:
        if command.help is None and command.callback is not None:
            command.help = _reflowed(inspect.getdoc(command.callback) or "")
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
