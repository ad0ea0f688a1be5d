"""``--help`` text: prose paragraphs reflow to the terminal instead of keeping the source's
line breaks."""

from __future__ import annotations

from typer.testing import CliRunner

from matxfer import __version__
from matxfer.cli import app
from matxfer.cli_options import _reflowed


def test_prose_paragraphs_join_and_indented_examples_keep_their_lines() -> None:
    examples = "Examples:\n  matxfer a\n  matxfer b"
    doc = f"Summary.\n\nOne sentence\nwrapped.\n\n{examples}"
    assert _reflowed(doc) == f"Summary.\n\nOne sentence wrapped.\n\n{examples}"


def test_command_help_wraps_at_the_terminal_not_at_the_source() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "about 10 minutes on two CPU cores." in result.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"matxfer {__version__}"
