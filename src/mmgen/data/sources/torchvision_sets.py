"""Colour sources read entirely by torchvision: SVHN (``.mat`` files) and CIFAR-10/100 (pickles).

torchvision's classes read these files, check them against the MD5s it publishes (on every
load, not only on download) and download them; mmgen only finds the folder, converts the arrays
to ``(N, C, H, W)`` uint8 and records a SHA-256 per file read.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np

from mmgen.errors import UsageError

from .base import SPLITS, Source, SplitArrays, file_sha256
from .mnist import download_error


@dataclass(frozen=True, kw_only=True)
class TorchvisionSource(Source):
    """A source that one ``torchvision.datasets`` class reads from ``ROOT/<folder>/``."""

    torchvision_class: str  # "SVHN", "CIFAR10", ...
    split_files: dict[str, tuple[str, ...]]  # split -> the files torchvision reads for it
    shared_files: tuple[str, ...] = ()  # read for either split (CIFAR's class names)
    class_names: tuple[str, ...] = ()  # empty: torchvision's `classes` of the data set
    split_by_name: bool = False  # SVHN(root, split="train"); else CIFAR10(root, train=True)
    channels_last: bool = False  # CIFAR's `data` is (N, H, W, C); SVHN's is (N, C, H, W)
    folder_is_root: bool = False  # SVHN reads ROOT itself; CIFAR reads ROOT/<folder> (its own)

    @property
    def can_download(self) -> bool:
        """torchvision downloads every one of these sources."""
        return True

    @property
    def file_names(self) -> tuple[str, ...]:
        """Every file of both splits."""
        return (*(name for split in SPLITS for name in self.split_files[split]), *self.shared_files)

    def missing_files(self, folder: Path) -> list[str]:
        """The files that ``folder`` lacks."""
        return [name for name in self.file_names if not (folder / name).is_file()]

    def how_to_supply(self) -> str:
        """Where to put the files, or ``--download``."""
        return self.supply_hint(", ".join(self.file_names))

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read ``split`` with torchvision's class (which checks every file's MD5)."""
        self.require_extras()
        try:
            dataset = self._dataset(folder, split, download=False)
        except RuntimeError as error:
            raise UsageError(
                f"torchvision refused {self.name} in {folder} ({error}): a file does not match "
                "the MD5 that torchvision publishes for it, so it is corrupt or another "
                "version; replace it, or delete it and pass --download"
            ) from None
        images = np.asarray(dataset.data, dtype=np.uint8)
        if self.channels_last:
            images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) → (N, C, H, W)
        labels = dataset.targets if hasattr(dataset, "targets") else dataset.labels
        labels = np.asarray(labels, dtype=np.int64)
        class_names = self.class_names or tuple(dataset.classes)
        read = (*self.split_files[split], *self.shared_files)
        files = {name: file_sha256(folder / name) for name in read}
        return SplitArrays(np.ascontiguousarray(images), labels, class_names, files)

    def download(self, cache_root: Path, mirrors: list[str] | None) -> Path:
        """Run torchvision's download (its URLs and MD5s) into the cache; return the folder.

        The files are fetched into a staging folder and moved into the cache only when every
        download succeeded and matched its MD5.
        """
        self.require_extras()
        final = cache_root / self.folder
        final.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_root))
        fetched = staging if self.folder_is_root else staging / self.folder
        try:
            for split in SPLITS:
                try:
                    self._dataset(fetched, split, download=True)
                except (RuntimeError, URLError, OSError) as error:
                    raise download_error(self.name, error) from None
            for name in self.file_names:
                if not (final / name).exists():
                    os.replace(fetched / name, final / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def _dataset(self, folder: Path, split: str, download: bool):
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.torchvision_class)
        root = folder if self.folder_is_root else folder.parent
        if self.split_by_name:
            return cls(root, split=split, download=download)
        return cls(root, train=split == "train", download=download)
