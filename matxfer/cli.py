"""The ``matxfer`` command line.

Commands are thin: they parse options, call the Python API, and print with
rich. Every :class:`~matxfer.errors.MatxferError` becomes one readable
error line (plus its listed problems) and a non-zero exit; no traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from matxfer import __version__, cli_models, cli_rank, cli_transfer
from matxfer.cli_options import (
    BatchSizeOption,
    ConfigOption,
    DataDirOption,
    DdpStrategyOption,
    DevicesOption,
    EnsembleOption,
    EpochsOption,
    FormatOption,
    LrOption,
    OverwriteOption,
    ProfileOption,
    ProgressOption,
    ResumeOption,
    SamplingOption,
    SizeOption,
    SkipInvalidOption,
    TargetKeyOption,
    TestOption,
    TrialOption,
    ValFractionOption,
    console,
    err_console,
    print_metrics,
    reflow_help,
)
from matxfer.errors import DataError, MatxferError, Problem
from matxfer.study.commands import study_app

app = typer.Typer(
    name="matxfer",
    help="Transfer learning for materials property prediction (ALIGNN).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        console.print(f"matxfer {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Transfer learning for materials property prediction (ALIGNN)."""


data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")

#: At most this many problem lines are printed; the rest are counted.
MAX_PROBLEM_LINES = 200
#: A reason shared by many records is printed for this many, then counted.
SAME_REASON_LINES = 3


def problem_lines(problems: list[Problem]) -> list[str]:
    """One line per problem, except that a reason many records share (a whole file
    without the target field, say) is shown for a few and then counted."""
    shown: Counter[str] = Counter()
    lines = []
    for problem in problems:
        shown[problem.reason] += 1
        if shown[problem.reason] <= SAME_REASON_LINES:
            lines.append(f"  {problem}")
    hidden = len(lines) - MAX_PROBLEM_LINES
    lines = lines[:MAX_PROBLEM_LINES]
    for reason, count in shown.items():
        if count > SAME_REASON_LINES:
            lines.append(f"  ... and {count - SAME_REASON_LINES} more records: {reason}")
    if hidden > 0:
        lines.append(f"  ... and {hidden} more problems")
    return lines


def _print_problems(problems: list[Problem]) -> None:
    for line in problem_lines(problems):
        err_console.print(line, highlight=False, soft_wrap=True)


def report_error(error: MatxferError) -> None:
    """Print a user-facing error: one line, then one line per problem."""
    err_console.print(
        Text.assemble(("error:", "bold red"), f" {error}"), highlight=False, soft_wrap=True
    )
    if isinstance(error, DataError):
        _print_problems(error.problems)


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
    format: FormatOption = None,
    target_key: TargetKeyOption = None,
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
            err_console.print(
                Text(f"skipped {len(dataset.skipped)} invalid records:", style="yellow")
            )
            _print_problems(dataset.skipped)
    counts = ", ".join(f"{len(d)} records" for d in datasets)
    console.print(Text.assemble(("OK", "green"), f": {counts}"))


# ---------------------------------------------------------------- train / evaluate / predict


@app.command()
def train(
    data: Annotated[str, typer.Argument(help="Dataset file/folder, or a named dataset (ph, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")],
    test: TestOption = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(help="Seed of splits, init and shuffling.")] = None,
    data_dir: DataDirOption = None,
    trial: TrialOption = None,
    size: SizeOption = None,
    target_key: TargetKeyOption = None,
    format: FormatOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    resume: ResumeOption = False,
    overwrite: OverwriteOption = False,
    skip_invalid: SkipInvalidOption = False,
    val_fraction: ValFractionOption = None,
    sampling: SamplingOption = None,
    progress: ProgressOption = None,
    devices: DevicesOption = None,
    ddp_strategy: DdpStrategyOption = None,
    ensemble: EnsembleOption = None,
) -> None:
    """Train an ALIGNN model; writes checkpoints, metrics, predictions and plots to --out."""
    from matxfer.training import DataSpec, config_for_run
    from matxfer.training import train as run_training

    flags = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "val_fraction": val_fraction,
        "sampling": sampling,
    }
    flags.update(devices=devices, strategy=ddp_strategy)
    from matxfer.uncertainty.members import first_member, train_ensemble

    # An ensemble resumes with its member 0's config (its seed is the split's).
    resolved = config_for_run(config, profile, flags, first_member(out, ensemble), resume)
    spec = DataSpec(
        data, test=test, data_dir=data_dir, trial=trial, size=size,
        target_key=target_key, format=format, skip_invalid=skip_invalid,
    )  # fmt: skip
    if ensemble is not None:
        members = train_ensemble(spec, out, resolved, ensemble, resume, overwrite, progress)
        for member in members:
            print_metrics(member["metrics"], ("train", "val", "test"), Path(member["run_dir"]))
        console.print(f"{len(members)} members in {out}; intervals: matxfer evaluate {out} DATA "
                      "--interval 0.9")  # fmt: skip
        return
    result = run_training(
        spec,
        out,
        config=resolved,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
    )
    print_metrics(result.metrics, ("train", "val", "test"), result.run_dir)


RunArgument = Annotated[
    Path, typer.Argument(help="Run directory, checkpoint, ensemble (--ensemble) or study folder.")
]
SelectOption = Annotated[str | None, typer.Option(help="Study runs to average: ft=ph,pt=fe,...")]
IntervalOption = Annotated[
    float | None,
    typer.Option(help="Conformal prediction intervals at this coverage, e.g. 0.9."),
]
CalibrationOption = Annotated[
    Path | None,
    typer.Option(help="Labelled records no member trained on, to calibrate --interval on."),
]


@app.command()
def evaluate(
    run: RunArgument,
    data: Annotated[Path, typer.Argument(help="Labelled dataset file or folder.")],
    out: Annotated[
        Path | None, typer.Option(help="JSON file (default: RUN/eval_<DATA>.json).")
    ] = None,
    format: FormatOption = None,
    target_key: TargetKeyOption = None,
    skip_invalid: SkipInvalidOption = False,
    select: SelectOption = None,
    interval: IntervalOption = None,
    calibration: CalibrationOption = None,
) -> None:
    """Metrics (R², MAE, RMSE) of a trained model or ensemble on a labelled dataset.

    With a study folder as RUN, the ensemble of the runs --select picks (e.g. --select
    'ft=ph,pt=fe,size=800'); with --interval, the coverage of conformal intervals and a
    calibration plot too.
    """
    from matxfer.study.ensemble import study_command
    from matxfer.training import evaluate as run_evaluation
    from matxfer.uncertainty.intervals import interval_command

    args = (run, data, select, out, format, target_key, skip_invalid)
    uq = (run, data, select, out, interval, calibration, format, target_key, skip_invalid)
    if (shown := interval_command("evaluate", *uq)) is not None:
        console.print(shown)
        return
    if (shown := study_command("evaluate", *args)) is not None:
        console.print(shown)
        return
    result = run_evaluation(run, data, out, format, target_key, skip_invalid)
    print_metrics({"data": result["metrics"]}, ("data",))
    console.print(f"{result['n']} records; metrics saved to {result['output']}")


@app.command()
def predict(
    run: RunArgument,
    data: Annotated[Path, typer.Argument(help="Dataset, or structure file(s): CIF, POSCAR.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file of predictions.")],
    format: FormatOption = None,
    target_key: TargetKeyOption = None,
    skip_invalid: SkipInvalidOption = False,
    select: SelectOption = None,
    interval: IntervalOption = None,
    calibration: CalibrationOption = None,
) -> None:
    """Predictions in original units for every structure of DATA.

    With a study folder as RUN, the mean, std and members of the runs --select picks (e.g.
    'ft=ph,pt=fe,size=800'); with --interval, conformal lower and upper bounds too.
    """
    from matxfer.study.ensemble import study_command
    from matxfer.training import predict as run_prediction
    from matxfer.uncertainty.intervals import interval_command

    args = (run, data, select, out, format, target_key, skip_invalid)
    uq = (run, data, select, out, interval, calibration, format, target_key, skip_invalid)
    if (shown := interval_command("predict", *uq)) is not None:
        console.print(shown)
        return
    if (shown := study_command("predict", *args)) is not None:
        console.print(shown)
        return
    frame = run_prediction(run, data, out, format, target_key, skip_invalid)
    console.print(f"{len(frame)} predictions written to {out}")


cli_transfer.register(app)
cli_rank.register(app)
cli_models.register(app)
reflow_help(app)


def _one_line_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    """Show a warning as ``warning: <message>``: the source line of a library's internals
    tells a user nothing they can act on."""
    err_console.print(
        Text.assemble(("warning:", "yellow"), f" {message}"), highlight=False, soft_wrap=True
    )


def main() -> None:
    """Console entry point."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            app()
    except MatxferError as error:
        report_error(error)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
