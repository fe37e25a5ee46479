"""``folder:PATH``: your own images in torchvision's ImageFolder layout, one sub-folder per class.

    PATH/train/<class>/*.png      PATH/test/<class>/*.png

Classes are found and sorted exactly as ``torchvision.datasets.ImageFolder`` does (its
``find_classes`` and ``make_dataset``, the same image extensions); both splits must hold the same
class set. Every image of the source must share one size and one mode, grey (``L``, one channel)
or colour (``RGB``, three channels), since one CVAE is trained per source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgen.errors import UsageError

from .base import SPLITS, Source, SplitArrays, file_sha256
from .places import Place

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
        return [f"{split}/" for split in SPLITS if not (folder / split).is_dir()]

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
    """torchvision's classes and ``(path, label)`` list of one split folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(split_folder)
        found = make_dataset(split_folder, class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:
        raise UsageError(
            f"{split_folder}: {' '.join(str(error).split())}; put each class's images "
            f"({', '.join(IMG_EXTENSIONS)}) in a sub-folder named after the class"
        ) from None
    return classes, [(Path(path), label) for path, label in found]


def _common_format(paths: list[Path]) -> tuple[tuple[int, int], str]:
    """The size and mode every image shares; one ``UsageError`` naming the first that differs."""
    from PIL import Image

    expected: tuple[tuple[int, int], str] | None = None
    for path in paths:
        with Image.open(path) as image:  # reads the header only
            found = (image.size, image.mode)
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


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)
