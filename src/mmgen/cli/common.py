"""Shared pieces of the command line: the app, option types, logging and error reporting."""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import click
import typer
import typer.core

from mmgen import __version__
from mmgen.atomic import signals_as_interrupts
from mmgen.cli import EXIT_INTERRUPTED
from mmgen.config import require_finite
from mmgen.device import DEVICE_CHOICES, deterministic
from mmgen.errors import UsageError
from mmgen.rng import check_seed


class WrappedHelpGroup(typer.core.TyperGroup):
    """The command list of ``mmgen --help``: each command's first paragraph, wrapped, not cut."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                text = command.short_help or inspect.cleandoc(command.help or "")
                rows.append((name, " ".join(text.split("\n\n")[0].split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="mmgen",
    cls=WrappedHelpGroup,
    help=(
        "Generate entangled multi-modal datasets (MNIST-E) from class-conditional β-CVAEs, "
        "make their mixed and naive baselines, and evaluate multi-modal VAEs on them."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: wrapped to the terminal (80 columns at most), never cut off with "…",
    # and flags without a `<bool>` type column (tests/test_cli_help.py).
    rich_markup_mode=None,
)

# Mistakes a user can make (the library raises ``UsageError`` with a message that says what was
# wrong and what would be right) and the operating system's failures on the user's paths
# (missing, unreadable, read-only, full: ``OSError`` subclasses, or a plain ``OSError`` with an
# errno). They become one line on stderr and exit code 2; ``-v`` adds the traceback. Any other
# exception is a bug and keeps its traceback, including a plain ``OSError`` without an errno
# (HDF5's internal failures, a library's bug).
USER_ERRORS: tuple[type[Exception], ...] = (UsageError, OSError)


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` is a user's mistake or the system's failure on a user's path."""
    if isinstance(error, UsageError):
        return True
    if isinstance(error, OSError):
        return type(error) is not OSError or error.errno is not None
    return False
EXIT_USER_ERROR = 2

P = ParamSpec("P")
R = TypeVar("R")


# Every output is written as a unit (mmgen.atomic), so a stopped command leaves each output as
# it was or complete. Commands whose outputs outlive an interrupt (train-cvae's epoch
# checkpoints) catch the interrupt themselves and say what is there.
INTERRUPTED = "Interrupted{signal}; every output is as it was before this run (nothing partial)."


def user_message(error: BaseException) -> str:
    """One line for a user error: the message without OSError's ``[Errno N]`` prefix.

    An OS error that names its file in ``filename`` only (``open``'s errors) gets it added, so
    the line always says which path failed.
    """
    if isinstance(error, OSError) and error.strerror:
        message = error.strerror
        if error.filename is not None and str(error.filename) not in message:
            message = f"{error.filename}: {message}"
    else:
        message = str(error) or type(error).__name__
    return " ".join(message.split())  # one line, whatever the library's message held


def check_numbers(arguments: dict[str, object]) -> None:
    """Refuse, before any work, a non-finite number in any option and a seed out of range.

    Click reads ``inf`` and ``nan`` as floats; no setting of mmgen means either, and a NaN
    learning rate or β trains garbage that looks like success. Seeds: ``mmgen.rng.check_seed``.
    """
    for name, value in arguments.items():
        flag = "--" + name.replace("_", "-")
        for item in value if isinstance(value, list | tuple) else [value]:
            require_finite(flag, item)
        if name == "seed" and value is not None:
            check_seed(value)


OUTPUT_OPTIONS = ("out", "cache_dir")  # the options naming what a command writes


def check_output_names(arguments: dict[str, object]) -> None:
    """Refuse an output option that names no file or folder (``--out ''`` is Path('.'))."""
    for name in OUTPUT_OPTIONS:
        value = arguments.get(name)
        if isinstance(value, Path) and value.name in ("", ".."):
            raise UsageError(
                f"--{name.replace('_', '-')} {str(value)!r} names no file or folder of its own "
                "(the current folder, its parent or the root); give one, e.g. runs/x"
            )


def reports_user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Run ``command`` as a CLI entry point: user errors and signals end in one line.

    User errors become ``Error: <message>`` and exit code 2. SIGTERM and SIGHUP are turned into
    interrupts like Ctrl-C (``mmgen.atomic.signals_as_interrupts``), so that every command's
    clean-up code removes its temporaries and releases its locks; an interrupt ends in one line
    and exit code 130.
    """

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            with signals_as_interrupts():
                check_numbers(kwargs)
                check_output_names(kwargs)
                return command(*args, **kwargs)
        except USER_ERRORS as error:
            if not is_user_error(error):
                raise
            if kwargs.get("verbose"):  # -v: the traceback too, for a user error as for a bug
                typer.echo("".join(traceback.format_exception(error)).rstrip(), err=True)
            typer.echo(f"Error: {user_message(error)}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as interrupt:
            signal_name = f" ({interrupt})" if str(interrupt) else ""
            typer.echo(INTERRUPTED.format(signal=signal_name), err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper


def honours_deterministic(command: Callable[P, R]) -> Callable[P, R]:
    """Run ``command`` inside ``mmgen.device.deterministic`` when its ``deterministic`` is true.

    The command declares ``deterministic: DeterministicOption = False``; wrapping the whole call
    (rather than a block in its body) covers the weights' initialisation as well as the work, and
    the environment record the library writes inside the call says that the mode was on.
    """
    if "deterministic" not in inspect.signature(command).parameters:
        raise TypeError(f"{command.__name__} has no `deterministic` option to honour")

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with deterministic(bool(kwargs.get("deterministic", False))):
            return command(*args, **kwargs)

    return wrapper


def configure_logging(verbose: bool) -> None:
    """Only the CLI configures logging; the library just logs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )


# Where to compute: ``auto`` picks CUDA when a GPU is present (mmgen.device.resolve_device).
Device = StrEnum("Device", {name: name for name in DEVICE_CHOICES})


DeviceOption = Annotated[
    Device, typer.Option("--device", help="auto: the GPU when there is one, else the CPU.")
]
DeterministicOption = Annotated[
    bool,
    typer.Option(
        "--deterministic",
        help="Deterministic kernels and no TF32, so the same command gives the same bytes on a "
        "GPU too (slower there; a CPU is deterministic already).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of every random draw (recorded).")]
# The classifier cache of evaluate and study (mmgen.classifiers.classifier_cache_dir).
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        help="Classifier cache (default: $XDG_CACHE_HOME/mmgen/classifiers).",
        show_default=False,
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        # No envvar=: the library reads MMGEN_DATA_DIR itself, so that messages tell the two
        # apart instead of listing the variable's folder twice.
        help="Data root holding each source's folder in torchvision's layout (MNIST/raw, "
        "SVHN, cifar-10-batches-py, ...); else $MMGEN_DATA_DIR.",
        show_default=False,
    ),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mmgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """mmgen: entangled multi-modal data, and proof that it is coherent."""
