"""``npz:PATH``: a source stored as NumPy arrays in one ``.npz`` file.

Arrays: ``x_train``, ``y_train``, ``x_test``, ``y_test`` and, optionally, ``class_names``
(one string per class; else the classes are named "0".."K-1", K = largest label + 1).
Images ``x_*`` are accepted in three layouts; channels are recognised by their count, 1 (grey)
or 3 (colour):

- ``(N, H, W)``: grey;
- ``(N, H, W, C)`` when the last axis has 1 or 3 entries (NumPy, PIL and Keras arrays);
- ``(N, C, H, W)`` otherwise, when the second axis has 1 or 3 entries (PyTorch tensors).

Levels are ``uint8`` 0..255, or floats in [0, 1] converted with ``round(255·x)`` as ``generate``
does. Labels are integers in [0, K).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgen.errors import UsageError

from .base import SPLITS, Source, SplitArrays, digit_names, file_sha256, to_uint8_levels
from .places import Place

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
CHANNEL_COUNTS = (1, 3)


@dataclass(frozen=True, kw_only=True)
class NpzSource(Source):
    """Arrays in one ``.npz`` file (spec ``npz:PATH``); nothing else is searched."""

    location: Path

    @classmethod
    def from_file(cls, path: str | Path) -> NpzSource:
        """Build the source for ``path`` (the file need not exist yet)."""
        path = Path(path).expanduser()
        return cls(name=f"npz:{path}", folder=path.name, location=path)

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """The file's folder."""
        return [("npz file", self.location.parent)]

    def missing_files(self, folder: Path) -> list[str]:
        """The file itself, when absent."""
        return [] if (folder / self.location.name).is_file() else [self.location.name]

    def how_to_supply(self) -> str:
        """What the file must hold."""
        return (
            f"write {self.location} with numpy.savez holding {', '.join(ARRAYS)} "
            "(and optionally class_names)"
        )

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read ``x_<split>`` and ``y_<split>``; class names from the file or the labels."""
        path = folder / self.location.name
        try:
            with np.load(path, allow_pickle=False) as arrays:
                missing = [name for name in ARRAYS if name not in arrays]
                if missing:
                    raise UsageError(
                        f"{path} lacks the arrays {', '.join(missing)}; it holds "
                        f"{', '.join(arrays.files) or 'none'}. {self.how_to_supply()}"
                    )
                images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
                largest = max(int(arrays[f"y_{name}"].max(initial=0)) for name in SPLITS)
                names = arrays["class_names"] if "class_names" in arrays else None
        except (OSError, ValueError) as error:
            if isinstance(error, UsageError):
                raise
            raise UsageError(
                f"{path} is not a readable .npz file ({error}); write it with numpy.savez"
            ) from None
        what = f"{path} x_{split}"
        images = to_uint8_levels(channels_first(images, what), what)
        if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(images),):
            raise UsageError(
                f"{path} y_{split} has {labels.dtype} data of shape {labels.shape}; it must be "
                f"({len(images)},) integer labels, one per image of x_{split}"
            )
        if labels.min(initial=0) < 0:
            raise UsageError(f"{path} y_{split} holds negative labels; labels are 0..K-1")
        class_names = tuple(str(name) for name in names) if names is not None else None
        files = {path.name: file_sha256(path)}
        return SplitArrays(
            np.ascontiguousarray(images),
            labels.astype(np.int64),
            class_names or digit_names(largest + 1),
            files,
        )


def channels_first(images: np.ndarray, what: str) -> np.ndarray:
    """Return ``images`` as ``(N, C, H, W)`` by the rules of this module's docstring.

    Raises:
        UsageError: not 3-D or 4-D, or no axis holds 1 or 3 channels.
    """
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        if images.shape[3] in CHANNEL_COUNTS:
            return images.transpose(0, 3, 1, 2)
        if images.shape[1] in CHANNEL_COUNTS:
            return images
    raise UsageError(
        f"{what} has shape {images.shape}; give (N, H, W) grey images, or (N, H, W, C) or "
        "(N, C, H, W) with C = 1 (grey) or 3 (colour)"
    )
