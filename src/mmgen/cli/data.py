"""Dataset commands: ``mmgen generate``, ``mmgen shuffle``, ``mmgen pair``, ``mmgen inspect``."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from mmgen import distributed, polymnist
from mmgen import generate as generating
from mmgen import pair as pairing
from mmgen import shuffle as shuffling
from mmgen.cli.common import (
    DataDirOption,
    DeterministicOption,
    DeviceOption,
    QuietOption,
    SeedOption,
    VerboseOption,
    app,
    configure_logging,
    honours_deterministic,
    reports_user_errors,
)
from mmgen.cli.source_options import SOURCE_HELP, DownloadOption, PairClassesOption
from mmgen.data.h5io import IMAGE_DTYPES, SPLITS, open_dataset
from mmgen.data.sources import parse_classes
from mmgen.device import resolve_device
from mmgen.errors import UsageError

# CLI choices are enums built from the library's registries.
Truncation = Enum("Truncation", {name: name for name in generating.TRUNCATIONS}, type=str)
LabelPolicy = Enum("LabelPolicy", {name: name for name in generating.LABEL_POLICIES}, type=str)
DecodeMode = Enum("DecodeMode", {name: name for name in generating.DECODE_MODES}, type=str)
ImageDtype = Enum("ImageDtype", {name: name for name in IMAGE_DTYPES}, type=str)

OutOption = Annotated[Path, typer.Option("--out", help="HDF5 file to write.", dir_okay=False)]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace --out if it exists (otherwise an error).")
]
AllowCollapsedOption = Annotated[
    bool,
    typer.Option(
        "--allow-collapsed",
        help="Decode CVAEs whose posterior collapsed (test KL < 0.5 nats; the file records it).",
    ),
]
TruthPointsOption = Annotated[
    int,
    typer.Option(
        "--truth-points",
        help="Also compute the written file's ground truth, as mmgen truth --points N "
        "(FILE.truth.h5; d > 2: importance sampling); 0: not here. 16-32 take minutes for d = 2 "
        "on a CPU; mmgen truth's default, 128, hours.",
    ),
]
defaults = generating.GenerateConfig()
mix_defaults = shuffling.MixConfig()
pair_defaults = pairing.PairConfig()


def _check_truth_points(points: int) -> None:
    """Refuse, before any work, a grid the truth could not use (0: no truth here)."""
    if points == 1 or points < 0:
        raise UsageError(f"--truth-points {points}: give 0 (no truth here) or at least 2 cells")


def _store_truths(paths: list[Path], points: int, device: str) -> None:
    """``mmgen truth --points points`` on files just written (decoding their codes once)."""
    from mmgen.truth import Settings, ensure_truths, truth_path
    from mmgen.truth.text import describe

    for truth, path in zip(
        ensure_truths(paths, Settings(points=points), device), paths, strict=True
    ):
        typer.echo(f"Truth of {path.name}, stored in {truth_path(path).name}:")
        typer.echo("\n".join(describe(truth.summary)))


def _value(choice: Enum | str) -> str:
    """An enum choice's value (typer passes a default through as the plain string)."""
    return str(getattr(choice, "value", choice))


def _progress(total: int | None, quiet: bool, desc: str) -> tqdm:
    # delay: a command rejected at once draws no bar before its error line.
    return tqdm(total=total, unit="tuple", unit_scale=True, disable=quiet, desc=desc, delay=0.5)


@app.command("generate")
@reports_user_errors
@honours_deterministic
def generate_command(
    cvae: Annotated[
        list[Path],
        typer.Option(
            "--cvae",
            help="CVAE checkpoint folder (mmgen train-cvae), once per modality, in order.",
            file_okay=False,
        ),
    ],
    out: OutOption,
    n_train: Annotated[
        int, typer.Option(help="Train tuples (grid: a multiple of the class count).")
    ] = defaults.n_train,
    n_test: Annotated[int, typer.Option(help="Test tuples, from codes unseen in training.")] = (
        defaults.n_test
    ),
    truncation: Annotated[
        Truncation,
        typer.Option(help="radial: keep ‖z‖₂ ≤ radius; box: keep every |z_i| ≤ radius."),
    ] = defaults.truncation,
    radius: Annotated[
        float, typer.Option(help="Truncation radius in σ (authors' notebook: radial 1.645).")
    ] = defaults.radius,
    labels: Annotated[
        LabelPolicy,
        typer.Option(help="grid: every code with every class; independent: a class per tuple."),
    ] = defaults.labels,
    decode: Annotated[
        DecodeMode, typer.Option(help="mean: σ(logits); sample: a Bernoulli draw per pixel.")
    ] = defaults.decode,
    dtype: Annotated[
        ImageDtype, typer.Option(help="uint8: round(255·x); float32: x in [0, 1].")
    ] = defaults.dtype,
    batch_size: Annotated[
        int,
        typer.Option(
            help="Tuples per step, rounded up to a multiple of 1024 (speed and memory only: "
            "the data and bytes do not change)."
        ),
    ] = generating.DEFAULT_BATCH_SIZE,
    modality: Annotated[
        list[str] | None,
        typer.Option(
            "--modality", help="Modality names, one per --cvae (default: the source names)."
        ),
    ] = None,
    seed: SeedOption = defaults.seed,
    device: DeviceOption = "auto",
    deterministic: DeterministicOption = False,
    overwrite: OverwriteOption = False,
    allow_collapsed: AllowCollapsedOption = False,
    truth_points: TruthPointsOption = 0,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Decode shared latent codes with every CVAE into an entangled dataset (MNIST-E).

    Example: mmgen generate --cvae runs/cvae-mnist --cvae runs/cvae-fashion --out mnist-e.h5
    """
    configure_logging(verbose)
    _check_truth_points(truth_points)
    config = generating.GenerateConfig(
        n_train=n_train,
        n_test=n_test,
        truncation=_value(truncation),
        radius=radius,
        labels=_value(labels),
        decode=_value(decode),
        dtype=_value(dtype),
        seed=seed,
    )
    with (
        distributed.session(_value(device)) as world,
        _progress(n_train + n_test, quiet or not world.is_main, "generate") as bar,
    ):
        path = generating.generate_dataset(
            cvae,
            out,
            config,
            device=_value(device),
            batch_size=batch_size,
            modality_names=modality or None,
            overwrite=overwrite,
            on_progress=bar.update,
            world=world,
            allow_collapsed=allow_collapsed,
        )
    if not world.is_main:  # under torchrun, rank 0 writes the file and reports
        return
    typer.echo(f"Wrote {path} ({n_train} train + {n_test} test tuples, {len(cvae)} modalities)")
    if truth_points:
        _store_truths([path], truth_points, str(resolve_device(_value(device))))


@app.command("polymnist")
@reports_user_errors
@honours_deterministic
def polymnist_command(
    out: OutOption,
    cvae: Annotated[
        list[Path] | None,
        typer.Option(
            "--cvae",
            help="CVAE folder per modality, in order; repeat one to share it (PolyMNIST: 5).",
            file_okay=False,
        ),
    ] = None,
    background: Annotated[
        list[str] | None,
        typer.Option(
            "--background",
            help="Background per modality (or one folder for all): "
            + polymnist.SPEC_HELP
            + " [default: the scikit-learn photos, alternating].",
        ),
    ] = None,
    naive: Annotated[
        bool,
        typer.Option(
            "--naive",
            help="PolyMNIST itself: real --source digits of the class, one per modality.",
        ),
    ] = False,
    modalities: Annotated[
        int, typer.Option(help="--naive: number of modalities (PolyMNIST: 5).")
    ] = 5,
    source: Annotated[str, typer.Option(help="--naive: source of the real digits.")] = "mnist",
    data_dir: DataDirOption = None,
    limit: Annotated[
        int | None, typer.Option(help="--naive: read only the first N examples per split.")
    ] = None,
    download: DownloadOption = False,
    n_train: Annotated[int, typer.Option(help="Train tuples (as generate).")] = defaults.n_train,
    n_test: Annotated[int, typer.Option(help="Test tuples (as generate).")] = defaults.n_test,
    truncation: Annotated[Truncation, typer.Option(help="As generate.")] = defaults.truncation,
    radius: Annotated[float, typer.Option(help="As generate.")] = defaults.radius,
    labels: Annotated[LabelPolicy, typer.Option(help="As generate.")] = defaults.labels,
    decode: Annotated[
        DecodeMode,
        typer.Option(help="mean: digit = σ(logits) > 0.5; sample: a Bernoulli draw per pixel."),
    ] = defaults.decode,
    batch_size: Annotated[
        int, typer.Option(help="Tuples per step (speed and memory only).")
    ] = generating.DEFAULT_BATCH_SIZE,
    modality: Annotated[
        list[str] | None,
        typer.Option("--modality", help="Modality names, one per --cvae (default: m0, m1, ...)."),
    ] = None,
    seed: SeedOption = defaults.seed,
    device: DeviceOption = "auto",
    deterministic: DeterministicOption = False,
    overwrite: OverwriteOption = False,
    allow_collapsed: AllowCollapsedOption = False,
    truth_points: TruthPointsOption = 0,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """PolyMNIST-E: each modality's digit on a seeded crop of its own background (RGB).

    Example: mmgen polymnist --cvae runs/cvae-mnist --cvae runs/cvae-mnist --out poly-e.h5;
    with --naive --source mnist: PolyMNIST's own pairing of real digits.
    """
    configure_logging(verbose)
    if naive == bool(cvae):
        raise UsageError("give --cvae once per modality (PolyMNIST-E), or --naive (not both)")
    _check_truth_points(truth_points)
    if naive and truth_points:
        raise UsageError("--truth-points: a naive pairing of real digits has no ground truth")
    if naive:
        with _progress(None, quiet, "polymnist") as bar:
            path = polymnist.pair_polymnist(
                out,
                modality or modalities,
                background or (),
                source=source,
                seed=seed,
                data_dir=data_dir,
                limit=limit,
                download=download,
                overwrite=overwrite,
                on_progress=bar.update,
            )
        typer.echo(f"Wrote {path} (PolyMNIST-style naive pairing of {source})")
        return
    config = generating.GenerateConfig(
        n_train=n_train,
        n_test=n_test,
        truncation=_value(truncation),
        radius=radius,
        labels=_value(labels),
        decode=_value(decode),
        seed=seed,
    )
    with _progress(n_train + n_test, quiet, "polymnist") as bar:
        path = polymnist.generate_polymnist(
            cvae or [],
            out,
            config,
            background or (),
            device=_value(device),
            batch_size=batch_size,
            modality_names=modality or None,
            overwrite=overwrite,
            allow_collapsed=allow_collapsed,
            on_progress=bar.update,
        )
    typer.echo(
        f"Wrote {path} (PolyMNIST-E: {n_train} train + {n_test} test tuples, "
        f"{len(cvae or [])} modalities)"
    )
    if truth_points:
        _store_truths([path], truth_points, str(resolve_device(_value(device))))


@app.command("shuffle")
@reports_user_errors
def shuffle_command(
    source: Annotated[
        Path, typer.Argument(help="Entangled file from mmgen generate.", dir_okay=False)
    ],
    out: OutOption,
    modality: Annotated[
        str | None,
        typer.Option(help="Modality to permute within each class (default: the last)."),
    ] = None,
    seed: SeedOption = mix_defaults.seed,
    fraction: Annotated[
        float,
        typer.Option(
            help="Share f of each class's tuples permuted (1: MNIST-ME; 0.5: partly mixed)."
        ),
    ] = mix_defaults.fraction,
    block_codes: Annotated[
        int,
        typer.Option(
            help="Permute within blocks of this many consecutive codes, so any prefix of whole "
            "blocks keeps the entangled file's images (0: the whole split, as before)."
        ),
    ] = mix_defaults.block_codes,
    overwrite: OverwriteOption = False,
    truth_points: TruthPointsOption = 0,
    device: DeviceOption = "cpu",
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Make the mixed baseline (MNIST-ME): permute one modality within each class and split.

    The class stays shared; the continuous correlation through z is broken (for a share
    --fraction of the tuples).
    """
    configure_logging(verbose)
    _check_truth_points(truth_points)
    config = shuffling.MixConfig(
        modality=modality or "", seed=seed, fraction=fraction, block_codes=block_codes
    )
    with _progress(None, quiet, "shuffle") as bar:
        path = shuffling.mix_modality(source, out, config, overwrite, on_progress=bar.update)
    typer.echo(
        f"Wrote {path} (mixed: {config.modality or 'last modality'} permuted per class, "
        f"fraction {config.fraction:g})"
    )
    if truth_points:  # the source's truth too: the true gap needs both (decoded once)
        _store_truths([source, path], truth_points, _value(device))


@app.command("pair")
@reports_user_errors
def pair_command(
    source: Annotated[
        list[str],
        typer.Option(
            "--source",
            help="Source per modality, in order: " + SOURCE_HELP,
        ),
    ],
    out: OutOption,
    data_dir: DataDirOption = None,
    limit: Annotated[
        int | None, typer.Option(help="Read only the first N examples of each source split.")
    ] = pair_defaults.limit,
    download: DownloadOption = False,
    classes: PairClassesOption = None,
    seed: SeedOption = pair_defaults.seed,
    overwrite: OverwriteOption = False,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Make the naive baseline: pair real images of the same class from each source at random.

    Example: mmgen pair --source mnist --source fashion-mnist --out m-mnist.h5
    """
    configure_logging(verbose)
    chosen = tuple(parse_classes(text) or () for text in classes or [])
    if len(chosen) == 1:
        chosen = chosen * len(source)  # one --classes applies to every source
    config = pairing.PairConfig(sources=tuple(source), seed=seed, limit=limit, classes=chosen)
    with _progress(None, quiet, "pair") as bar:
        path = pairing.pair_sources(
            out, config, data_dir, download, overwrite, on_progress=bar.update
        )
    with open_dataset(path) as handle:
        sizes = ", ".join(f"{len(handle[s]['labels']):,} {s}" for s in SPLITS)
    typer.echo(f"Wrote {path} (naive pairing of {', '.join(source)}: {sizes} tuples)")


@app.command("inspect")
@reports_user_errors
def inspect_command(
    file: Annotated[Path, typer.Argument(help="An mmgen HDF5 file.", dir_okay=False)],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="PNG to write: tuples per class and a latent sweep."),
    ] = None,
    cvae: Annotated[
        list[Path] | None,
        typer.Option(
            "--cvae",
            help="The file's CVAE checkpoints, one per modality: the sweep decodes new codes.",
            file_okay=False,
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Split shown in the figure.")] = "test",
    per_class: Annotated[int, typer.Option(help="Tuples per class row.")] = 4,
    sweep_class: Annotated[int, typer.Option(help="Class of the latent sweep.")] = 0,
    device: DeviceOption = "cpu",
    verbose: VerboseOption = False,
) -> None:
    """Print what an mmgen file holds; with --out, draw it (paper Fig. 1, top left)."""
    from mmgen import inspect as inspecting  # matplotlib is only needed here

    configure_logging(verbose)
    inspecting.check_cvae_options(file, cvae, out)
    typer.echo(inspecting.summarize(file).format())
    if out is not None:
        path = inspecting.draw_dataset(
            file,
            out,
            split=split,
            per_class=per_class,
            sweep_class=sweep_class,
            cvae_folders=list(cvae) if cvae else None,
            device=_value(device),
        )
        typer.echo(f"Wrote {path}")
