"""Image shapes ``(C, H, W)``: the one rule for checking them and for storing images in files.

Every modality has its own shape (issue #10): 1×28×28 for the MNIST family of the paper,
3×32×32 for SVHN or CIFAR, 1×8×8 for scikit-learn's digits. In memory images are always
``(N, C, H, W)``; an mmgen file stores grey modalities (C = 1) as ``(N, H, W)``, exactly as
before shapes were recorded (so grey files keep their bytes), and others as ``(N, C, H, W)``
(docs/format.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmgen.errors import UsageError

ImageShape = tuple[int, int, int]
DEFAULT_IMAGE_SHAPE: ImageShape = (1, 28, 28)  # the MNIST-like sources of the paper


def check_image_shape(shape: Sequence[int], what: str = "image shape") -> ImageShape:
    """``shape`` as a ``(C, H, W)`` tuple of positive ints, or a one-line ``UsageError``."""
    values = tuple(shape) if isinstance(shape, Sequence | np.ndarray) else ()
    if len(values) != 3 or not all(
        isinstance(size, int | np.integer) and not isinstance(size, bool) and size >= 1
        for size in values
    ):
        raise UsageError(f"{what} must be three positive integers (C, H, W), got {shape!r}")
    channels, height, width = (int(size) for size in values)
    return channels, height, width


def num_pixels(shape: Sequence[int]) -> int:
    """``C·H·W``: the size ``D_m`` of one flattened image (784 for 1×28×28)."""
    return int(np.prod(shape))


def stored_shape(shape: ImageShape) -> tuple[int, ...]:
    """The row shape in a file: ``(H, W)`` for grey images (as before #10), else ``(C, H, W)``."""
    return shape[1:] if shape[0] == 1 else shape


def from_stored(images: np.ndarray, shape: ImageShape) -> np.ndarray:
    """Rows as stored in a file ``(N, *stored_shape)`` → ``(N, C, H, W)`` (a view, no copy)."""
    return images.reshape(len(images), *shape)


def to_stored(images: np.ndarray) -> np.ndarray:
    """Images ``(N, C, H, W)`` → the rows a file stores (``(N, H, W)`` when C = 1; a view)."""
    return images[:, 0] if images.shape[1] == 1 else images


def describe(shape: Sequence[int]) -> str:
    """``"3×32×32"``: a shape as the docs and messages write it."""
    return "×".join(str(size) for size in shape)
