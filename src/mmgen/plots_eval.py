"""Figures of ``mmgen evaluate``: latent spaces per encoder and training curves.

``latent_grid`` is the paper's Fig. 1 (bottom, Korthals et al.): the test set through every
encoder of one model, coloured by class, one panel per encoder, with the datasets (MNIST-E,
MNIST-ME, the naive pairing) side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mmgen import plots
from mmgen.plots import plt


def latent_grid(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    labels: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: Path | str,
    title: str,
) -> None:
    """Scatter posterior means: one row per encoder, one column per dataset.

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
    figure, axes = plt.subplots(
        len(encoders),
        len(datasets),
        figsize=(3.0 * len(datasets) + 1.4, 2.8 * len(encoders) + 0.4),
        squeeze=False,
    )
    colours = plt.get_cmap("tab10")
    for column, dataset in enumerate(datasets):
        for row, encoder in enumerate(encoders):
            axis = axes[row][column]
            axis.set_title(f"{dataset}: q(z|{encoder})", fontsize=8)
            axis.tick_params(labelsize=6)
            if encoder not in panels[dataset]:
                axis.text(0.5, 0.5, "no encoder", ha="center", va="center", fontsize=8)
                continue
            means = panels[dataset][encoder]
            second = means[:, 1] if means.shape[1] > 1 else np.zeros(len(means))
            for index in range(len(class_names)):
                chosen = labels[dataset] == index
                axis.scatter(
                    means[chosen, 0],
                    second[chosen],
                    s=2,
                    alpha=0.5,
                    color=colours(index % 10),
                    label=class_names[index],
                    rasterized=True,
                )
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, names, markerscale=4, fontsize=7, loc="center right")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0, 1.0 - 1.2 / figure.get_figwidth(), 1))
    plots.save_figure(figure, path)


def training_curves(history: Sequence[Mapping[str, object]], path: Path | str, title: str) -> None:
    """``plots.training_curves`` of the numeric ``train_*`` / ``test_*`` series of ``history``."""
    numeric = [
        {
            key: value
            for key, value in record.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        for record in history
    ]
    if not any(key.startswith(("train_", "test_")) for record in numeric for key in record):
        figure, axis = plt.subplots(figsize=(3.2, 2.8))
        axis.text(0.5, 0.5, "no training history", ha="center", va="center")
        axis.set_title(title, fontsize=9)
        plots.save_figure(figure, path)
        return
    if not all("epoch" in record for record in numeric):
        numeric = [{**record, "epoch": index + 1} for index, record in enumerate(numeric)]
    plots.training_curves(numeric, path, title)
