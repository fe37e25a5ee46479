"""``mmgen train-cvae``: train one class-conditional β-CVAE per uni-modal source."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from mmgen.checkpoint import holds_model, saved_epochs
from mmgen.cli import EXIT_INTERRUPTED
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
from mmgen.cli.source_options import SOURCE_HELP, ClassesOption, DownloadOption
from mmgen.cvae_training import train_cvae
from mmgen.data.sources import parse_classes
from mmgen.models.cvae import CVAEConfig
from mmgen.train import TrainConfig


def interrupted_message(out: Path, interrupt: KeyboardInterrupt) -> str:
    """What an interrupted run left in ``out``: its last complete checkpoint, or nothing."""
    what = f" ({interrupt})" if str(interrupt) else ""
    if holds_model(out):
        return (
            f"Interrupted{what}; {out} holds the last complete checkpoint "
            f"({saved_epochs(out)} epochs): continue it with the same command and --resume"
        )
    return f"Interrupted{what}; no checkpoint was written to {out}."


model_defaults = CVAEConfig()
train_defaults = TrainConfig()


@app.command("train-cvae")
@reports_user_errors
@honours_deterministic
def train_cvae_command(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help=SOURCE_HELP,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write.")],
    data_dir: DataDirOption = None,
    epochs: Annotated[
        int, typer.Option(help="Training epochs (reference: 100).")
    ] = train_defaults.epochs,
    limit: Annotated[
        int | None,
        typer.Option(help="Use only the first N train and test examples (quick runs)."),
    ] = None,
    latent_dim: Annotated[int, typer.Option(help="Latent size d.")] = model_defaults.latent_dim,
    beta: Annotated[
        float | None,
        typer.Option(
            help="Weight β of the KL term [default: 4 per 784 pixel values, 4·C·H·W/784: "
            "4 for 1×28×28, 0.33 for 1×8×8, 15.7 for 3×32×32]."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = train_defaults.batch_size,
    lr: Annotated[float, typer.Option(help="RMSprop learning rate.")] = train_defaults.lr,
    batch_norm_mu: Annotated[
        bool, typer.Option(help="BatchNorm on μ (a variant of the authors' notebooks).")
    ] = model_defaults.batch_norm_mu,
    seed: SeedOption = train_defaults.seed,
    device: DeviceOption = "auto",
    deterministic: DeterministicOption = False,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out up to --epochs.")] = False,
    download: DownloadOption = False,
    classes: ClassesOption = None,
    quiet: QuietOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train a β-CVAE (Korthals et al., Table 2) on one source and write a checkpoint folder.

    The folder holds model.json (config and run record), weights.pt, history.json, samples.png
    (a row per class), latent.png (test-set latent means by class) and curves.png. It is saved
    after every epoch, as one unit; --resume continues it with the same settings.
    """
    configure_logging(verbose)
    model_config = CVAEConfig(latent_dim=latent_dim, beta=beta, batch_norm_mu=batch_norm_mu)
    train_config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    # One bar per epoch, made when the first step runs: a rejected command draws none.
    bars: dict[int, tqdm] = {}
    epochs_seen = [0]

    def on_step(step: dict[str, float]) -> None:
        epoch = epochs_seen[0]
        if epoch not in bars:
            bars[epoch] = tqdm(
                unit="img",
                unit_scale=True,
                disable=quiet,
                leave=False,
                desc=f"{source} epoch {epoch + 1}",
            )
        bars[epoch].update(step["batch"])

    def on_epoch_end(epochs_done: int, record: dict[str, float]) -> None:
        epochs_seen[0] = epochs_done
        for bar in bars.values():
            bar.close()
        if not quiet:
            typer.echo(
                f"epoch {epochs_done}/{epochs}: train loss {record['train_loss']:.2f}, "
                f"test loss {record['test_loss']:.2f} (reconstruction "
                f"{record['test_reconstruction']:.2f}, KL {record['test_kl']:.2f})",
                err=True,
            )

    try:
        # SIGTERM and SIGHUP arrive here as interrupts too (reports_user_errors).
        checkpoint = train_cvae(
            out,
            source,
            model_config,
            train_config,
            data_dir=data_dir,
            limit=limit,
            device=getattr(device, "value", device),
            resume=resume,
            download=download,
            classes=parse_classes(classes),
            on_step=on_step,
            on_epoch_end=on_epoch_end,
        )
    except KeyboardInterrupt as interrupt:
        for bar in bars.values():
            bar.close()
        typer.echo(interrupted_message(out, interrupt), err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        for bar in bars.values():
            bar.close()
    typer.echo(
        f"Wrote {checkpoint.path} ({checkpoint.metadata['epochs_done']} epochs, "
        f"weights sha256 {checkpoint.sha256[:12]}); figures: samples.png, latent.png, curves.png"
    )
