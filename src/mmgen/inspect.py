"""``mmgen inspect``: what an mmgen file holds, and a figure to see it.

The figure shows tuples side by side, a row per class (Korthals et al., Fig. 1 top left): in an
entangled file (MNIST-E) the modalities of a tuple vary together (a thick digit with a bulky
garment, say), in its mixed twin or a naive pairing they share only the class. A latent sweep
below walks one class along the first latent axis: decoded with the CVAEs when given, else made
of stored tuples sorted by their true code.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen import plots
from mmgen.checkpoint import CVAECheckpoint, load_cvae
from mmgen.data import h5io
from mmgen.data.header import DatasetHeader
from mmgen.data.shapes import ImageShape, describe, from_stored
from mmgen.device import resolve_device
from mmgen.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetSummary:
    """The facts ``mmgen inspect`` prints about a file."""

    path: Path
    header: DatasetHeader  # the validated root attributes
    sizes: dict[str, int]  # split → tuples
    class_counts: dict[str, list[int]]  # split → tuples per class
    image_dtype: str
    truth: dict[str, Any] | None = None  # the stored ground truth's summary (mmgen truth)

    def format(self) -> str:
        """A few human-readable lines."""
        header = self.header
        sources = ", ".join(
            f"{m} (source {header.sources[m].name}, {describe(header.image_shapes[m])})"
            for m in header.modalities
        )
        lines = [
            f"{self.path}: {header.kind} dataset, schema {header.schema_version}, "
            f"written by mmgen {header.mmgen_version}",
            "modalities: " + sources,
            f"classes: {header.num_classes}; latent size: "
            + (str(header.latent_dim) if header.has_latent else "none (no true code stored)"),
            f"images: {self.image_dtype}; seed: {header.seed}",
        ]
        for split, size in self.sizes.items():
            counts = self.class_counts[split]
            lines.append(f"{split}: {size} tuples, per class {min(counts)}..{max(counts)}")
        config = header.config
        lines.append("config: " + ", ".join(f"{k}={v}" for k, v in sorted(config.items())))
        if self.truth is not None:
            from mmgen.truth.text import describe as describe_truth

            lines += describe_truth(self.truth)
        return "\n".join(lines)


def summarize(path: Path | str) -> DatasetSummary:
    """Read what a file holds, checking that every dataset of both splits can be read.

    Raises:
        UsageError: the file is not a complete mmgen file, or a dataset is damaged.
    """
    with h5io.open_dataset(path) as handle:
        header = h5io.header_from_attrs(handle.attrs, path)
        h5io.verify_readable(handle, path)
        sizes = {s: len(handle[s]["labels"]) for s in h5io.SPLITS}
        counts = {}
        for split in h5io.SPLITS:
            labels = handle[split]["labels"][:]
            if labels.min() < 0 or labels.max() >= header.num_classes:
                raise UsageError(
                    f"{path}: the {split} labels lie in {labels.min()}..{labels.max()}, "
                    f"outside the file's classes 0..{header.num_classes - 1}"
                )
            counts[split] = np.bincount(labels, minlength=header.num_classes).tolist()
        image_dtype = handle["train"]["images"][header.modalities[0]].dtype.name
    from mmgen.truth import load_truth

    stored = load_truth(path)
    return DatasetSummary(
        path=Path(path),
        header=header,
        sizes=sizes,
        class_counts=counts,
        image_dtype=image_dtype,
        truth=None if stored is None else stored.summary,
    )


def _read_rows(
    handle: Any, split: str, image_shapes: dict[str, ImageShape], index: np.ndarray
) -> list[np.ndarray]:
    """Per modality, images ``(len(index), C, H, W)`` in [0, 1] of the tuples ``index``."""
    order = np.argsort(index)
    sorted_index = index[order]  # h5py reads increasing indices only
    out = []
    for name, shape in image_shapes.items():
        images = np.empty((len(index), *shape), np.float32)
        stored = handle[split]["images"][name][sorted_index]
        images[order] = from_stored(h5io.to_unit_float(stored), shape)
        out.append(images)
    return out


def draw_dataset(
    path: Path | str,
    out: Path | str,
    split: str = "test",
    per_class: int = 4,
    sweep_class: int = 0,
    sweep_steps: int = 10,
    cvae_folders: list[Path | str] | None = None,
    device: str = "cpu",
) -> Path:
    """Write a PNG of tuples (a row per class) and, where possible, a latent sweep.

    Args:
        path: an mmgen file.
        out: the PNG to write.
        split: the split to show.
        per_class: tuples per class row (the first ones of each class).
        sweep_class: the class of the latent sweep.
        sweep_steps: codes along the sweep.
        cvae_folders: the file's CVAE checkpoints, one per modality in order: the sweep decodes
            codes on a line along the first latent axis. Without them an entangled or mixed
            file's sweep shows stored tuples of the class ordered by their code's first axis;
            a naive file gets no sweep.
        device: where to decode the sweep.

    Raises:
        ValueError: bad split, class, counts, or a checkpoint count that does not match.
    """
    if per_class <= 0 or sweep_steps < 2:
        raise UsageError(
            f"need --per-class > 0 and a sweep of at least 2 steps, got {per_class}, {sweep_steps}"
        )
    if split not in h5io.SPLITS:
        raise UsageError(f"unknown --split {split!r}; choose one of {', '.join(h5io.SPLITS)}")
    with h5io.open_dataset(path) as handle:
        header = h5io.header_from_attrs(handle.attrs, path)
        modalities, num_classes = list(header.modalities), header.num_classes
        if not 0 <= sweep_class < num_classes:
            raise UsageError(
                f"--sweep-class {sweep_class} is not a class of {path}; choose 0..{num_classes - 1}"
            )
        labels = h5io.read_rows(handle[split]["labels"], slice(None), path)
        names = header.class_names
        class_rows, class_labels = [], []
        for label in range(num_classes):
            index = np.flatnonzero(labels == label)[:per_class]
            if len(index) == 0:
                continue
            images = _read_rows(handle, split, header.image_shapes, index)
            class_rows.append(plots.tuple_row(list(zip(*images, strict=True))))
            class_labels.append(f"{label}: {names[label]}"[:24])
        sweep_rows, sweep_title = None, ""
        if cvae_folders:
            _check_decodable(header, path)
            sweep_rows, sweep_title = _decoded_sweep(
                header, cvae_folders, sweep_class, sweep_steps, device
            )
        elif "z" in handle[split]:
            index = np.flatnonzero(labels == sweep_class)
            if len(index) >= sweep_steps:
                first_axis = handle[split]["z"][:, 0][index]
                ranked = index[np.argsort(first_axis, kind="stable")]
                picks = ranked[np.linspace(0, len(ranked) - 1, sweep_steps).round().astype(int)]
                # per modality (S, C, H, W)
                sweep_rows = _read_rows(handle, split, header.image_shapes, picks)
                kept = "" if header.kind == "entangled" else " (z of the unpermuted modalities)"
                sweep_title = f"class {sweep_class}: stored {split} tuples sorted by z[0]{kept}"
    title = f"{Path(path).name} ({header.kind}), {split}: " + " | ".join(modalities)
    plots.dataset_figure(
        class_rows,
        class_labels,
        title,
        out,
        sweep_rows=sweep_rows,
        sweep_labels=modalities,
        sweep_title=sweep_title,
    )
    return Path(out)


def check_cvae_options(
    path: Path | str, cvae_folders: list[Path] | None, out: Path | str | None
) -> None:
    """Refuse ``--cvae`` where it would be ignored: without ``--out`` (the sweep is the figure's)
    or for a file whose tuples were not decoded from codes (a naive pairing of real images)."""
    if not cvae_folders:
        return
    if out is None:
        raise UsageError(
            "--cvae decodes the figure's latent sweep: add --out FILE.png, or drop --cvae"
        )
    with h5io.open_dataset(path) as handle:
        _check_decodable(h5io.header_from_attrs(handle.attrs, path), path)


def _check_decodable(header: DatasetHeader, path: Path | str) -> None:
    if not header.has_latent:
        raise UsageError(
            f"{path} is a {header.kind} file: its tuples are real images, not decoded from "
            "codes, so no CVAE decodes its sweep: drop --cvae"
        )


def _decoded_sweep(
    header: DatasetHeader,
    cvae_folders: list[Path | str],
    sweep_class: int,
    steps: int,
    device: str,
) -> tuple[list[np.ndarray], str]:
    """Decode codes ``(t, 0, ..., 0)``, t from -r to r, of one class with every CVAE."""
    modalities = header.modalities
    if len(cvae_folders) != len(modalities):
        raise UsageError(
            f"{len(cvae_folders)} --cvae checkpoints for {len(modalities)} modalities "
            f"({', '.join(modalities)}); give one per modality, in that order"
        )
    checkpoints = [load_cvae(folder, resolve_device(device)) for folder in cvae_folders]
    check_checkpoints(header, checkpoints)
    radius = float(header.config.get("radius", 2.0))
    z = torch.zeros(steps, header.latent_dim or checkpoints[0].config.latent_dim)
    z[:, 0] = torch.linspace(-radius, radius, steps)
    labels = torch.full((steps,), sweep_class, dtype=torch.int64)
    rows = [c.decode(z, labels).cpu().numpy() for c in checkpoints]  # (S, C, H, W) each
    return rows, f"class {sweep_class}: decoded along z[0] from {-radius:g} to {radius:g}"


def check_checkpoints(header: DatasetHeader, checkpoints: list[CVAECheckpoint]) -> None:
    """Raise ``UsageError`` unless the CVAEs fit the file: shapes, and the recorded weights.

    Where the file records a checkpoint's SHA-256 (entangled and mixed files), the CVAE given
    for modality m must be exactly the one that decoded m; a naive file records none, so any
    CVAEs of the file's latent size and class count can draw its sweep.
    """
    expected_latent = header.latent_dim or checkpoints[0].config.latent_dim
    for attribute, expected in (
        ("latent_dim", expected_latent),
        ("num_classes", header.num_classes),
    ):
        values = {str(c.path): getattr(c.config, attribute) for c in checkpoints}
        if any(value != expected for value in values.values()):
            listing = ", ".join(f"{path} has {value}" for path, value in values.items())
            raise UsageError(
                f"the --cvae checkpoints do not fit the file's {attribute} {expected}: {listing}"
            )
    for modality, checkpoint in zip(header.modalities, checkpoints, strict=True):
        if checkpoint.image_shape != header.image_shapes[modality]:
            raise UsageError(
                f"--cvae {checkpoint.path} decodes {describe(checkpoint.image_shape)} images, but "
                f"modality {modality!r} of the file holds {describe(header.image_shapes[modality])}"
                f" images; give the CVAEs in the order {', '.join(header.modalities)}"
            )
    recorded = {m: header.sources[m].checkpoint_sha256 for m in header.modalities}
    for modality, checkpoint in zip(header.modalities, checkpoints, strict=True):
        expected = recorded[modality]
        if not expected or checkpoint.sha256 == expected:
            continue
        owner = [m for m, sha in recorded.items() if sha == checkpoint.sha256]
        hint = (
            f"it decoded modality {owner[0]!r}: give the --cvae options in the order "
            f"{', '.join(header.modalities)}"
            if owner
            else f"the file was made with {header.sources[modality].checkpoint or 'another'}"
        )
        raise UsageError(
            f"--cvae {checkpoint.path} is not the CVAE that decoded modality {modality!r} "
            f"(SHA-256 of its weights differs from the file's record); {hint}"
        )
