"""``matxfer pretrain-multi | finetune | demo``: the transfer-learning commands.

Thin wrappers, as :mod:`matxfer.study.commands`: they parse options, call
:mod:`matxfer.transfer`, and print with rich (markup off). :func:`register` adds them
to the ``matxfer`` app (:mod:`matxfer.cli`), whose ``main`` turns every
:class:`~matxfer.errors.MatxferError` into one line and a non-zero exit.

A CLI-layer module, not ``matxfer/transfer/commands.py``: importing anything under
:mod:`matxfer.transfer` runs its ``__init__``, which imports torch and Lightning, and
every ``matxfer`` call (even ``--help``) would pay for that; here the transfer code
is imported inside the commands.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from matxfer.cli_options import (
    BatchSizeOption,
    ConfigOption,
    DataDirOption,
    DdpStrategyOption,
    DevicesOption,
    EnsembleOption,
    EpochsOption,
    FinetuneDdpStrategyOption,
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
    print_metrics,
)

# ---------------------------------------------------------------- multi-property pre-training


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
    max_atoms: Annotated[
        int | None,
        typer.Option(min=1, help="Pre-train only on cells of at most this many atoms."),
    ] = None,
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
    overwrite: OverwriteOption = False,
    progress: ProgressOption = None,
    devices: DevicesOption = None,
    ddp_strategy: DdpStrategyOption = None,
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
    flags.update(devices=devices, strategy=ddp_strategy)
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
        max_atoms=max_atoms,
        resume=resume,
        overwrite=overwrite,
        on_merged=show_merge,
    )
    print_metrics(result.metrics, ("test",), result.run_dir)


# ---------------------------------------------------------------- fine-tuning / demo


def finetune(
    data: Annotated[
        str, typer.Argument(help="Fine-tuning dataset file/folder, or a named dataset (ph, ...).")
    ],
    pretrained: Annotated[
        Path,
        typer.Option(
            "--from",
            help="Pre-training run directory or checkpoint file, a model shipped with "
            "matxfer (mpt7, mpt7-no-ph, fe, ...: matxfer models list), or a foundation model: "
            # "\[": typer renders help with rich markup, where [chgnet] would be a tag.
            'chgnet (CHGNet 0.4.2, MPtrj; pip install "matxfer\\[chgnet]"; it trains at '
            "10x the learning rate).",
            show_default=False,
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
        str | None,
        typer.Option(
            help="reuse (keep the pre-trained output layer; the default), new "
            "(fresh head; the default for a foundation model) or deeper (fresh, more layers).",
            show_default=False,
        ),
    ] = None,
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
    probe_epochs: Annotated[
        int,
        typer.Option(
            min=0,
            help="Train only the head for this many epochs first, then the layers of "
            "--strategy (LP-FT).",
        ),
    ] = 0,
    l2sp: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="L2-SP strength: pull the backbone towards its pre-trained weights "
            "(gradient l2sp·(w − w_pt)) instead of weight decay towards zero; 0: off.",
        ),
    ] = 0.0,
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
    overwrite: OverwriteOption = False,
    skip_invalid: SkipInvalidOption = False,
    val_fraction: ValFractionOption = None,
    sampling: SamplingOption = None,
    progress: ProgressOption = None,
    devices: DevicesOption = None,
    ddp_strategy: FinetuneDdpStrategyOption = None,
    ensemble: EnsembleOption = None,
) -> None:
    """Fine-tune a pre-trained model on DATA; writes a run directory plus transfer.json.

    Example: matxfer finetune ph --data-dir DIR --trial 1 --size 100 --from runs/fe --out runs/ft
    """
    from matxfer.training import DataSpec, config_for_run
    from matxfer.training.rundir import read_transfer_record
    from matxfer.transfer.finetune import EXCLUDED_PRETRAINING_DIR
    from matxfer.transfer.finetune import finetune as run_finetuning
    from matxfer.transfer.freeze import parse_freeze, parse_lr_multipliers
    from matxfer.uncertainty.members import first_member, train_ensemble

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
    flags.update(devices=devices, strategy=ddp_strategy)
    # An ensemble resumes with its member 0's config (its seed is the split's).
    resolved = config_for_run(config, profile, flags, first_member(out, ensemble), resume)
    outputs = [name.strip() for name in head_output.split(",")] if head_output else None
    data_spec = DataSpec(
        data, test=test, data_dir=data_dir, trial=trial, size=size,
        target_key=target_key, format=format, skip_invalid=skip_invalid,
    )  # fmt: skip
    run = partial(
        run_finetuning,
        pretrained=pretrained,
        strategy=spec,
        head=head,
        lr_multipliers=multipliers,
        head_outputs=outputs,
        pretrain_data=pretrain_data,
        exclude_test_structures=exclude_test_structures,
        probe_epochs=probe_epochs,
        l2sp=l2sp,
        audit=audit,
        overwrite=overwrite,
        progress=progress,
    )
    if ensemble is None:
        result = run(data_spec, out=out, config=resolved, resume=resume)
        runs = [{"run_dir": str(result.run_dir), "metrics": result.metrics}]
    else:
        # The members share the split, so one pre-training without its test crystals.
        shared = out / EXCLUDED_PRETRAINING_DIR
        if overwrite and shared.is_dir():  # as --overwrite of one run deletes its own
            shutil.rmtree(shared)
        runs = train_ensemble(
            data_spec, out, resolved, ensemble, resume,
            run_member=lambda splits, run_dir, member, again: run(
                splits, out=run_dir, config=member, resume=again, excluded_dir=shared
            ),
        )  # fmt: skip
    for done in runs:
        print_metrics(done["metrics"], ("train", "val", "test"), Path(done["run_dir"]))
    record = read_transfer_record(Path(runs[0]["run_dir"]))  # members share split and audit
    leakage = record["leakage"]
    console.print(
        "leakage audit: "
        + (leakage["summary"] if leakage["audited"] else f"not run ({leakage['reason']})"),
        highlight=False,
    )
    console.print(f"strategy {record['strategy']}, head {record['head']}")
    if ensemble is not None:
        console.print(f"{len(runs)} members in {out}; intervals: matxfer evaluate {out} DATA "
                      "--interval 0.9")  # fmt: skip


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
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Seeds of the scratch and fine-tuning runs, comma-separated (e.g. 0,1,2,3,4):"
            " mean ± std and the paired gain over them. Default: one seed (0)."
        ),
    ] = None,
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
    from matxfer.transfer.demo import parse_seeds, parse_sizes, run_demo
    from matxfer.transfer.demo_report import results_table

    result = run_demo(
        out,
        parse_sizes(sizes),
        seeds=parse_seeds(seeds) if seeds is not None else None,
        quick=quick,
        progress=progress,
        echo=lambda line: console.print(line, highlight=False),
    )
    console.print(results_table(result.rows, result.seconds, result.leakage))
    console.print(f"results: {result.csv}, {result.json}, {result.plot}")


def register(app: typer.Typer) -> None:
    """Add the transfer commands to ``app`` (top-level commands, not a sub-group)."""
    app.command("pretrain-multi")(pretrain_multi)
    app.command()(finetune)
    app.command()(demo)
