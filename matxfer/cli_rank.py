"""``matxfer rank-sources``: which pre-training source to fine-tune from, before fine-tuning.

A thin wrapper of :func:`matxfer.transfer.ranking.rank_sources` (imported inside
the command: the transfer package loads torch and Lightning, which ``matxfer
--help`` should not pay for). Registered on the ``matxfer`` app by :func:`register`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from matxfer.cli_options import (
    DataDirOption,
    FormatOption,
    ProgressOption,
    SizeOption,
    SkipInvalidOption,
    TargetKeyOption,
    TrialOption,
    console,
    err_console,
)

if TYPE_CHECKING:
    from matxfer.transfer.ranking import SourceRanking


def _number(value: float, digits: int = 3) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def ranking_table(ranking: SourceRanking) -> Table:
    """The ranked candidates: rank, source, the three scores, seconds."""
    targets = ", ".join(ranking.target_names)
    table = Table(
        title=f"pre-training sources for {targets}: {ranking.n} training structures of "
        f"{ranking.data}",
        caption=f"ranked by LogME; R² of {ranking.settings['folds']}-fold probes on frozen "
        f"embeddings; {ranking.seconds:.1f} s in all ({ranking.cpu_seconds:.1f} s CPU), "
        f"{sum(s.graph_seconds for s in ranking.scores):.1f} s of them building graphs",
    )
    for name in ("rank", "source", "LogME", "ridge R²", "kNN R²", "features", "seconds"):
        if name == "source":  # paths are long: wrapped, never cut
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, justify="right")
    for score in ranking.scores:
        table.add_row(
            str(score.rank),
            score.source,
            _number(score.logme),
            _number(score.ridge_r2),
            _number(score.knn_r2),
            str(score.features),
            f"{score.seconds:.1f}",
        )
    return table


def rank_sources(
    data: Annotated[
        str, typer.Argument(help="Fine-tuning dataset file/folder, or a named dataset (ph, ...).")
    ],
    sources: Annotated[
        list[Path],
        typer.Option(
            "--from",
            help="Candidate pre-training run directory, checkpoint file, shipped model "
            "(matxfer models list) or foundation model (chgnet); repeat it, or list more "
            "candidates after it (DATA --from A B C).",
            show_default=False,
        ),
    ],
    more: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Further candidates (the B C of --from A B C).",
            metavar="[SOURCE]...",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDirOption = None,
    trial: TrialOption = None,
    size: SizeOption = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the data sample/split (as finetune's) and of the folds.")
    ] = 0,
    folds: Annotated[int, typer.Option(help="Folds of the ridge and kNN probes.")] = 5,
    neighbors: Annotated[int, typer.Option(help="Neighbours of the kNN probe.")] = 5,
    target_key: TargetKeyOption = None,
    format: FormatOption = None,
    skip_invalid: SkipInvalidOption = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the ranking as JSON (for scripts).")
    ] = False,
    progress: ProgressOption = None,
) -> None:
    """Rank pre-trained models for DATA without fine-tuning (seconds to minutes on a CPU).

    Scores are LogME, ridge and kNN probes of each model's frozen embeddings of DATA's
    training structures.

    Example: matxfer rank-sources ph --data-dir DIR --size 800 --trial 1 --from runs/fe runs/gv
    """
    from matxfer.training import DataSpec
    from matxfer.transfer.ranking import SourceScore
    from matxfer.transfer.ranking import rank_sources as run_ranking

    def show(score: SourceScore) -> None:
        err_console.print(
            f"{score.source}: LogME {_number(score.logme)} ({score.seconds:.1f} s)",
            highlight=False,
        )

    spec = DataSpec(
        data, data_dir=data_dir, trial=trial, size=size,
        target_key=target_key, format=format, skip_invalid=skip_invalid,
    )  # fmt: skip
    ranking = run_ranking(
        spec,
        list(dict.fromkeys([*sources, *(more or [])])),  # a source given twice is scored once
        seed=seed,
        folds=folds,
        neighbors=neighbors,
        progress=bool(progress) and not as_json,
        on_source=None if as_json else show,
    )
    if as_json:
        typer.echo(json.dumps(ranking.to_dict(), indent=2))
    else:
        console.print(ranking_table(ranking))


def register(app: typer.Typer) -> None:
    """Add ``rank-sources`` to ``app``."""
    app.command("rank-sources")(rank_sources)
