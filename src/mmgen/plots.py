"""Every figure mmgen draws, built on ``matplotlib.figure.Figure`` alone.

No pyplot and no backend switch: a ``Figure`` made directly renders PNG through its own canvas,
so importing mmgen leaves a notebook's inline plots and the user's backend as they were.

The figures (Korthals et al., *Deep generative models for learning coherent latent
representations from multi-modal data*):

- :func:`image_grid`: CVAE samples, a row per class;
- :func:`latent_scatter`: a CVAE's test-set latent means by class (Fig. 1, top right);
- :func:`dataset_figure`: tuples of a multi-modal file side by side per class, plus a latent
  sweep (Fig. 1, top left);
- :func:`latent_grid`: the test set through every encoder of a multi-modal VAE, datasets side
  by side (Fig. 1, bottom);
- :func:`training_curves`: ``train_*`` / ``test_*`` series of a training history.

The two latent figures draw their points with the one helper :func:`scatter_by_class`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mmgen.atomic import atomic_path

CLASS_COLOURS = matplotlib.colormaps["tab10"]
TUPLE_GAP = 6  # pixels between tuples (modalities of one tuple touch, separated by 1 pixel)
MODALITY_GAP = 1
ROW_GAP = 2  # pixels between the rows of a mosaic
GAP_GREY = 0.5  # the gaps' grey level: visible against black and white backgrounds
INCHES_PER_PIXEL = 0.025  # mosaic figures: a 28-pixel image is 0.7 inch


def save_figure(figure: Figure, path: Path | str, dpi: int = 120) -> Path:
    """Write ``figure`` as a PNG atomically; fixed metadata, so a figure gives the same bytes.

    ``Figure.savefig`` renders through the figure's own canvas (Agg for PNG): no pyplot state and
    no backend change, and nothing to close afterwards.
    """
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return Path(path)


def scatter_by_class(
    axis: Axes,
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    size: float = 3.0,
    alpha: float = 0.6,
) -> None:
    """Scatter the first two dimensions of ``points`` ``(N, d)``, one colour per class.

    A one-dimensional latent is drawn on the line z₂ = 0. Every class gets a legend entry
    (``label``), also a class without points, so panels share one legend.
    """
    second = points[:, 1] if points.shape[1] > 1 else np.zeros(len(points))
    for index, name in enumerate(class_names):
        chosen = labels == index
        axis.scatter(
            points[chosen, 0],
            second[chosen],
            s=size,
            alpha=alpha,
            color=CLASS_COLOURS(index % CLASS_COLOURS.N),
            label=name,
            rasterized=True,  # thousands of points: a bitmap layer keeps the file small
        )


def as_tile(image: np.ndarray, height: int | None = None) -> np.ndarray:
    """One image in [0, 1] → an RGB tile ``(h, w, 3)``, scaled up to ``height`` if given.

    ``image`` is ``(C, H, W)`` or ``(H, W)``: three channels are shown as RGB, one as grey, any
    other count as the grey mean of its channels. Smaller images are scaled up by
    nearest-neighbour (every pixel stays a visible square, no invented levels), so modalities
    of different sizes line up in one mosaic; the width keeps the aspect ratio.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    channels, rows, cols = image.shape
    if channels == 3:
        tile = image.transpose(1, 2, 0)  # (C, H, W) → (H, W, 3)
    else:
        tile = np.repeat(image.mean(axis=0)[:, :, None], 3, axis=2)
    if height is not None and height != rows:
        width = max(1, round(cols * height / rows))
        tile = tile[np.arange(height) * rows // height][:, np.arange(width) * cols // width]
    return tile


def image_grid(rows: np.ndarray, row_labels: Sequence[str], path: Path | str, title: str) -> Path:
    """Save ``rows`` ``(R, K, C, H, W)`` (or grey ``(R, K, H, W)``) in [0, 1] as a labelled grid."""
    num_rows, num_cols = rows.shape[:2]
    height = rows.shape[-2]
    mosaic = np.concatenate(
        [np.concatenate([as_tile(image) for image in row], axis=1) for row in rows], axis=0
    )  # (R·H, K·W, 3)
    figure = Figure(figsize=(0.5 * num_cols + 1.2, 0.5 * num_rows + 0.6))
    axis = figure.subplots()
    axis.imshow(mosaic, vmin=0.0, vmax=1.0, interpolation="nearest")
    axis.set_yticks(np.arange(num_rows) * height + height / 2, labels=list(row_labels))
    axis.set_xticks([])
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def latent_scatter(
    means: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: Path | str,
    title: str,
) -> Path:
    """Save the first two latent dimensions of ``means`` ``(N, d)`` coloured by class.

    Korthals et al., Fig. 1 (top right): a CVAE's test-set latent means μ(x, C).
    """
    figure = Figure(figsize=(5.5, 4.5))
    axis = figure.subplots()
    scatter_by_class(axis, means, labels, class_names)
    axis.set_xlabel("z₁")
    axis.set_ylabel("z₂")
    axis.set_title(title, fontsize=9)
    axis.legend(markerscale=4, fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    figure.tight_layout()
    return save_figure(figure, path)


def latent_grid(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: Path | str,
    title: str,
) -> Path:
    """Save posterior means: one row per encoder, one column per dataset.

    Korthals et al., Fig. 1 (bottom): the test set through every encoder of one model, coloured by
    class, with the datasets (MNIST-E, MNIST-ME, the naive pairing) side by side.

    Args:
        panels: dataset → encoder name (``"a+b"``, ``"a"``…) → means ``(N, d)``; the first two
            dimensions are drawn.
        labels: dataset → classes ``(N,)`` of its test tuples.
        class_names: legend entries, index = class.
        path: the PNG to write.
        title: the figure's title.
    """
    datasets = list(panels)
    encoders = list(dict.fromkeys(e for d in datasets for e in panels[d]))
    figure = Figure(figsize=(3.0 * len(datasets) + 1.4, 2.8 * len(encoders) + 0.4))
    axes = figure.subplots(len(encoders), len(datasets), squeeze=False)
    for column, dataset in enumerate(datasets):
        for row, encoder in enumerate(encoders):
            axis = axes[row][column]
            axis.set_title(f"{dataset}: q(z|{encoder})", fontsize=8)
            axis.tick_params(labelsize=6)
            if encoder not in panels[dataset]:
                axis.text(0.5, 0.5, "no encoder", ha="center", va="center", fontsize=8)
                continue
            scatter_by_class(
                axis, panels[dataset][encoder], labels[dataset], class_names, size=2, alpha=0.5
            )
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, markerscale=4, fontsize=7, loc="center right")
    figure.suptitle(title, fontsize=9)
    # Leave 1.2 inches on the right for the shared legend.
    figure.tight_layout(rect=(0, 0, 1.0 - 1.2 / figure.get_figwidth(), 1))
    return save_figure(figure, path)


def training_curves(history: Sequence[Mapping[str, object]], path: Path | str, title: str) -> Path:
    """Save every numeric ``train_*`` / ``test_*`` series of ``history`` against the epoch.

    Records without an ``epoch`` are numbered 1, 2, …; non-numeric values (a stage name, say)
    are ignored; a history without series gives a panel that says so.
    """
    numeric = [
        {
            key: value
            for key, value in record.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        for record in history
    ]
    names = sorted(
        {
            key.split("_", 1)[1]
            for record in numeric
            for key in record
            if key.startswith(("train_", "test_"))
        }
    )
    if not names:
        figure = Figure(figsize=(3.2, 2.8))
        axis = figure.subplots()
        axis.text(0.5, 0.5, "no training history", ha="center", va="center")
        axis.set_title(title, fontsize=9)
        return save_figure(figure, path)
    epochs = [record.get("epoch", index + 1) for index, record in enumerate(numeric)]
    figure = Figure(figsize=(3.2 * len(names), 2.8))
    axes = figure.subplots(1, len(names), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        for split in ("train", "test"):
            key = f"{split}_{name}"
            if any(key in record for record in numeric):
                axis.plot(epochs, [record.get(key, np.nan) for record in numeric], label=split)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)


def tuple_row(tuples: Sequence[Sequence[np.ndarray]], height: int | None = None) -> np.ndarray:
    """One RGB mosaic row ``(H, W, 3)``: tuples of images in [0, 1], modalities side by side.

    Images are ``(C, H, W)`` or ``(H, W)`` and may differ in size: each is scaled up to
    ``height`` (default: the tallest) by nearest-neighbour (:func:`as_tile`).
    """
    height = height or max(np.asarray(image).shape[-2] for images in tuples for image in images)
    parts: list[np.ndarray] = []
    for t, images in enumerate(tuples):
        if t:
            parts.append(np.full((height, TUPLE_GAP, 3), GAP_GREY, np.float32))
        for m, image in enumerate(images):
            if m:
                parts.append(np.full((height, MODALITY_GAP, 3), GAP_GREY, np.float32))
            parts.append(as_tile(image, height))
    return np.concatenate(parts, axis=1)


def stack_rows(rows: Sequence[np.ndarray], gap: int = ROW_GAP) -> np.ndarray:
    """Stack mosaic rows (RGB ``(h, w, 3)`` or grey ``(h, w)``) of possibly different widths.

    Short rows are padded with the gap grey; the result is RGB.
    """
    rows = [row if row.ndim == 3 else as_tile(row) for row in rows]
    width = max(row.shape[1] for row in rows)
    out: list[np.ndarray] = []
    for index, row in enumerate(rows):
        if index:
            out.append(np.full((gap, width, 3), GAP_GREY, np.float32))
        pad = np.full((row.shape[0], width - row.shape[1], 3), GAP_GREY, np.float32)
        out.append(np.concatenate([row, pad], axis=1))
    return np.concatenate(out, axis=0)


def dataset_figure(
    class_rows: Sequence[np.ndarray],
    class_labels: Sequence[str],
    title: str,
    path: Path | str,
    sweep_rows: Sequence[np.ndarray] | None = None,
    sweep_labels: Sequence[str] = (),
    sweep_title: str = "",
) -> Path:
    """Save the tuple grid (a row per class) and, when given, a sweep (a row per modality).

    Korthals et al., Fig. 1 (top left): in an entangled file the modalities of a tuple vary
    together; in a mixed or naive one they share only the class.

    Args:
        class_rows: one mosaic per class (:func:`tuple_row`).
        class_labels: a label per class row.
        title: the title above the tuple grid.
        path: the PNG to write (atomically).
        sweep_rows: one row of images ``(S, C, H, W)`` (or ``(S, H, W)``) per modality along a
            line through latent space; modalities may differ in shape.
        sweep_labels: a label per sweep row.
        sweep_title: the title above the sweep.
    """
    panels = [(stack_rows(class_rows), class_labels, title, [row.shape[0] for row in class_rows])]
    if sweep_rows:
        # One height for every modality's sweep, as in the tuple grid above.
        height = max(np.asarray(row).shape[-2] for row in sweep_rows)
        sweeps = [tuple_row([[image] for image in row], height) for row in sweep_rows]
        panels.append((stack_rows(sweeps), sweep_labels, sweep_title, [r.shape[0] for r in sweeps]))
    width = max(panel[0].shape[1] for panel in panels)
    heights = [panel[0].shape[0] for panel in panels]
    figure = Figure(
        figsize=(
            width * INCHES_PER_PIXEL + 1.8,
            sum(heights) * INCHES_PER_PIXEL + 0.7 * len(panels),
        )
    )
    axes = figure.subplots(len(panels), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)
    for axis, (mosaic, labels, panel_title, row_heights) in zip(axes[:, 0], panels, strict=True):
        axis.imshow(mosaic, vmin=0.0, vmax=1.0, interpolation="nearest")
        tops = np.cumsum([0] + [height + ROW_GAP for height in row_heights[:-1]])
        axis.set_yticks([top + height / 2 for top, height in zip(tops, row_heights, strict=True)])
        axis.set_yticklabels(list(labels), fontsize=7)
        axis.set_xticks([])
        axis.set_title(panel_title, fontsize=9)
    figure.tight_layout()
    return save_figure(figure, path)
