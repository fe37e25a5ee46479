"""Images as PNG bytes: the one encoder of every export that stores pictures.

PNG is lossless for 8-bit levels, so a uint8 mmgen file round-trips exactly; a float32 file is
stored as round(255·x) (the card says so). Grey modalities (C = 1) become 8-bit grey PNGs
(mode ``L``), colour ones (C = 3) RGB; other channel counts have no PNG form.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
from PIL import Image

from mmgen.data.shapes import ImageShape, describe
from mmgen.errors import UsageError

PNG_CHANNELS = {1: "L", 3: "RGB"}


def check_png_shapes(shapes: Mapping[str, ImageShape], what: str) -> None:
    """Raise ``UsageError`` unless every modality has 1 or 3 channels (a PNG image)."""
    for modality, shape in shapes.items():
        if shape[0] not in PNG_CHANNELS:
            raise UsageError(
                f"{what} stores images as PNG, which holds 1 (grey) or 3 (RGB) channels; "
                f"modality {modality!r} has {describe(shape)} images"
            )


def to_pil(image: np.ndarray) -> Image.Image:
    """One uint8 image ``(C, H, W)`` as a PIL image (``L`` for C = 1, ``RGB`` for C = 3)."""
    if image.shape[0] == 1:
        return Image.fromarray(image[0])
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))


def png_bytes(image: np.ndarray) -> bytes:
    """One uint8 image ``(C, H, W)`` as PNG file bytes (deterministic: no time stamp)."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


def from_png(data: bytes) -> np.ndarray:
    """PNG bytes → uint8 ``(C, H, W)`` (the inverse of :func:`png_bytes`, for tests and users)."""
    array = np.asarray(Image.open(io.BytesIO(data)))
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
