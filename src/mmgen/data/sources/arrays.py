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

import zipfile
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
        """Read ``x_<split>`` and ``y_<split>``; class names from the file or the labels.

        Both splits are checked before either is read whole (:func:`_check_splits`): a test
        split of another size or mode, an empty split or a stray huge label is refused here,
        not after an epoch of training. Pickled objects are never loaded.
        """
        path = folder / self.location.name
        with _open_npz(path, self.how_to_supply()) as arrays:
            try:
                class_names = _check_splits(path, arrays)
                images, labels = arrays[f"x_{split}"], arrays[f"y_{split}"]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
                if isinstance(error, UsageError):
                    raise
                raise UsageError(f"{path} is damaged ({_reason(error)})") from None
        what = f"{path} x_{split}"
        images = to_uint8_levels(channels_first(images, what), what)
        files = {path.name: file_sha256(path)}
        return SplitArrays(
            np.ascontiguousarray(images), labels.astype(np.int64), class_names, files
        )


def _reason(error: BaseException) -> str:
    """NumPy's reason, except its advice to load pickles (never passed on to the user)."""
    if "pickle" in str(error).lower():
        return "it holds pickled Python objects, which mmgen never loads"
    return " ".join(str(error).split()) or type(error).__name__


def _open_npz(path: Path, supply: str) -> np.lib.npyio.NpzFile:
    """``np.load(path)`` of a ``.npz`` archive, pickles disabled; anything else is refused."""
    try:
        with path.open("rb") as file:
            magic = file.read(6)
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    if magic == b"\x93NUMPY":
        raise UsageError(f"{path} is a single .npy array, not an .npz archive; {supply}")
    if not magic.startswith(b"PK"):
        raise UsageError(f"{path} is not an .npz archive (a zip of arrays); {supply}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UsageError(
            f"{path} is not a readable .npz file ({_reason(error)}); {supply}"
        ) from None


def _header(arrays: np.lib.npyio.NpzFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of the array ``name``, read from its header only."""
    with arrays.zip.open(f"{name}.npy") as file:
        version = np.lib.format.read_magic(file)
        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(file)
    return tuple(shape), dtype


def _check_splits(path: Path, arrays: np.lib.npyio.NpzFile) -> tuple[str, ...]:
    """Check both splits against each other and return the class names.

    Images: a known layout, a numeric dtype, at least one image, and one ``(C, H, W)`` for both
    splits. Labels: integers, one per image, in ``[0, K)``; without ``class_names``
    (K = largest label + 1) every class must have a training example, so that one stray huge
    label is reported rather than turned into millions of class names.

    Raises:
        UsageError: naming the file, the array and what is wrong.
    """
    missing = [name for name in ARRAYS if name not in arrays.files]
    if missing:
        raise UsageError(
            f"{path} lacks the arrays {', '.join(missing)}; it holds "
            f"{', '.join(arrays.files) or 'none'}; write x_train, y_train, x_test, y_test "
            "with numpy.savez"
        )
    formats = {}
    labels = {}
    for split in SPLITS:
        shape, dtype = _header(arrays, f"x_{split}")
        what = f"{path} x_{split}"
        if dtype.hasobject or not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
            raise UsageError(
                f"{what} holds {dtype} data; give uint8 levels 0..255 or floats in [0, 1]"
            )
        layout = channels_first(np.broadcast_to(np.uint8(0), shape), what)  # no memory
        if not shape or shape[0] == 0:
            raise UsageError(f"{what} holds no images; each split needs at least one")
        formats[split] = layout.shape[1:]
        y_shape, y_dtype = _header(arrays, f"y_{split}")
        if not np.issubdtype(y_dtype, np.integer) or y_shape != (shape[0],):
            raise UsageError(
                f"{path} y_{split} has {y_dtype} data of shape {y_shape}; it must be "
                f"({shape[0]},) integer labels, one per image of x_{split}"
            )
        labels[split] = arrays[f"y_{split}"]
        if labels[split].min() < 0:
            raise UsageError(
                f"{path} y_{split} holds label {labels[split].min()}; labels are 0..K-1"
            )
    if formats["train"] != formats["test"]:
        train, test = (_describe(formats[split]) for split in SPLITS)
        raise UsageError(
            f"{path}: x_train holds {train} images but x_test holds {test}; both splits of a "
            "source need one size and mode"
        )
    largest = max(int(labels[split].max()) for split in SPLITS)
    if "class_names" in arrays.files:
        names = tuple(str(name) for name in arrays["class_names"])
        if largest >= len(names):
            raise UsageError(
                f"{path} holds label {largest} but class_names names {len(names)} classes "
                f"(0..{len(names) - 1})"
            )
        return names
    present = np.unique(labels["train"])
    if len(present) < largest + 1:
        missing = np.setdiff1d(np.arange(min(largest + 1, len(present) + 11)), present)[:10]
        listed = ",".join(map(str, missing)) + ("…" if largest + 1 - len(present) > 10 else "")
        raise UsageError(
            f"{path} holds label {largest}, so {largest + 1} classes 0..{largest}, but y_train "
            f"has examples of only {len(present)} of them (none of {listed}); fix the labels, "
            "or add class_names naming every class"
        )
    return digit_names(largest + 1)


def _describe(chw: tuple[int, ...]) -> str:
    channels, height, width = chw
    return f"{height}×{width} {'grey' if channels == 1 else 'colour'}"


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
