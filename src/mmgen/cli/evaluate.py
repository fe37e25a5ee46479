"""``mmgen evaluate``: train multi-modal VAEs on datasets side by side and write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from tqdm import tqdm
from typer.core import TyperCommand

from mmgen import distributed
from mmgen.cli import EXIT_INTERRUPTED
from mmgen.cli.common import (
    CacheDirOption,
    DataDirOption,
    DeterministicOption,
    DeviceOption,
    QuietOption,
    VerboseOption,
    app,
    configure_logging,
    honours_deterministic,
    reports_user_errors,
)
from mmgen.errors import UsageError
from mmgen.evaluate import EvaluateConfig, check_models, evaluate_datasets
from mmgen.jobs import FIGURES_FILE, JOBS_DIR
from mmgen.models.registry import MODELS

defaults = EvaluateConfig()
SEEDS_HELP = (
    "Seeds to train and measure every model with, e.g. --seeds 0 1 2 3 4 (or 0,1,2 or "
    "repeated); each (dataset, model, seed) is one job. Instead of --seed."
)


def model_names(values: list[str] | None) -> tuple[str, ...]:
    """The ``--models`` given, repeated and/or comma-separated, checked against the registry.

    ``--models jmvae,tvae`` and ``--models jmvae --models tvae`` name the same two models; no
    ``--models`` means the config's default.

    Raises:
        UsageError: a name that is not a key of ``mmgen.models.registry.MODELS``.
    """
    if values is None:
        return defaults.models
    names = tuple(name.strip() for value in values for name in value.split(",") if name.strip())
    check_models(names, MODELS)
    return names


def interrupted_message(out: Path, interrupt: KeyboardInterrupt) -> str:
    """What an interrupted evaluation kept: its finished jobs, which a rerun reuses."""
    what = f" ({interrupt})" if str(interrupt) else ""
    done = len(list((out / JOBS_DIR).glob(f"[!.]*/{FIGURES_FILE}")))
    return (
        f"Interrupted{what}; {done} finished job(s) are kept in {out / JOBS_DIR}: run the same "
        "command again to do the others and write the report."
    )


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def seed_list(
    seeds: list[str] | None,
    seed: int | None,
    datasets: list[Path],
    arguments: list[str] | None = None,
) -> tuple[tuple[int, ...], list[Path]]:
    """The seeds of ``--seeds`` / ``--seed``, and the datasets without the seeds' numbers.

    An option takes one value, so in ``--seeds 0 1 2 a.h5`` the parser hands ``1`` and ``2`` to
    the dataset arguments: an integer that directly follows a ``--seeds`` value in the command
    line (``arguments``, as typed) and is not an existing file is taken back as a seed. Any
    other argument stays a dataset: in ``a.h5 3 --seeds 0`` a missing ``3`` is a missing file.
    ``--seeds 0,1,2`` and repeated ``--seeds`` work too.

    Raises:
        UsageError: both ``--seed`` and ``--seeds``, or a ``--seeds`` value that is no integer.
    """
    if seeds is None:
        return (defaults.seeds[0] if seed is None else seed,), datasets
    if seed is not None:
        raise UsageError("give either --seed N (one seed) or --seeds N N... (several), not both")
    values = [part for value in seeds for part in value.replace(",", " ").split()]
    parsed = []
    for value in values:
        number = _integer(value)
        if number is None:
            raise UsageError(f"--seeds takes integers, got {value!r}; e.g. --seeds 0 1 2")
        parsed.append(number)
    trailing = _after_seeds(arguments or [])
    kept = []
    for path in datasets:
        number = _integer(str(path))
        if number is not None and str(path) in trailing and not path.exists():
            trailing.remove(str(path))
            parsed.append(number)
        else:
            kept.append(path)
    return tuple(parsed), kept


def _after_seeds(arguments: list[str]) -> list[str]:
    """The integers typed directly after a ``--seeds`` value (``--seeds 0 1 2``: ``1``, ``2``)."""
    trailing, index = [], 0
    while index < len(arguments):
        token = arguments[index]
        index += 2 if token == "--seeds" else 1
        if token == "--seeds" or token.startswith("--seeds="):
            while index < len(arguments) and _integer(arguments[index]) is not None:
                trailing.append(arguments[index])
                index += 1
    return trailing


class RecordsArguments(TyperCommand):
    """A command that keeps its arguments as typed (``ctx.meta["arguments"]``): the parser
    loses their order, which tells a seed after ``--seeds`` from a dataset."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["arguments"] = list(args)
        return super().parse_args(ctx, args)


@app.command("evaluate", cls=RecordsArguments)
@reports_user_errors
@honours_deterministic
def evaluate_command(
    ctx: typer.Context,
    datasets: Annotated[
        list[Path],
        typer.Argument(
            help="mmgen HDF5 files with the same number of modalities, reported side by side "
            "(e.g. MNIST-E, MNIST-ME and the naive pairing).",
            metavar="DATA.h5...",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for report.json, report.md, PNGs.")],
    models: Annotated[
        list[str] | None,
        typer.Option(
            "--models",
            help=f"Models to train on every dataset, from {', '.join(MODELS)}: comma-separated "
            f"and/or repeated (default: {', '.join(defaults.models)}).",
            metavar="MODEL[,MODEL...]",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs of every model.")] = defaults.epochs,
    k: Annotated[
        int, typer.Option("--k", help="Importance samples K of log p(M) and the conditionals.")
    ] = defaults.k,
    prior_samples: Annotated[
        int, typer.Option(help="Prior draws N_w estimating p(given) in log p(a|b).")
    ] = defaults.prior_samples,
    joint_samples: Annotated[
        int, typer.Option(help="Prior draws of the joint coherence.")
    ] = defaults.joint_samples,
    limit: Annotated[
        int | None,
        typer.Option(help="Use only the first N train and test tuples of every file (quick runs)."),
    ] = defaults.limit,
    test_limit: Annotated[
        int | None,
        typer.Option(
            help="Measure on only the first N test tuples (the metrics cost N·K decodes); "
            "overrides --limit for the test split."
        ),
    ] = defaults.test_limit,
    latent_dim: Annotated[
        int,
        typer.Option(
            help="Latent size d of every multi-modal VAE (the paper's 2; d <= 2 also gives "
            "the quadrature log p(M))."
        ),
    ] = defaults.latent_dim,
    batch_size: Annotated[
        int, typer.Option(help="Examples per training step.")
    ] = defaults.batch_size,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = defaults.lr,
    classifier_epochs: Annotated[
        int, typer.Option(help="Epochs of each real-data classifier (cached per source).")
    ] = defaults.classifier_epochs,
    threads: Annotated[
        int,
        typer.Option(
            help="Torch CPU threads of every classifier and job (recorded; part of each job's "
            "key): a fixed count gives the same report from one process or torchrun ranks."
        ),
    ] = defaults.threads,
    cache_dir: CacheDirOption = None,
    data_dir: DataDirOption = None,
    seed: Annotated[
        int, typer.Option("--seed", help="One seed of every random draw (--seeds for several).")
    ] = defaults.seeds[0],
    seeds: Annotated[
        list[str] | None,
        typer.Option("--seeds", help=SEEDS_HELP, metavar="N [N...]", show_default=False),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Reuse --out although it holds jobs of other settings: redo the jobs they "
            "affect, remove jobs this command does not ask for.",
        ),
    ] = False,
    device: DeviceOption = defaults.device,
    deterministic: DeterministicOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train multi-modal VAEs on each dataset with the same seed and measure them (docs/method.md).

    Writes report.json (every figure, config and seeds), report.md (tables, datasets side by
    side, classifier ceilings), latent-<model>.png and curves-<dataset>-<model>.png. The folder
    appears only when the whole report is written.
    """
    configure_logging(verbose)
    # --seed given on the command line (not its default) with --seeds is a contradiction.
    source = ctx.get_parameter_source("seed")
    given_seed = seed if getattr(source, "name", "") == "COMMANDLINE" else None
    seed_values, datasets = seed_list(seeds, given_seed, datasets, ctx.meta.get("arguments"))
    config = EvaluateConfig(
        models=model_names(models),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        k=k,
        prior_samples=prior_samples,
        joint_samples=joint_samples,
        limit=limit,
        test_limit=test_limit,
        latent_dim=latent_dim,
        seeds=seed_values,
        device=getattr(device, "value", device),
        classifier_epochs=classifier_epochs,
        threads=threads,
    )
    with distributed.session(config.device) as world:
        # One bar over all jobs, naming the current one; under torchrun, rank 0's only.
        hidden = quiet or not world.is_main
        tasks = tqdm(total=None, unit="job", disable=hidden, desc="evaluate", position=0, delay=0.5)
        steps = tqdm(
            total=None,
            unit="img",
            unit_scale=True,
            disable=hidden,
            leave=False,
            position=1,
            delay=0.5,
        )

        def on_task(done: int, total: int, description: str) -> None:
            tasks.total = total
            tasks.n = done
            tasks.set_description(description)
            steps.reset()

        try:
            # SIGTERM and SIGHUP (the end of a Slurm allocation) arrive here as Ctrl-C does
            # (reports_user_errors).
            report = evaluate_datasets(
                datasets,
                out,
                config,
                data_dir=data_dir,
                cache_dir=cache_dir,
                on_task=on_task,
                on_step=lambda step: steps.update(step["batch"]),
                overwrite=overwrite,
                world=world,
            )
        except KeyboardInterrupt as interrupt:
            steps.close()
            tasks.close()
            if world.is_main:
                typer.echo(interrupted_message(out, interrupt), err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            steps.close()
            tasks.close()
    if report is None:  # a rank other than 0 under torchrun: rank 0 writes and reports
        return
    ceilings = ", ".join(
        f"{spec} {summary['test_accuracy']:.3f}" for spec, summary in report["classifiers"].items()
    )
    typer.echo(
        f"Wrote {out / 'report.md'} and {out / 'report.json'} ({len(report['datasets'])} "
        f"dataset(s) × {len(config.models)} model(s) × {len(config.seeds)} seed(s); classifier "
        f"ceilings: {ceilings})"
    )
