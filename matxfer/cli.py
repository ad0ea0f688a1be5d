"""The ``matxfer`` command line.

Commands are thin: they parse options, call the Python API, and print with
rich. Every :class:`~matxfer.errors.MatxferError` becomes one readable
error line (plus its listed problems) and a non-zero exit; no traceback.
"""

from __future__ import annotations

import sys

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
