"""Figures of a multi-modal dataset: tuples side by side per class, and a latent sweep.

The tuple grid is the paper's Fig. 1 (top left, Korthals et al.): a row per class, a few tuples
per row, the modalities of a tuple next to each other, so one sees at a glance whether the
modalities vary together (entangled) or only share the class (mixed, naive).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmgen.plots import plt, save_figure

TUPLE_GAP = 6  # pixels between tuples (modalities of one tuple touch, separated by 1 pixel)
MODALITY_GAP = 1
GAP_GREY = 0.5  # the gaps' grey level: visible against black and white backgrounds


def tuple_row(tuples: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
    """One mosaic row: tuples of ``(28, 28)`` images in [0, 1], modalities side by side."""
    parts: list[np.ndarray] = []
    for t, images in enumerate(tuples):
        if t:
            parts.append(np.full((images[0].shape[0], TUPLE_GAP), GAP_GREY, np.float32))
        for m, image in enumerate(images):
            if m:
                parts.append(np.full((image.shape[0], MODALITY_GAP), GAP_GREY, np.float32))
            parts.append(image.astype(np.float32))
    return np.concatenate(parts, axis=1)


def stack_rows(rows: Sequence[np.ndarray], gap: int = 2) -> np.ndarray:
    """Stack mosaic rows of possibly different widths (padded with the gap grey)."""
    width = max(row.shape[1] for row in rows)
    out: list[np.ndarray] = []
    for index, row in enumerate(rows):
        if index:
            out.append(np.full((gap, width), GAP_GREY, np.float32))
        pad = np.full((row.shape[0], width - row.shape[1]), GAP_GREY, np.float32)
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
) -> None:
    """Save the tuple grid (a row per class) and, when given, a sweep (a row per modality).

    Args:
        class_rows: one mosaic per class (:func:`tuple_row`), all of the same height.
        class_labels: a label per class row.
        title: the title above the tuple grid.
        path: the PNG to write (atomically).
        sweep_rows: one row of images per modality along a line through latent space.
        sweep_labels: a label per sweep row.
        sweep_title: the title above the sweep.
    """
    grid = stack_rows(class_rows)
    panels = [(grid, class_labels, title, class_rows[0].shape[0])]
    if sweep_rows:
        sweep = stack_rows([tuple_row([[image] for image in row]) for row in sweep_rows])
        panels.append((sweep, sweep_labels, sweep_title, sweep_rows[0][0].shape[0]))
    width = max(panel[0].shape[1] for panel in panels)
    heights = [panel[0].shape[0] for panel in panels]
    scale = 0.025  # inches per pixel
    figure, axes = plt.subplots(
        len(panels),
        1,
        figsize=(width * scale + 1.8, sum(heights) * scale + 0.7 * len(panels)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axis, (mosaic, labels, panel_title, row_height) in zip(axes[:, 0], panels, strict=True):
        axis.imshow(mosaic, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_yticks([i * (row_height + 2) + row_height / 2 for i in range(len(labels))])
        axis.set_yticklabels(list(labels), fontsize=7)
        axis.set_xticks([])
        axis.set_title(panel_title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
