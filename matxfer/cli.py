"""The ``matxfer`` command line.

Commands are thin: they parse options, call the Python API, and print with
rich. Every :class:`~matxfer.errors.MatxferError` becomes one readable
error line (plus its listed problems) and a non-zero exit; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from matxfer.errors import DataError, MatxferError

app = typer.Typer(
    name="matxfer",
    help="Transfer learning for materials property prediction (ALIGNN).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)

#: At most this many problem lines are printed; the rest are counted.
MAX_PROBLEM_LINES = 200


def report_error(error: MatxferError) -> None:
    """Print a user-facing error: one line, then one line per problem."""
    err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
    if isinstance(error, DataError):
        for problem in error.problems[:MAX_PROBLEM_LINES]:
            err_console.print(f"  {problem}", highlight=False, soft_wrap=True, markup=False)
        hidden = len(error.problems) - MAX_PROBLEM_LINES
        if hidden > 0:
            err_console.print(f"  ... and {hidden} more problems")


# ---------------------------------------------------------------- data


@data_app.command("check")
def data_check(
    path: Annotated[
        str,
        typer.Argument(
            help="Dataset file, id_prop folder, folder with "
            "pool.json.gz, or a named dataset (fe, ph, ...)."
        ),
    ],
    format: Annotated[str | None, typer.Option(help="alignn, idprop, matbench, extxyz.")] = None,
    target_key: Annotated[str | None, typer.Option(help="Field holding the target.")] = None,
    skip_invalid: Annotated[
        bool, typer.Option(help="Drop invalid records and list them instead of failing.")
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder of named datasets (default: $MATXFER_DATA_DIR or ~/.cache/matxfer)."
        ),
    ] = None,
) -> None:
    """Read and validate a dataset: a summary if it is valid, else every problem (exit 2)."""
    from matxfer.data.registry import check_dataset
    from matxfer.data.summary import summary_table

    try:
        datasets = check_dataset(path, format, target_key, skip_invalid, data_dir)
    except MatxferError as error:  # handled here too, so the command behaves the same when
        report_error(error)  # invoked without main() (tests, embedding)
        raise typer.Exit(2) from None
    except Exception as error:  # never a traceback for a bad input file
        report_error(DataError(f"{path}: could not be checked ({type(error).__name__}: {error})"))
        raise typer.Exit(2) from None
    for dataset in datasets:
        console.print(summary_table(dataset.summary(), f"{dataset.source}"))
        if dataset.duplicates_dropped:
            console.print(f"dropped {dataset.duplicates_dropped} exact duplicate records")
        if dataset.skipped:
            err_console.print(f"[yellow]skipped {len(dataset.skipped)} invalid records:[/]")
            for problem in dataset.skipped[:MAX_PROBLEM_LINES]:
                err_console.print(f"  {problem}", highlight=False, soft_wrap=True, markup=False)
    console.print("[green]OK[/]: " + ", ".join(f"{len(d)} records" for d in datasets))


# ---------------------------------------------------------------- train / evaluate / predict


def _print_metrics(metrics: dict, splits: tuple[str, ...]) -> None:
    """One table row per split, target and unit system."""
    from rich.table import Table

    table = Table("split", "target", "units", "n", "R²", "MAE", "RMSE")
    for split in splits:
        for name, units in metrics.get(split, {}).items():
            for unit, stats in units.items():
                table.add_row(split, name, unit, str(stats["n"]), f"{stats['r2']:.4f}",
                              f"{stats['mae']:.4g}", f"{stats['rmse']:.4g}")
    console.print(table)


@app.command()
def train(
    data: Annotated[str, typer.Argument(help="Dataset file/folder, or a named dataset (ph, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")],
    test: Annotated[Path | None, typer.Option(help="Test dataset (default: a named dataset's "
                                              "fixed test set, else 10% of DATA).")] = None,
    profile: Annotated[str | None, typer.Option(help="paper (the study) or fast.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of splits, init and shuffling.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Folder of named datasets.")] = None,
    trial: Annotated[int | None, typer.Option(help="The study's trial (with --size).")] = None,
    size: Annotated[int | None, typer.Option(help="Training + validation records.")] = None,
    target_key: Annotated[str | None, typer.Option(help="Field holding the target.")] = None,
    format: Annotated[str | None, typer.Option(help="alignn, idprop, matbench, extxyz.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Structures per batch.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Skip invalid records.")] = False,
    val_fraction: Annotated[float | None, typer.Option(help="Validation share.")] = None,
    sampling: Annotated[str | None, typer.Option(help="random, stratified or normal.")] = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress",
                                                  help="Progress bars (default: tty).")] = None,
) -> None:
    """Train an ALIGNN model; writes checkpoints, metrics, predictions and plots to --out."""
    from matxfer.training import config_for_run
    from matxfer.training import train as run_training

    flags = {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
             "val_fraction": val_fraction, "sampling": sampling}
    resolved = config_for_run(config, profile, flags, out, resume)
    result = run_training(
        data, out, test, resolved, data_dir=data_dir, trial=trial, size=size,
        target_key=target_key, format=format, skip_invalid=skip_invalid, resume=resume,
        progress=progress,
    )
    _print_metrics(result.metrics, ("train", "val", "test"))
    console.print(f"best epoch {result.metrics['best_epoch']}; run saved in {result.run_dir}")


RunArgument = Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")]
FormatOption = Annotated[str | None, typer.Option(help="alignn, idprop, matbench, extxyz.")]
TargetKeyOption = Annotated[str | None, typer.Option(help="Field holding the target.")]
SkipInvalidOption = Annotated[bool, typer.Option(help="Skip invalid records.")]


@app.command()
def evaluate(
    run: RunArgument,
    data: Annotated[Path, typer.Argument(help="Labelled dataset file or folder.")],
    out: Annotated[Path | None, typer.Option(help="JSON file (default: RUN/eval_<DATA>.json).")]
    = None,
    format: FormatOption = None,
    target_key: TargetKeyOption = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Metrics (R², MAE, RMSE) of a trained model on a labelled dataset."""
    from matxfer.training import evaluate as run_evaluation

    result = run_evaluation(run, data, out, format, target_key, skip_invalid)
    _print_metrics({"data": result["metrics"]}, ("data",))
    console.print(f"{result['n']} records; metrics saved to {result['output']}")


@app.command()
def predict(
    run: RunArgument,
    data: Annotated[Path, typer.Argument(help="Dataset, or structure file(s): CIF, POSCAR.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file of predictions.")],
    format: FormatOption = None,
    target_key: TargetKeyOption = None,
    skip_invalid: SkipInvalidOption = False,
) -> None:
    """Predictions in original units for every structure of DATA."""
    from matxfer.training import predict as run_prediction

    frame = run_prediction(run, data, out, format, target_key, skip_invalid)
    console.print(f"{len(frame)} predictions written to {out}")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except MatxferError as error:
        report_error(error)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
