"""``mmgen truth FILE``: compute, store and print a generated file's truth (docs/truth.md)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mmgen.cli.common import (
    DeviceOption,
    VerboseOption,
    app,
    configure_logging,
    reports_user_errors,
)
from mmgen.truth import oracle
from mmgen.truth.text import describe

Method = Enum("Method", {name: name for name in oracle.METHODS}, type=str)


@app.command("truth")
@reports_user_errors
def truth_command(
    file: Annotated[
        Path, typer.Argument(help="A file from mmgen generate or shuffle.", dir_okay=False)
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as JSON (mutual_information, ...).")
    ] = False,
    method: Annotated[
        Method, typer.Option(help="auto: quadrature for d <= 2, importance sampling beyond.")
    ] = Method.auto,  # type: ignore[attr-defined]
    points: Annotated[
        int, typer.Option(help="Quadrature cells per axis; the error check doubles them.")
    ] = oracle.DEFAULT_POINTS,
    samples: Annotated[int, typer.Option(help="Importance draws from the prior (d > 2).")] = (
        oracle.DEFAULT_SAMPLES
    ),
    seed: Annotated[int, typer.Option(help="Seed of the importance draws.")] = 0,
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Compute even when a current truth is stored.")
    ] = False,
    device: DeviceOption = "cpu",
    verbose: VerboseOption = False,
) -> None:
    """Compute the true log p(x), marginals and mutual information of FILE's test split from its
    generating CVAEs; store them beside FILE (FILE.truth.h5) and print them."""
    from mmgen.truth import Settings, ensure_truth, truth_path

    configure_logging(verbose)
    settings = Settings(
        method=str(getattr(method, "value", method)), points=points, samples=samples, seed=seed
    )
    truth = ensure_truth(file, settings, str(getattr(device, "value", device)), recompute)
    if as_json:
        typer.echo(json.dumps({"file": str(file), **truth.summary}, indent=2, sort_keys=True))
        return
    typer.echo("\n".join(describe(truth.summary)))
    typer.echo(f"Stored in {truth_path(file)}")
