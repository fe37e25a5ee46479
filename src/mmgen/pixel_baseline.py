"""Latent recovery without a model: per-class kNN on raw pixels (issue 16, item 5).

docs/truth.md §7. A model's encoder earns its latent-recovery R² only beyond what the pixels
give away: on decoded means every image is a smooth deterministic function of (z, c), so a
per-class nearest-neighbour regression on raw pixels recovers z almost exactly from either
image. The baseline runs the ``class_knn`` probe of ``mmgen.probes`` (k chosen by leave-one-out
on train, fitted on train, R² on test, the same R² definition) on the flattened pixels of each
modality and of the whole tuple (the modalities' pixels concatenated). ``fusion_gain`` is
``R²(joint) − max_m R²(m)``: what the tuple tells about z beyond its best single modality, the
figure that shows coherence (on sampled data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mmgen.data.h5io import SplitData
from mmgen.metrics import subset_name
from mmgen.probes import class_knn, r_squared


def _pixels(split: SplitData, modalities: Sequence[str]) -> Tensor:
    """``(N, Σ_m P_m)`` float32 pixels in [0, 1] of ``modalities``, concatenated."""
    return torch.cat(
        [torch.from_numpy(split.images_float(m)).flatten(1) for m in modalities], dim=1
    )


def pixel_baseline(train: SplitData, test: SplitData) -> dict[str, dict[str, float | int]]:
    """Held-out R² of the per-class pixel kNN predicting ``z``, per modality and for the tuple.

    Args:
        train: the training split (with ``z``).
        test: the test split (with ``z``).

    Returns:
        ``{name: {"r2", "k"}}`` for every modality and the joint (``subset_name`` of all
        modalities, e.g. ``mnist+fashion-mnist``), plus ``"fusion_gain": {"r2": …}``.

    Raises:
        ValueError: a split has no true code (a naive pairing).
    """
    if train.z is None or test.z is None:
        raise ValueError("the pixel baseline needs the true codes z (not a naive pairing)")
    modalities = list(train.images)
    train_labels, test_labels = torch.from_numpy(train.labels), torch.from_numpy(test.labels)
    train_z, test_z = torch.from_numpy(train.z), torch.from_numpy(test.z)
    result: dict[str, dict[str, float | int]] = {}
    for subset in [[m] for m in modalities] + [modalities]:
        predicted, details = class_knn(
            _pixels(train, subset), train_labels, train_z, _pixels(test, subset), test_labels
        )
        result[subset_name(subset)] = {"r2": r_squared(test_z, predicted), **details}
    joint = result[subset_name(modalities)]["r2"]
    singles = {m: result[m]["r2"] for m in modalities}
    result["fusion_gain"] = {"r2": fusion_gain(joint, singles)}
    return result


def fusion_gain(joint: float, singles: Mapping[str, float] | Sequence[float]) -> float:
    """``R²(joint) − max_m R²(m)``: the joint's recovery beyond its best single modality."""
    values = list(singles.values()) if isinstance(singles, Mapping) else list(singles)
    if not values:
        raise ValueError("fusion_gain needs at least one single-modality R²")
    return float(joint) - max(float(v) for v in values)
