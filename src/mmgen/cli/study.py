"""``mmgen study run RECIPE.toml --out DIR`` and ``mmgen study report DIR``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from tqdm import tqdm

from mmgen import distributed
from mmgen.cli import EXIT_INTERRUPTED
from mmgen.cli.common import (
    EXIT_USER_ERROR,
    CacheDirOption,
    DataDirOption,
    DeviceOption,
    QuietOption,
    VerboseOption,
    app,
    configure_logging,
    reports_user_errors,
)
from mmgen.study.recipe import RecipeError, load_recipe
from mmgen.study.report import REPORT_MD, build_report
from mmgen.study.run import run_study

T = TypeVar("T")

study_app = typer.Typer(
    help="Replicated studies from one TOML recipe: datasets replicated × evaluator seeds.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")


def load_or_exit(load: Callable[[Path], T], recipe: Path) -> T:
    """The validated recipe, before any work; else every mistake on its own line and exit 2."""
    try:
        return load(recipe)
    except RecipeError as error:
        for mistake in error.mistakes:
            typer.echo(f"Error: {mistake}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None


def job_bar(desc: str, hidden: bool) -> tuple[tqdm, Callable[[int, int, str], None]]:
    """One progress bar over a study's jobs, and the ``on_task`` callback that moves it."""
    bar = tqdm(total=None, unit="job", disable=hidden, desc=desc, delay=0.5)

    def on_task(done: int, total: int, description: str) -> None:
        bar.total, bar.n = total, done
        bar.set_description(description)
        bar.refresh()

    return bar, on_task


def interrupted(out: Path, interrupt: KeyboardInterrupt) -> typer.Exit:
    """Say that the finished jobs are kept (a rerun resumes); the exit to raise."""
    what = f" ({interrupt})" if str(interrupt) else ""
    typer.echo(
        f"Interrupted{what}; the finished jobs are kept in {out / 'jobs'}: run the same command "
        "again to do the others.",
        err=True,
    )
    return typer.Exit(EXIT_INTERRUPTED)


@study_app.command("run")
@reports_user_errors
def run_command(
    recipe: Annotated[Path, typer.Argument(help="The study's TOML recipe.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="The study folder (reused by a rerun).")],
    cache_dir: CacheDirOption = None,
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    report: Annotated[bool, typer.Option(help="Write the report when every job is done.")] = True,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Run every job of RECIPE that DIR does not hold yet (a rerun resumes), then report."""
    configure_logging(verbose)
    validated = load_or_exit(load_recipe, recipe)  # before any work: nothing is written
    with distributed.session(getattr(device, "value", device)) as world:
        bar, on_task = job_bar("study", quiet or not world.is_main)
        try:
            run_study(
                validated,
                out,
                data_dir=data_dir,
                cache_dir=cache_dir,
                device=getattr(device, "value", device),
                world=world,
                on_task=on_task,
            )
        except KeyboardInterrupt as interrupt:
            bar.close()
            if world.is_main:
                raise interrupted(out, interrupt) from None
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            bar.close()
        if not world.is_main:
            return
    if report:
        build_report(out)
        typer.echo(f"Wrote {out / REPORT_MD}")


@study_app.command("report")
@reports_user_errors
def report_command(
    out: Annotated[Path, typer.Argument(help="A study folder of `mmgen study run`.")],
    verbose: VerboseOption = False,
) -> None:
    """Write DIR/report.md, report.json and values.csv from the study's finished jobs."""
    configure_logging(verbose)
    build_report(out)
    typer.echo(f"Wrote {out / REPORT_MD}")


@study_app.command("polymnist")
@reports_user_errors
def polymnist_command(
    recipe: Annotated[
        Path, typer.Argument(help="The ranking study's TOML recipe.", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="The study folder (reused by a rerun).")],
    data_dir: DataDirOption = None,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Rank MultiVae's MVAE, MMVAE, MoPoE on PolyMNIST-E, its mixed twin and the naive pairing
    (MultiVae's coherences, replicated; docs/ranking.md). A rerun resumes."""
    from mmgen.ranking.recipe import load_ranking_recipe
    from mmgen.ranking.report import REPORT_MD as RANKING_MD
    from mmgen.ranking.report import build_ranking_report
    from mmgen.ranking.run import run_ranking

    configure_logging(verbose)
    validated = load_or_exit(load_ranking_recipe, recipe)  # before any work: nothing is written
    bar, on_task = job_bar("ranking", quiet)
    try:
        run_ranking(
            validated, out, data_dir=data_dir, device=getattr(device, "value", device),
            on_task=on_task,
        )  # fmt: skip
    except KeyboardInterrupt as interrupt:
        bar.close()
        raise interrupted(out, interrupt) from None
    finally:
        bar.close()
    build_ranking_report(out)
    typer.echo(f"Wrote {out / RANKING_MD}")
