"""Export commands: ``mmgen export``, ``mmgen card``, ``mmgen verify``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from mmgen.cli.common import QuietOption, VerboseOption, app, configure_logging, reports_user_errors
from mmgen.export import FORMATS
from mmgen.export import card as cards
from mmgen.export import export as exporting

ExportFormat = Enum("ExportFormat", {name: name for name in FORMATS}, type=str)
FileArgument = Annotated[Path, typer.Argument(help="An mmgen HDF5 file.", dir_okay=False)]


@app.command("export")
@reports_user_errors
def export_command(
    file: FileArgument,
    to: Annotated[
        ExportFormat,
        typer.Option(
            "--to",
            help="polymnist: MoPoE's PNG folders + MultiVae's .pt tensors; hf: parquet for "
            "datasets.load_dataset; webdataset: tar shards.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder to write (with its card).")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace --out if it exists.")
    ] = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Write FILE in a format other tools load as it is, with a dataset card.

    Example: mmgen export mnist-e.h5 --to hf --out mnist-e-hf
    """
    configure_logging(verbose)
    fmt = str(getattr(to, "value", to))
    written = [0]

    with tqdm(unit="tuple", unit_scale=True, disable=quiet, desc="export", delay=0.5) as bar:

        def progress(rows: int) -> None:
            written[0] += rows
            bar.update(rows)

        path = exporting(file, fmt, out, overwrite, on_progress=progress)
    typer.echo(f"Wrote {path} ({fmt}, {written[0]:,} tuples; card: {path / cards.CARD_JSON})")


@app.command("card")
@reports_user_errors
def card_command(file: FileArgument, verbose: VerboseOption = False) -> None:
    """Write FILE's dataset card beside it: FILE.card.json and FILE.card.md."""
    configure_logging(verbose)
    path = cards.card_for_file(file)
    typer.echo(f"Wrote {path} and {path.with_suffix('.md')}")


@app.command("verify")
@reports_user_errors
def verify_command(
    path: Annotated[Path, typer.Argument(help="An export folder, or a file with a card.")],
) -> None:
    """Re-hash PATH against its card: exit 0 if all files match, else 1 naming the first."""
    ok, message = cards.verify(path)
    typer.echo(message if ok else f"Mismatch: {message}", err=not ok)
    if not ok:
        raise typer.Exit(1)
