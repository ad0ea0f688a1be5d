"""The ``matxfer`` command line.

Commands are thin: they parse options, call the Python API, and print with
rich. Every :class:`~matxfer.errors.MatxferError` becomes one readable
error line (plus its listed problems) and a non-zero exit; no traceback.
"""

from __future__ import annotations

import json
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

# Options shared by train, finetune and pretrain-multi: declared once.
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
BatchSizeOption = Annotated[int | None, typer.Option(help="Structures per batch.")]
LrOption = Annotated[float | None, typer.Option(help="Peak learning rate.")]
ResumeOption = Annotated[bool, typer.Option(help="Continue the interrupted run in --out.")]
SkipInvalidOption = Annotated[bool, typer.Option(help="Skip invalid records.")]
ValFractionOption = Annotated[float | None, typer.Option(help="Validation share.")]
SamplingOption = Annotated[str | None, typer.Option(help="random, stratified or normal.")]
ProgressOption = Annotated[
    bool | None, typer.Option("--progress/--no-progress", help="Progress bars (default: tty).")
]

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
            err_console.print(f"[yellow]skipped {len(dataset.skipped)} invalid records:[/]")
            for problem in dataset.skipped[:MAX_PROBLEM_LINES]:
                err_console.print(f"  {problem}", highlight=False, soft_wrap=True, markup=False)
    console.print("[green]OK[/]: " + ", ".join(f"{len(d)} records" for d in datasets))


# ---------------------------------------------------------------- train / evaluate / predict


def _print_metrics(metrics: dict, splits: tuple[str, ...], run_dir: Path | None = None) -> None:
    """The metrics table; for a new run, its best epoch and how training ended."""
    from matxfer.training.outputs import metrics_table, stop_description

    console.print(metrics_table(metrics, splits))
    if run_dir is not None:
        console.print(
            f"best epoch {metrics['best_epoch']} of {metrics['epochs_trained']} (training "
            f"ended by {stop_description(metrics)}); run saved in {run_dir}"
        )


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
    skip_invalid: SkipInvalidOption = False,
    val_fraction: ValFractionOption = None,
    sampling: SamplingOption = None,
    progress: ProgressOption = None,
) -> None:
    """Train an ALIGNN model; writes checkpoints, metrics, predictions and plots to --out."""
    from matxfer.training import config_for_run
    from matxfer.training import train as run_training

    flags = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "val_fraction": val_fraction,
        "sampling": sampling,
    }
    resolved = config_for_run(config, profile, flags, out, resume)
    result = run_training(
        data,
        out,
        test,
        resolved,
        data_dir=data_dir,
        trial=trial,
        size=size,
        target_key=target_key,
        format=format,
        skip_invalid=skip_invalid,
        resume=resume,
        progress=progress,
    )
    _print_metrics(result.metrics, ("train", "val", "test"), result.run_dir)


RunArgument = Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")]
FormatOption = Annotated[str | None, typer.Option(help="alignn, idprop, matbench, extxyz.")]
TargetKeyOption = Annotated[str | None, typer.Option(help="Field holding the target.")]
SkipInvalidOption = Annotated[bool, typer.Option(help="Skip invalid records.")]


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


# ---------------------------------------------------------------- multi-property pre-training


@app.command("pretrain-multi")
def pretrain_multi(
    datasets: Annotated[
        list[str],
        typer.Argument(
            help="NAME=DATA (file, folder or named dataset) or a bare named dataset (fe ph ...).",
            metavar="NAME[=DATA]",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")],
    exclude: Annotated[
        list[str] | None, typer.Option(help="Leave this property out (leave-one-out); repeatable.")
    ] = None,
    data_dir: DataDirOption = None,
    size: Annotated[int | None, typer.Option(help="Records drawn per property.")] = None,
    sampling: SamplingOption = None,
    exclude_test_structures: Annotated[
        bool, typer.Option(help="Drop pre-training crystals found in any property's test set.")
    ] = False,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(help="Seed of sampling, splits, init.")] = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    loss: Annotated[
        str,
        typer.Option(
            help="masked_l1 (the study's MPT loss), l1, mse or huber; wins over --config."
        ),
    ] = "masked_l1",
    resume: ResumeOption = False,
    progress: ProgressOption = None,
) -> None:
    """Pre-train one model on several property datasets merged by crystal (MPT).

    Example: matxfer pretrain-multi fe bg gv ph dc pz ebg --exclude ph --data-dir DIR --out RUN
    """
    from matxfer.training import config_for_run
    from matxfer.transfer.multitask import PretrainData, merge_tables, parse_dataset_args
    from matxfer.transfer.multitask import pretrain_multi as run_pretraining

    def show_merge(data: PretrainData) -> None:
        for item in merge_tables(data):
            console.print(item)

    named = parse_dataset_args(datasets)
    flags = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "sampling": sampling,
        "loss": loss,
    }
    resolved = config_for_run(config, profile, flags, out, resume)
    result = run_pretraining(
        named,
        out,
        exclude or (),
        resolved,
        data_dir=data_dir,
        size=size,
        exclude_test_structures=exclude_test_structures,
        progress=progress,
        resume=resume,
        on_merged=show_merge,
    )
    _print_metrics(result.metrics, ("test",), result.run_dir)


# ---------------------------------------------------------------- fine-tuning / demo


@app.command()
def finetune(
    data: Annotated[
        str, typer.Argument(help="Fine-tuning dataset file/folder, or a named dataset (ph, ...).")
    ],
    pretrained: Annotated[
        Path,
        typer.Option(
            "--from", help="Pre-training run directory or checkpoint file.", show_default=False
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")],
    strategy: Annotated[
        str,
        typer.Option(
            help="all, last, head, two_body_only, "
            "three_body_only, freeze_embedding, "
            "freeze:GROUPS or train:GROUPS."
        ),
    ] = "all",
    head: Annotated[
        str,
        typer.Option(
            help="reuse (keep the pre-trained output layer), new "
            "(fresh head) or deeper (fresh, more layers)."
        ),
    ] = "reuse",
    head_output: Annotated[
        str | None,
        typer.Option(
            help="With --head reuse: the pre-trained output(s) to keep, comma-separated "
            "(multi-property models)."
        ),
    ] = None,
    lr_groups: Annotated[
        str | None,
        typer.Option(help="Learning-rate factors per layer group, e.g. embedding=0.1,head=10."),
    ] = None,
    pretrain_data: Annotated[
        str | None,
        typer.Option(
            help="The pre-training dataset, for the leakage audit (default: read from the "
            "pre-training run)."
        ),
    ] = None,
    exclude_test_structures: Annotated[
        bool,
        typer.Option(
            help="Repeat the pre-training without the crystals of the fine-tuning test set "
            "(into OUT/pretrain_excluding_test), then fine-tune from it."
        ),
    ] = False,
    audit: Annotated[
        bool, typer.Option(help="Count fine-tuning crystals present in the pre-training data.")
    ] = True,
    test: TestOption = None,
    profile: ProfileOption = None,
    config: ConfigOption = None,
    seed: Annotated[int | None, typer.Option(help="Seed of splits, head init, shuffling.")] = None,
    data_dir: DataDirOption = None,
    trial: TrialOption = None,
    size: SizeOption = None,
    target_key: TargetKeyOption = None,
    format: FormatOption = None,
    epochs: EpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    resume: ResumeOption = False,
    skip_invalid: SkipInvalidOption = False,
    val_fraction: ValFractionOption = None,
    sampling: SamplingOption = None,
    progress: ProgressOption = None,
) -> None:
    """Fine-tune a pre-trained model on DATA; writes a run directory plus transfer.json.

    Example: matxfer finetune ph --data-dir DIR --trial 1 --size 100 --from runs/fe --out runs/ft
    """
    from matxfer.training import config_for_run
    from matxfer.transfer.finetune import TRANSFER_FILE
    from matxfer.transfer.finetune import finetune as run_finetuning
    from matxfer.transfer.freeze import parse_freeze, parse_lr_multipliers

    spec = parse_freeze(strategy)  # bad options fail before any data is read
    multipliers = parse_lr_multipliers(lr_groups or "")
    flags = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "val_fraction": val_fraction,
        "sampling": sampling,
    }
    resolved = config_for_run(config, profile, flags, out, resume)
    outputs = [name.strip() for name in head_output.split(",")] if head_output else None
    result = run_finetuning(
        data,
        pretrained,
        out,
        spec,
        head,
        multipliers,  # type: ignore[arg-type]  # checked there
        test=test,
        config=resolved,
        head_outputs=outputs,
        pretrain_data=pretrain_data,
        exclude_test_structures=exclude_test_structures,
        audit=audit,
        data_dir=data_dir,
        trial=trial,
        size=size,
        target_key=target_key,
        format=format,
        skip_invalid=skip_invalid,
        resume=resume,
        progress=progress,
    )
    _print_metrics(result.metrics, ("train", "val", "test"), result.run_dir)
    record = json.loads((result.run_dir / TRANSFER_FILE).read_text())
    leakage = record["leakage"]
    console.print(
        "leakage audit: "
        + (leakage["summary"] if leakage["audited"] else f"not run ({leakage['reason']})"),
        highlight=False,
    )
    console.print(f"strategy {record['strategy']}, head {record['head']}")


@app.command()
def demo(
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder of the demo's runs and results (reruns skip finished steps)."
        ),
    ] = Path("matxfer-demo"),
    sizes: Annotated[
        str,
        typer.Option(
            help="Fine-tuning sizes (trial-1 subsets of the phonon pool), comma-separated."
        ),
    ] = "100,800",
    quick: Annotated[
        bool,
        typer.Option(
            help="A tiny model and few epochs: a smoke test of the pipeline in about a minute."
        ),
    ] = False,
    progress: ProgressOption = None,
) -> None:
    """Pre-train on formation energies, fine-tune on phonons, compare with scratch (offline).

    Uses the datasets shipped with matxfer (demo-fe, demo-ph); about 10 minutes on two
    CPU cores. Prints a comparison table and writes DIR/demo_results.csv/json and
    DIR/demo_summary.png.
    """
    from matxfer.transfer.demo import parse_sizes, results_table, run_demo

    result = run_demo(
        out,
        parse_sizes(sizes),
        quick=quick,
        progress=progress,
        echo=lambda line: console.print(line, highlight=False),
    )
    console.print(results_table(result))
    console.print(f"results: {result.csv}, {result.json}, {result.plot}")


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
