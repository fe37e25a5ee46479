"""The ``mmgen`` command line: a thin typer shell over the library.

Each command parses its options, builds a config, calls one library function and reports.
Commands live in one module per job (``train``, ``data``, ``evaluate``) and register on ``app``.
"""

from __future__ import annotations

from mmgen.cli.common import app

# Importing a command module registers its commands on ``app``.
from mmgen.cli import train  # noqa: E402,F401  isort: skip
from mmgen.cli import data  # noqa: E402,F401  isort: skip
from mmgen.cli import evaluate  # noqa: E402,F401  isort: skip


def main() -> None:
    """Console entry point (``mmgen`` and ``python -m mmgen``)."""
    app(prog_name="mmgen")


__all__ = ["app", "main"]
