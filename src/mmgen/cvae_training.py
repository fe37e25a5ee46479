"""``mmgen train-cvae`` as a library call: train one β-CVAE on one uni-modal source.

Trains on the source's train split, evaluates on its test split after every epoch, and saves
the model folder (``mmgen.checkpoint``, kind ``"cvae"``) after every epoch as one unit, so that a
kill at any instant leaves a complete checkpoint to resume from. The last epoch's unit also holds
``samples.png`` (a row per class), ``latent.png`` (Korthals et al., Fig. 1 top right) and
``curves.png``. The folder is locked for the whole run: a second writer is refused at once.

Resuming continues the saved run only: every setting but the number of epochs must be the saved
one (``refuse_changes``), so that a resumed run gives the weights of an uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen import collapse, plots, rng
from mmgen.atomic import folder_lock, recover
from mmgen.checkpoint import (
    HISTORY_FILE,
    LEGACY_CONFIG_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    CVAECheckpoint,
    holds_model,
    load_cvae,
    run_record,
    save_checkpoint,
)
from mmgen.config import to_dict
from mmgen.data.shapes import describe
from mmgen.data.sources import SourceData, load_split
from mmgen.device import resolve_device
from mmgen.errors import UsageError
from mmgen.models.cvae import CVAE, CVAEConfig, build_cvae
from mmgen.resources import (
    checkpoint_bytes,
    cvae_training_bytes,
    meta_model,
    require_memory,
    require_output_space,
)
from mmgen.train import TrainConfig, fit, make_optimizer

log = logging.getLogger(__name__)

SAMPLES_PER_CLASS = 10
FIGURES = ("samples.png", "latent.png", "curves.png")
# What a CVAE folder may hold: a fresh run replaces a folder of these, and of nothing else.
CHECKPOINT_FILE_NAMES = frozenset(
    {MODEL_FILE, WEIGHTS_FILE, HISTORY_FILE, LEGACY_CONFIG_FILE, *FIGURES}
)


def training_tensors(data: SourceData, device: torch.device) -> dict[str, torch.Tensor]:
    """``data.as_tensors`` with the images in channels_last, the layout the CVAE trains in."""
    tensors = data.as_tensors(device)
    tensors["images"] = tensors["images"].contiguous(memory_format=torch.channels_last)
    return tensors


def train_cvae(
    out: Path | str,
    source: str = "mnist",
    model_config: CVAEConfig | None = None,
    train_config: TrainConfig | None = None,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    device: str = "auto",
    resume: bool = False,
    download: bool = False,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    classes: Sequence[str | int] | None = None,
) -> CVAECheckpoint:
    """Train (or resume training) a β-CVAE on ``source`` and write its checkpoint folder.

    Args:
        out: the checkpoint folder; must not hold a checkpoint unless ``resume``.
        source: a source spec of ``mmgen.data.sources`` (``mnist``, ``fashion-mnist``, ``idx:DIR``).
        model_config: architecture and β; ``num_classes`` is taken from the source.
        train_config: optimiser, epochs, batch size, seed.
        data_dir: where the source's files are (else the usual search order).
        limit: use only the first ``limit`` train and test examples (quick runs).
        device: ``auto``, ``cpu`` or ``cuda``.
        resume: continue the run in ``out`` up to ``train_config.epochs``.
        download: fetch missing source files from the official mirrors.
        on_step: progress callback after every optimisation step.
        on_epoch_end: callback with ``(epochs done, record)``.
        classes: keep only these classes of the source (names or indices), relabelled 0..K-1
            in this order (``--classes``); recorded in the checkpoint's source identity.

    Returns:
        The trained model, loaded back from the folder.
    """
    out = Path(out)
    model_config = model_config or CVAEConfig()
    train_config = train_config or TrainConfig()
    if limit is not None and limit <= 0:
        raise UsageError(f"--limit must be > 0, got {limit}")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the checkpoint")
    torch_device = resolve_device(device)
    # The lock comes first: it refuses a second writer and tells whether --out's parent is
    # writable before any data is read or any epoch is trained.
    with folder_lock(out):
        recover(out, locked=True)
        previous = previous_run(out, resume)
        if previous is not None:
            refuse_changes(previous, out, source, limit, model_config, train_config, torch_device)
            if train_config.epochs < previous.metadata["epochs_done"]:
                raise UsageError(
                    f"--epochs {train_config.epochs} is fewer than the "
                    f"{previous.metadata['epochs_done']} epochs already done in {out}"
                )
        return _train(
            out,
            source,
            model_config,
            train_config,
            data_dir,
            limit,
            torch_device,
            download,
            previous,
            on_step,
            on_epoch_end,
            classes,
        )


def check_every_class_trained(source: str, train: SourceData, limit: int | None) -> None:
    """Refuse a train split without examples of some classes of the source.

    The CVAE is built for every class the source names (its test split or class names); a class
    without a training example would be decoded from an untrained label embedding, without a
    word. The way out is ``--classes`` (the classes the split has), or a larger ``--limit``.
    """
    present = set(np.unique(train.labels).tolist())
    missing = [label for label in range(train.num_classes) if label not in present]
    if not missing:
        return

    def named(labels: list[int]) -> str:
        return ",".join(train.class_names[label] for label in labels)

    kept = [label for label in range(train.num_classes) if label in present]
    more = " or a larger --limit" if limit is not None else ""
    raise UsageError(
        f"{source}: the train split has no examples of {len(missing)} of its "
        f"{train.num_classes} classes ({named(missing)}); train on the classes it has with "
        f"--classes {named(kept)}{more}"
    )


def check_batch_norm_batches(config: CVAEConfig, batch_size: int, examples: int) -> None:
    """Refuse a BatchNorm on μ that would see a batch of one example (its variance is undefined:
    torch raises mid-epoch), before any work.

    Raises:
        UsageError: naming the batch of one and the ways out.
    """
    if not config.batch_norm_mu:
        return
    left = examples % batch_size if examples > batch_size else examples
    if batch_size == 1 or left == 1:
        where = "every batch" if batch_size == 1 else "the last batch of each epoch"
        raise UsageError(
            f"--batch-norm-mu needs at least 2 examples per batch, but {where} would hold one "
            f"({examples} training examples in batches of {batch_size}); change --batch-size "
            "or --limit"
        )


def _train(
    out: Path,
    source: str,
    model_config: CVAEConfig,
    train_config: TrainConfig,
    data_dir: Path | str | None,
    limit: int | None,
    torch_device: torch.device,
    download: bool,
    previous: CVAECheckpoint | None,
    on_step: Callable[[dict[str, float]], None] | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    classes: Sequence[str | int] | None = None,
) -> CVAECheckpoint:
    """The body of ``train_cvae`` once the request is checked and ``out`` is locked."""
    options = {"data_dir": data_dir, "download": download, "limit": limit, "classes": classes}
    train_data = load_split(source, "train", **options)
    test_data = load_split(source, "test", **options)
    if test_data.image_shape != train_data.image_shape:  # else: a traceback after an epoch
        raise UsageError(
            f"{source}: its train images are {describe(train_data.image_shape)} but its test "
            f"images are {describe(test_data.image_shape)}; both splits need one size and mode"
        )
    check_batch_norm_batches(model_config, train_config.batch_size, len(train_data.labels))
    check_every_class_trained(source, train_data, limit)
    # The classes and the image shape come from the data: the network is built for them.
    shape = train_data.image_shape
    model_config = replace(
        model_config,
        num_classes=train_data.num_classes,
        image_shape=shape,
    ).resolved()
    source_record = {
        **train_data.identity(),
        "name_spec": source,
        "class_names": list(train_data.class_names),
        "test_files": test_data.identity()["files"],
    }
    if previous is not None:
        refuse_other_files(previous, source_record, out)
    require_memory(
        cvae_training_bytes(model_config, min(train_config.batch_size, len(train_data.labels))),
        torch_device,
        f"a CVAE for {describe(shape)} images in batches of {train_config.batch_size}",
        "use smaller images (crop or resize them) or a smaller --batch-size",
    )
    # A full disk is found now, not when the first epoch is saved.
    require_output_space(
        out,
        "--out",
        checkpoint_bytes(meta_model(lambda: CVAE(model_config))),
        "the checkpoint",
    )

    # channels_last lets oneDNN run the 64-channel convolutions without layout conversions:
    # about 5× the training throughput of the default layout on a 2-core CPU (docs/performance.md).
    model = build_cvae(model_config, rng.stream(train_config.seed, "init")).to(
        torch_device, memory_format=torch.channels_last
    )
    optimizer = make_optimizer(model.parameters(), train_config)
    history: list[dict[str, float]] = []
    start_epoch = 0
    if previous is not None:
        model.load_state_dict(previous.model.state_dict())
        if previous.optimizer is None:
            raise UsageError(f"{out} holds no optimiser state, so it cannot be resumed")
        optimizer.load_state_dict(previous.optimizer)
        history = list(previous.history)
        start_epoch = previous.metadata["epochs_done"]

    train = training_tensors(train_data, torch_device)
    test = training_tensors(test_data, torch_device)

    def checkpoint(epochs_done: int, record: dict[str, float] | None) -> None:
        if record is not None:
            history.append(record)
        run = run_record(
            torch_device,
            source=source_record,
            limit=limit,
            train=to_dict(train_config),
            epochs_done=epochs_done,
            collapse=collapse.collapse_record(history),  # issue #19: generate refuses collapse
        )
        if epochs_done == train_config.epochs and run["collapse"]["collapsed"]:
            log.warning(collapse.warning(run["collapse"]["test_kl"]))

        def figures(folder: Path) -> None:
            draw_figures(
                folder, model, test, train_data.class_names, train_config.seed, source, history
            )

        # The last epoch's folder carries the figures: one unit with the weights they show.
        last = epochs_done == train_config.epochs
        save_checkpoint(out, model, optimizer, run, history, figures if last else None)
        if on_epoch_end is not None and record is not None:
            on_epoch_end(epochs_done, record)

    if start_epoch < train_config.epochs:
        fit(model, train, test, train_config, optimizer, start_epoch, on_step, checkpoint)
    elif not history:
        raise UsageError(f"nothing to do: {out} is already trained for {start_epoch} epochs")
    else:
        checkpoint(start_epoch, None)  # the figures of a finished run, drawn again
    return load_cvae(out, torch_device)


# The flag of each setting that ``--resume`` compares (fields without a flag are named as is).
FLAGS = {
    "source": "--source",
    "limit": "--limit",
    "device": "--device",
    "latent_dim": "--latent-dim",
    "beta": "--beta",
    "batch_norm_mu": "--batch-norm-mu",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "seed": "--seed",
}


def previous_run(out: Path, resume: bool) -> CVAECheckpoint | None:
    """The checkpoint in ``out`` to resume (``None`` for a fresh run), or a clear refusal.

    A fresh run may replace an empty folder or the incomplete leftovers of an older mmgen, but
    never a checkpoint (that needs ``--resume``) nor a folder of other files.
    """
    if holds_model(out):
        if not resume:
            raise FileExistsError(
                f"{out} already holds a checkpoint; pass --resume to continue it "
                "or choose another --out"
            )
        return load_cvae(out)
    if resume:
        if (out / WEIGHTS_FILE).is_file():
            raise UsageError(
                f"--resume: {out} holds an incomplete checkpoint ({WEIGHTS_FILE} only: an older "
                "mmgen was stopped while saving); run without --resume to start again"
            )
        raise FileNotFoundError(f"--resume: {out} holds no checkpoint to resume ({MODEL_FILE})")
    if out.is_dir():
        names = sorted(entry.name for entry in out.iterdir())
        foreign = [name for name in names if name not in CHECKPOINT_FILE_NAMES]
        if foreign:
            raise FileExistsError(
                f"--out {out} holds files that are not a checkpoint ({', '.join(foreign[:3])}); "
                "a checkpoint folder is replaced as a whole: choose a new or empty folder"
            )
        if names:  # an empty folder (a study's job folder, a user's mkdir) replaces nothing
            log.warning("replacing the incomplete checkpoint in %s", out)
    return None


def refuse_changes(
    previous: CVAECheckpoint,
    out: Path,
    source: str,
    limit: int | None,
    model_config: CVAEConfig,
    train_config: TrainConfig,
    device: torch.device,
) -> None:
    """Raise ``UsageError`` naming every setting of the request that differs from the saved run.

    Only ``--epochs`` may change: anything else would not continue the same run, and would not
    give the weights of an uninterrupted run.
    """
    saved = previous.metadata
    missing = [key for key in ("source", "train", "epochs_done") if key not in saved]
    if missing or "name_spec" not in saved["source"]:
        raise UsageError(f"{out} cannot be resumed: its run record lacks {missing or 'name_spec'}")
    pairs = {
        "source": (source, saved["source"]["name_spec"]),
        "limit": (limit, saved.get("limit")),
        "device": (str(device), saved.get("device")),
    }
    # β unset: the default for the saved run's images.
    requested_model = to_dict(
        replace(model_config, image_shape=previous.config.image_shape).resolved()
    )
    for name, value in to_dict(previous.config).items():
        if name not in ("num_classes", "image_shape"):  # from the source, compared through it
            pairs[name] = (requested_model[name], value)
    requested_train = to_dict(train_config)
    for name, value in saved["train"].items():
        if name != "epochs":
            pairs[name] = (requested_train.get(name), value)
    differences = [
        f"{FLAGS.get(name, name)} {asked} (saved: {kept})"
        for name, (asked, kept) in pairs.items()
        if asked != kept
    ]
    if differences:
        raise UsageError(
            f"--resume: the request differs from the run saved in {out}: "
            f"{'; '.join(differences)}. Repeat the saved settings (only --epochs may change)"
        )


def refuse_other_files(previous: CVAECheckpoint, source: dict[str, Any], out: Path) -> None:
    """Raise ``UsageError`` when the source's files are not those the saved run trained on."""
    saved = previous.metadata["source"]
    if saved.get("classes") != source.get("classes"):
        raise UsageError(
            f"--resume: --classes chooses classes {source.get('classes', 'all')} of "
            f"{source['name_spec']} but the run in {out} was trained on "
            f"{saved.get('classes', 'all')}; pass the same --classes"
        )
    for key in ("files", "test_files"):
        if key in saved and saved[key] != source[key]:
            raise UsageError(
                f"--resume: the files of source {source['name_spec']} differ from those the run "
                f"in {out} was trained on ({source['root']}); point --data-dir at the original "
                "files"
            )


@torch.no_grad()
def draw_figures(
    out: Path,
    model: CVAE,
    test: dict[str, torch.Tensor],
    class_names: tuple[str, ...],
    seed: int,
    title: str,
    history: list[dict[str, float]],
) -> None:
    """Write ``samples.png``, ``latent.png`` and ``curves.png`` into ``out``."""
    model.eval()
    device = test["images"].device
    num_classes = model.config.num_classes
    generator = rng.stream(seed, "figure", "samples", device=device)
    z = torch.randn(
        num_classes * SAMPLES_PER_CLASS, model.config.latent_dim, generator=generator, device=device
    )
    labels = torch.arange(num_classes, device=device).repeat_interleave(SAMPLES_PER_CLASS)
    images = model.decode(z, labels)  # (K·S, C, H, W)
    images = images.view(num_classes, SAMPLES_PER_CLASS, *model.config.image_shape)
    plots.image_grid(
        images.cpu().numpy(),
        class_names,
        out / "samples.png",
        f"{title}: z ~ N(0, I), one row per class",
    )
    means = torch.cat(
        [
            model.encode(test["images"][i : i + 1000], test["labels"][i : i + 1000])[0]
            for i in range(0, len(test["labels"]), 1000)
        ]
    )
    plots.latent_scatter(
        means.cpu().numpy(),
        test["labels"].cpu().numpy(),
        class_names,
        out / "latent.png",
        f"{title}: test-set latent means μ(x, C)",
    )
    plots.training_curves(history, out / "curves.png", f"{title}: β-CVAE training")
