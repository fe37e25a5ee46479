"""The truth of PolyMNIST-E composites: each image's digit and the probability of its crop.

docs/polymnist.md ("Where the ground truth is defined"). A PolyMNIST-E modality is
``x = composite(d, b_p)``: the binary digit ``d ~ p(d | z, c)`` (``--decode sample``) on the
crop ``b_p`` of a background at a position ``p = (image, top, left)`` drawn uniformly and
independently of everything else. ``x`` is a uint8 image, so its probability is a sum over the
(digit, position) pairs that make it:

    P(x | z, c) = Σ_{p : x is a composite on b_p} P(p) · p(d_p | z, c),   d_p = 1[x ≠ b_p].

When every such position gives the same digit ``d`` (the digit is *identifiable* from the
image alone), the sum factors: ``P(x | z, c) = p(d | z, c) · M(x)`` with the crop mass
``M(x) = Σ_{consistent p} P(p)``, which does not depend on ``(z, c)``. Then every density of
the composites is the digits' density times ``Π_m M(x_m)``, and every mutual information and
the total correlation of the composites equal the digits' exactly (the masses cancel): the
truth of the composites is the CVAE truth of the recovered digits plus ``Σ_m log M(x_m)``.

:func:`observe` finds every consistent position of every image by an exact search over its
modality's backgrounds: a position is consistent when each pixel of ``x`` equals the crop's
(all channels) or its inverse ``255 − b`` (all channels). Candidates are the positions whose
top-left pixel folds to the same ``min(v, 255 − v)`` in every channel (a sorted index of each
background), then the whole window is compared. A digit that is not identifiable, or a stored
crop that does not make the image, is refused with the tuple's index.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mmgen import polymnist
from mmgen.data import h5io
from mmgen.data.header import DatasetHeader
from mmgen.errors import UsageError

__all__ = ["Observed", "backgrounds_of", "observe", "observe_split"]


@dataclass(frozen=True)
class Observed:
    """One modality's recovered digits and the log mass of the crops that make each image."""

    digits: np.ndarray  # (N, H·W) float32, 0 or 1
    log_mass: np.ndarray  # (N,) float64: log Σ_{consistent p} P(p)
    positions: np.ndarray  # (N,) int64: how many positions make each image


def backgrounds_of(
    path: Path | str, nuisance: Mapping[str, Any], modality: str
) -> list[polymnist.Background]:
    """A modality's backgrounds as the file records them, checked against their SHA-256.

    Raises:
        UsageError: a background that cannot be loaded or whose bytes changed.
    """
    record = nuisance["backgrounds"][modality]
    loaded = polymnist.load_backgrounds(record["spec"])
    recorded = [image["sha256"] for image in record["images"]]
    found = [image.sha256 for image in loaded]
    if found != recorded:
        raise UsageError(
            f"{path}: the backgrounds of modality {modality!r} ({record['spec']}) are not the "
            "ones the file was made with (SHA-256 differ); the truth needs the same photos"
        )
    return loaded


def _fold(levels: np.ndarray) -> np.ndarray:
    """``min(v, 255 − v)``: equal for a level and its inverse, so for ``b`` and ``255 − b``."""
    return np.minimum(levels, 255 - levels)


def _pack(folded: np.ndarray) -> np.ndarray:
    """One integer per pixel from its three folded channels (each 0 … 127), last axis RGB."""
    folded = folded.astype(np.int64)
    return (folded[..., 0] * 128 + folded[..., 1]) * 128 + folded[..., 2]


class _Index:
    """The window corners of one background, sorted by their top-left pixel's folded colour."""

    def __init__(self, background: polymnist.Background, height: int, width: int) -> None:
        pixels = background.pixels
        rows, cols = pixels.shape[0] - height + 1, pixels.shape[1] - width + 1
        keys = _pack(_fold(pixels[:rows, :cols])).ravel()
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.cols = cols
        self.count = rows * cols
        # (rows, cols, 3, height, width): the window at each corner, no copy
        self.windows = sliding_window_view(pixels, (height, width), axis=(0, 1))

    def consistent(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The corners ``(n, 2)`` whose window makes ``image`` and the digit each gives."""
        key = _pack(_fold(image[:, 0, 0]))
        first, last = np.searchsorted(self.keys, [key, key + 1])
        flat = self.order[first:last]
        corners = np.stack([flat // self.cols, flat % self.cols], axis=1)
        crops = self.windows[corners[:, 0], corners[:, 1]]  # (n, 3, H, W)
        same = (crops == image).all(axis=1)
        inverse = (crops == 255 - image).all(axis=1)
        valid = (same | inverse).all(axis=(1, 2))
        return corners[valid], inverse[valid]


def observe(
    images: np.ndarray,
    nuisance: np.ndarray,
    backgrounds: Sequence[polymnist.Background],
    where: str = "",
) -> Observed:
    """Recover each image's digit and its crop mass (module docstring).

    Args:
        images: ``(N, 3, H, W)`` uint8 composites of one modality.
        nuisance: ``(N, 3)`` stored ``(image, top, left)`` rows.
        backgrounds: the modality's backgrounds, in the file's order.
        where: names the file and modality in errors.

    Raises:
        UsageError: a stored crop that does not make its image, or an image whose digit is
            not identifiable (two consistent positions give different digits).
    """
    height, width = images.shape[2:]
    indexes = [_Index(background, height, width) for background in backgrounds]
    limits = np.array([[len(indexes) - 1, *index.windows.shape[:2]] for index in indexes])
    image_of = nuisance[:, 0]
    outside = (image_of < 0) | (image_of >= len(indexes)) | (nuisance[:, 1:] < 0).any(axis=1)
    inside = np.flatnonzero(~outside)
    outside[inside] = (nuisance[inside, 1:] >= limits[image_of[inside], 1:]).any(axis=1)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise UsageError(
            f"{where}tuple {i}: its stored crop {tuple(int(v) for v in nuisance[i])} lies "
            "outside the backgrounds (a damaged file, or other backgrounds); regenerate it"
        )
    digits = polymnist.recover_digits(images, polymnist.crop(backgrounds, nuisance, height, width))
    log_mass = np.empty(len(images), dtype=np.float64)
    positions = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        stored, mass, found, made = nuisance[i], 0.0, 0, []
        stored_makes = False
        for k, index in enumerate(indexes):
            corners, digit = index.consistent(image)
            mass += len(corners) / (len(indexes) * index.count)
            found += len(corners)
            made.append(digit)
            at = (corners[:, 0] == stored[1]) & (corners[:, 1] == stored[2])
            stored_makes |= k == stored[0] and bool(at.any())
        if not stored_makes:
            raise UsageError(
                f"{where}tuple {i}: its stored crop {tuple(int(v) for v in stored)} does not "
                "make its image (a damaged file, or other backgrounds); regenerate it"
            )
        if not (np.concatenate(made) == digits[i]).all():
            raise UsageError(
                f"{where}tuple {i}: two crops of the backgrounds make the same image with "
                "different digits, so the digit is not identifiable and the composites' truth "
                "is not the digits' (docs/polymnist.md)"
            )
        log_mass[i] = math.log(mass)
        positions[i] = found
    flat = digits.reshape(len(images), -1).astype(np.float32)
    return Observed(digits=flat, log_mass=log_mass, positions=positions)


def observe_split(
    path: Path | str, header: DatasetHeader, split: str, data: h5io.SplitData
) -> dict[str, Observed]:
    """Every modality of a PolyMNIST-E file's ``split``, observed (see :func:`observe`)."""
    result = {}
    with h5io.open_dataset(path) as handle:
        for m in header.modalities:
            nuisance = h5io.read_rows(handle[split]["nuisance"][m], slice(None), path)
            backgrounds = backgrounds_of(path, header.nuisance, m)
            result[m] = observe(data.images[m], nuisance, backgrounds, f"{path}, {split}, {m}: ")
    return result
