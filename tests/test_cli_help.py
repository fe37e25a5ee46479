"""Every ``--help`` fits 80 columns whole: no line over 80, nothing cut with "…", no ``<bool>``."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mmgen.cli import load_app

app = load_app()
COMMANDS = sorted(command.name for command in app.registered_commands)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_fits_80_columns_without_truncation(command, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    args = ["--help"] if command is None else [command, "--help"]
    result = CliRunner().invoke(app, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert "…" not in result.output  # rich's cut-off mark
    assert not any(line.rstrip().endswith("...") for line in lines if not line.startswith("Usage"))
    assert "<bool>" not in result.output


def test_the_command_list_gives_each_first_paragraph_whole(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    output = " ".join(CliRunner().invoke(app, ["--help"], terminal_width=80).output.split())
    assert "draw it (paper Fig. 1, top left)" in output
    assert "export Write FILE in a format other tools load as it is, with a dataset card." in output
