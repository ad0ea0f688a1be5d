"""``matxfer models``: the pre-trained models shipped in the package.

``models list`` prints one row per model (what it predicts, what it was trained
on, its test R² per property); ``models show NAME`` prints its model card. Any
listed name works as ``--from`` of ``finetune`` and ``rank-sources`` and as the
model of ``predict`` (see :mod:`matxfer.training.shipped`). Registered on the
``matxfer`` app by :func:`register`.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markdown import Markdown
from rich.table import Table

from matxfer.cli_options import console
from matxfer.training.shipped import ShippedModel, shipped_model, shipped_models

models_app = typer.Typer(
    help="Pre-trained models shipped with matxfer (use a name with finetune --from).",
    no_args_is_help=True,
)


def _r2_summary(model: ShippedModel) -> str:
    return ", ".join(
        f"{name} {'–' if r2 is None else f'{r2:.2f}'}" for name, r2 in model.test_r2().items()
    )


def models_table(models: dict[str, ShippedModel]) -> Table:
    """One row per shipped model: name, outputs, training records, epochs, test R², size."""
    table = Table(title="shipped models (test R² on the study's fixed test sets)")
    for column in ("name", "predicts", "trained on", "epochs", "test R²", "KiB"):
        table.add_column(column, overflow="fold")
    for name, model in models.items():
        data = model.card["data"]
        table.add_row(
            name,
            " ".join(model.properties),
            f"{data['merged']} crystals",
            str(model.card["recipe"]["epochs"]),
            _r2_summary(model),
            f"{model.card['weights']['bytes'] / 1024:.0f}",
        )
    return table


@models_app.command("list")
def list_models(
    as_json: Annotated[bool, typer.Option("--json", help="Print the cards as JSON.")] = False,
) -> None:
    """List the shipped pre-trained models.

    Example: matxfer models list
    """
    models = shipped_models()
    if as_json:
        console.print_json(json.dumps({name: m.card for name, m in models.items()}))
        return
    if not models:
        console.print("no shipped models are installed")
        return
    console.print(models_table(models))
    console.print(
        "fine-tune one: matxfer finetune DATA --from NAME --head new --out RUN "
        "(matxfer models show NAME: its model card)"
    )


@models_app.command("show")
def show_model(
    name: Annotated[str, typer.Argument(help="A shipped model's name (matxfer models list).")],
) -> None:
    """Print a shipped model's card: data, recipe, time, test metrics, licence.

    Example: matxfer models show mpt7
    """
    console.print(Markdown(shipped_model(name).markdown()))


def register(app: typer.Typer) -> None:
    """Add ``matxfer models`` to ``app``."""
    app.add_typer(models_app, name="models")
