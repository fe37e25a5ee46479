"""``folder:PATH``: your own images in torchvision's ImageFolder layout, one sub-folder per class.

    PATH/train/<class>/*.png      PATH/test/<class>/*.png

Classes are found and sorted as ``torchvision.datasets.ImageFolder`` does (its ``find_classes``
and ``make_dataset``, the same image extensions), with two differences that keep a stray entry
from lying about the data: hidden entries (``.ipynb_checkpoints``, ``.DS_Store``) are skipped, and
links to folders inside a class are not followed (ImageFolder follows them without loop
detection: ``train/a/loop -> ..`` files every other class's images under ``a``, again and again).
A class folder that is a link to the split folder or above it is refused. Both splits must hold
the same class set; the number of images read per class is logged. Every image of the source
must share one size and one mode, grey (``L``, one channel) or colour (``RGB``, three channels),
since one CVAE is trained per source.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgen.errors import UsageError

from .base import SPLITS, Source, SplitArrays, file_sha256
from .places import Place

logger = logging.getLogger(__name__)

CHANNELS = {"L": 1, "RGB": 3}  # PIL mode -> channels; other modes must be converted first


@dataclass(frozen=True, kw_only=True)
class ImageFolderSource(Source):
    """Images in ``PATH/<split>/<class>/`` (spec ``folder:PATH``); nothing else is searched."""

    location: Path

    @classmethod
    def from_folder(cls, path: str | Path) -> ImageFolderSource:
        """Build the source for ``path`` (the folder need not exist yet)."""
        path = Path(path).expanduser()
        return cls(name=f"folder:{path}", folder=path.name, location=path)

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """The folder itself."""
        return [("image folder", self.location)]

    def missing_files(self, folder: Path) -> list[str]:
        """The split sub-folders that ``folder`` lacks."""
        missing = []
        for split in SPLITS:
            path = folder / split
            if path.is_symlink() and not path.exists():  # a dangling link or a loop
                try:
                    path.resolve(strict=True)
                except (RuntimeError, OSError) as error:  # 3.11 raises RuntimeError for a loop
                    if isinstance(error, RuntimeError) or error.errno == errno.ELOOP:
                        raise UsageError(
                            f"{path} is a link that loops ({path} -> {os.readlink(path)}); "
                            f"make {split}/ a real folder"
                        ) from None
            if not path.is_dir():
                missing.append(f"{split}/")
        return missing

    def how_to_supply(self) -> str:
        """The layout to create."""
        return (
            f"put the images in {self.location}/train/<class>/ and {self.location}/test/<class>/ "
            "(torchvision's ImageFolder layout, the same classes in both)"
        )

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read every image of ``split``, after checking both splits' classes, sizes and modes."""
        samples = {name: _samples(folder / name) for name in SPLITS}
        classes = {name: found[0] for name, found in samples.items()}
        if classes["train"] != classes["test"]:
            raise UsageError(
                f"{folder}: train/ has classes {classes['train']} but test/ has "
                f"{classes['test']}; both splits need the same class folders"
            )
        size, mode = _common_format([path for name in SPLITS for path, _ in samples[name][1]])
        paths = [path for path, _ in samples[split][1]]
        labels = np.array([label for _, label in samples[split][1]], dtype=np.int64)
        images = np.stack([_pixels(path) for path in paths]) if paths else np.empty((0, 0, 0))
        if mode == "L":
            images = images[:, None]  # (N, H, W) → (N, 1, H, W)
        else:
            images = images.transpose(0, 3, 1, 2)  # (N, H, W, 3) → (N, 3, H, W)
        manifest = "".join(f"{p.relative_to(folder).as_posix()}\t{file_sha256(p)}\n" for p in paths)
        files = {f"{split}/": hashlib.sha256(manifest.encode()).hexdigest()}
        details = {"image_format": {"mode": mode, "size": list(size)}}
        return SplitArrays(
            np.ascontiguousarray(images), labels, tuple(classes[split]), files, details
        )


def _samples(split_folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """The classes and ``(path, label)`` list of one split folder (see the module docstring)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    try:
        classes = sorted(
            entry.name
            for entry in os.scandir(split_folder)
            if not entry.name.startswith(".") and entry.is_dir()
        )
    except OSError as error:
        raise UsageError(f"{split_folder}: {error.strerror or error}") from None
    if not classes:
        raise UsageError(
            f"{split_folder}: no class folder found; put each class's images "
            f"({', '.join(IMG_EXTENSIONS)}) in a sub-folder named after the class"
        )
    found: list[tuple[Path, int]] = []
    counts: dict[str, int] = {}
    for label, name in enumerate(classes):
        class_folder = split_folder / name
        if class_folder.is_symlink() and _is_ancestor(class_folder.resolve(), split_folder):
            raise UsageError(
                f"{class_folder} is a link to {class_folder.resolve()}, which holds the split "
                "folder itself (a loop); remove the link or make it a real folder"
            )
        images = _class_images(class_folder, IMG_EXTENSIONS)
        if not images:
            raise UsageError(
                f"{class_folder} holds no image ({', '.join(IMG_EXTENSIONS)}); every class "
                "folder needs at least one, or remove it"
            )
        counts[name] = len(images)
        found.extend((path, label) for path in images)
    logger.info(
        "%s: %d images in %d classes (%s)",
        split_folder,
        len(found),
        len(classes),
        ", ".join(f"{name} {count}" for name, count in counts.items()),
    )
    return classes, found


def _is_ancestor(candidate: Path, folder: Path) -> bool:
    """Whether ``candidate`` is ``folder`` or one of its parents (after resolving links)."""
    resolved = folder.resolve()
    return candidate == resolved or candidate in resolved.parents


def _class_images(class_folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """The images under ``class_folder``, in ImageFolder's order, never through a folder link."""
    images: list[Path] = []
    walk = sorted(os.walk(class_folder, followlinks=False))
    for root, folders, files in walk:
        if any(part.startswith(".") for part in Path(root).relative_to(class_folder).parts):
            continue  # inside a hidden folder
        for name in folders:
            if os.path.islink(os.path.join(root, name)) and not name.startswith("."):
                logger.warning("%s: a link to a folder, not followed", os.path.join(root, name))
        images.extend(
            Path(root) / name
            for name in sorted(files)
            if not name.startswith(".") and name.lower().endswith(extensions)
        )
    return images


def _common_format(paths: list[Path]) -> tuple[tuple[int, int], str]:
    """The size and mode every image shares; one ``UsageError`` naming the first that differs."""
    from PIL import Image

    expected: tuple[tuple[int, int], str] | None = None
    for path in paths:
        try:
            with Image.open(path) as image:  # reads the header only
                found = (image.size, image.mode)
        except _DAMAGED as error:
            raise _damaged(path, error) from None
        if found[1] not in CHANNELS:
            raise UsageError(
                f"{path} is a {found[1]} image; mmgen reads grey (L) or colour (RGB) images: "
                "convert the folder to one of them"
            )
        if expected is None:
            expected, first = found, path
        elif found != expected:
            raise UsageError(
                f"{path} is {found[0][0]}×{found[0][1]} {found[1]} but {first} is "
                f"{expected[0][0]}×{expected[0][1]} {expected[1]}; every image of a source "
                "must share one size and mode: resize or convert them"
            )
    if expected is None:
        raise UsageError("the image folder holds no images; put them in <split>/<class>/")
    return expected


# What PIL raises for a damaged or cut-off image (UnidentifiedImageError is an OSError; a cut-off
# PNG is "image file is truncated"; some decoders raise SyntaxError, EOFError or struct.error).
_DAMAGED = (OSError, SyntaxError, EOFError, ValueError, struct.error)


def _damaged(path: Path, error: BaseException) -> UsageError:
    """One line naming the image PIL could not read, and its reason."""
    reason = str(error).strip() or type(error).__name__
    return UsageError(
        f"{path} cannot be read as an image ({reason}); it is damaged or cut off: "
        "replace it or remove it from the folder"
    )


def _pixels(path: Path) -> np.ndarray:
    """The image's pixels; a damaged or cut-off file is one ``UsageError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image, dtype=np.uint8)
    except _DAMAGED as error:
        raise _damaged(path, error) from None
