"""The ``mmgen`` command line: a thin typer shell over the library.

Each command parses its options, builds a config, calls one library function and reports.
Commands live in one module per job (``train``, ``data``, ``evaluate``, ``export``) and register
on the app of ``mmgen.cli.common`` when imported.

This package imports nothing heavy itself: torch, h5py and matplotlib load inside :func:`main`'s
guarded call, so that Ctrl-C during the seconds of start-up is one line and exit code 130, not a
traceback through the import machinery. ``from mmgen.cli import app`` still works (it loads
every command).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import typer

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C


def load_app() -> typer.Typer:
    """The app with every command registered (imports torch and h5py: seconds on a cold start)."""
    # Importing a command module registers its commands on ``common.app``.
    from mmgen.cli import data, evaluate, export, study, train, truth  # noqa: F401
    from mmgen.cli.common import app

    return app


STARTING_INTERRUPTED = "Interrupted while starting; nothing was done.\n"


def _end_start(signum: int, frame: object) -> None:
    """Ctrl-C while the commands load: end at once, nothing was done.

    Raising ``KeyboardInterrupt`` inside an import can leave numpy or scipy half-initialised,
    and their next import then fails with an error of its own and a traceback; start-up writes
    nothing, so the process ends here without unwinding through the imports.
    """
    os.write(2, STARTING_INTERRUPTED.encode())
    os._exit(EXIT_INTERRUPTED)


def main() -> None:
    """Console entry point (``mmgen`` and ``python -m mmgen``)."""
    previous = signal.signal(signal.SIGINT, _end_start)
    try:
        app = load_app()
    except KeyboardInterrupt:  # an embedding caller's own handler raised it
        print(STARTING_INTERRUPTED.strip(), file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        app(prog_name="mmgen")
    except KeyboardInterrupt:
        # Ctrl-C outside a command (while parsing, or while printing its last line).
        print("Interrupted.", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


def __getattr__(name: str) -> Any:
    # ``mmgen.cli.app`` for tests and embedding, loaded on first access (PEP 562).
    if name == "app":
        return load_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["app", "load_app", "main"]
