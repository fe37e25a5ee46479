"""Figures of a trained CVAE: samples per class, the latent space, training curves.

``latent.png`` is the paper's Fig. 1 (top right): the test set's latent means coloured by class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mmgen.atomic import atomic_path  # noqa: E402


def save_figure(figure: Figure, path: Path | str, dpi: int = 120) -> None:
    """Write a figure as PNG atomically and close it. Metadata is fixed for identical bytes."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    plt.close(figure)


def image_grid(rows: np.ndarray, row_labels: Sequence[str], path: Path | str, title: str) -> None:
    """Save ``rows`` of shape ``(R, C, H, W)`` grey images in [0, 1] as one labelled grid."""
    num_rows, num_cols, height, width = rows.shape
    mosaic = rows.transpose(0, 2, 1, 3).reshape(num_rows * height, num_cols * width)
    figure, axis = plt.subplots(figsize=(0.5 * num_cols + 1.2, 0.5 * num_rows + 0.6))
    axis.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axis.set_yticks(np.arange(num_rows) * height + height / 2, labels=list(row_labels))
    axis.set_xticks([])
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)


def latent_scatter(
    means: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: Path | str,
    title: str,
) -> None:
    """Scatter the first two latent dimensions of ``means`` ``(N, d)`` coloured by class."""
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(class_names):
        chosen = labels == index
        axis.scatter(
            means[chosen, 0],
            means[chosen, 1] if means.shape[1] > 1 else np.zeros(chosen.sum()),
            s=3,
            alpha=0.6,
            color=colours(index % 10),
            label=name,
            rasterized=True,
        )
    axis.set_xlabel("z₁")
    axis.set_ylabel("z₂")
    axis.set_title(title, fontsize=9)
    axis.legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    save_figure(figure, path)


def training_curves(history: Sequence[dict[str, float]], path: Path | str, title: str) -> None:
    """Plot every ``train_*`` / ``test_*`` series of ``history`` against the epoch."""
    names = sorted({k.split("_", 1)[1] for record in history for k in record if "_" in k})
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    epochs = [record["epoch"] for record in history]
    for axis, name in zip(axes[0], names, strict=True):
        for split in ("train", "test"):
            key = f"{split}_{name}"
            if any(key in record for record in history):
                axis.plot(epochs, [record.get(key, np.nan) for record in history], label=split)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
