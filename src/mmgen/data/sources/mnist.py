"""The MNIST family: IDX files read by torchvision's classes, or by mmgen's reader if they cannot.

MNIST, Fashion-MNIST, KMNIST, QMNIST and EMNIST ship as IDX files; torchvision has one class for
each (``torchvision.datasets.MNIST`` ...), differing only in class attributes. As in torchvision,
each source here is one :class:`IdxSource` that differs only in its fields (torchvision's class,
file names, class names). An extracted folder in torchvision's layout is read by torchvision's
class; gzip-only and Debian's flat folders, which torchvision cannot read, by :mod:`.idx`.
``--download`` runs torchvision's own download (its mirrors and MD5s).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit

import numpy as np

from mmgen.errors import UsageError

from .base import SPLITS, Source, SplitArrays, digit_names, file_sha256
from .idx import read_idx_with_sha
from .places import MIRRORS_ENV, Place, debian_dir

# split -> (images file, labels file): MNIST's names, without the optional ".gz".
STANDARD_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True, kw_only=True)
class IdxSource(Source):
    """One source of the MNIST family: IDX files in ``ROOT/<torchvision class>/raw/``."""

    class_names: tuple[str, ...]  # index = label; empty: "0".."K-1", K = largest label + 1
    split_files: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(STANDARD_FILES))
    torchvision_class: str = ""  # "MNIST" ...; empty: no torchvision class (idx:PATH)
    torchvision_args: tuple[tuple[str, Any], ...] = ()  # EMNIST: (("split", "letters"),)
    label_column: int | None = None  # QMNIST: labels are (N, 8) int32, column 0 the class
    label_offset: int = 0  # EMNIST letters: torchvision's labels 1..26 become 0..25
    transposed: bool = False  # EMNIST stores every image transposed (column-major)

    @property
    def file_names(self) -> tuple[str, ...]:
        """All files of the source (both splits), without the optional ``.gz``."""
        return tuple(name for split in SPLITS for name in self.split_files[split])

    @property
    def can_download(self) -> bool:
        """Whether torchvision has a class that downloads this source."""
        return bool(self.torchvision_class)

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """The data roots' ``<folder>/raw``, then Debian's flat ``/usr/share/datasets/<name>``."""
        places = [(label, folder / "raw" if folder else None) for label, folder in
                  super().search_places(data_dir)]  # fmt: skip
        return [*places, ("Debian", debian_dir() / self.name)]

    def missing_files(self, folder: Path) -> list[str]:
        """The files that ``folder`` lacks in both raw and gzip form."""
        return [name for name in self.file_names if _find_file(folder, name) is None]

    def how_to_supply(self) -> str:
        """Where to put the files, or ``--download``."""
        return self.supply_hint(f"{', '.join(self.file_names)} (raw or .gz)").replace(
            f"ROOT/{self.folder} ", f"ROOT/{self.folder}/raw "
        )

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read ``split``: through torchvision's class if it can read the folder, else mmgen's."""
        if self._torchvision_reads(folder):
            images, labels, files = self._read_with_torchvision(folder, split)
        else:
            images, labels, files = self._read_idx(folder, split)
        if self.label_column is not None:
            labels = labels[:, self.label_column]
        labels = labels.astype(np.int64) + self.label_offset
        if self.transposed:
            images = images.transpose(0, 2, 1)
        class_names = self.class_names or self._names_from_labels(folder)
        images = np.ascontiguousarray(images[:, None])  # (N, H, W) → (N, 1, H, W)
        return SplitArrays(images, labels, class_names, files)

    def download(self, cache_root: Path, mirrors: list[str] | None) -> Path:
        """Run torchvision's download for both splits into the cache; return the raw folder.

        torchvision writes into a staging folder first; its files move into the cache only when
        every download and MD5 check succeeded, so a failure leaves nothing half-written.
        """
        cls = self._torchvision_type(mirrors)  # checks the mirrors before anything is made
        final = cache_root / self.folder / "raw"
        final.mkdir(parents=True, exist_ok=True)
        try:
            return self._download_into(cls, cache_root, final)
        except BaseException:
            for folder in (final, final.parent):  # made for this download, still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise

    def _download_into(self, cls: type, cache_root: Path, final: Path) -> Path:
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache_root))
        try:
            for split in SPLITS:
                try:
                    cls(
                        staging,
                        train=split == "train",
                        download=True,
                        **dict(self.torchvision_args),
                    )
                except (RuntimeError, URLError, OSError) as error:
                    raise download_error(self.name, error) from None
            for path in (staging / self.folder / "raw").iterdir():
                if path.is_file() and not (final / path.name).exists():
                    os.replace(path, final / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def _torchvision_reads(self, folder: Path) -> bool:
        """torchvision reads only extracted files in ``ROOT/<class name>/raw/``."""
        return (
            bool(self.torchvision_class)
            and folder.name == "raw"
            and folder.parent.name == self.torchvision_class
            and all((folder / name).is_file() for name in self.file_names)
        )

    def _torchvision_type(self, mirrors: list[str] | None) -> type:
        """torchvision's class, with ``mirrors`` (or ``MMGEN_MIRRORS``) in place of its own."""
        import torchvision.datasets

        cls = getattr(torchvision.datasets, self.torchvision_class)
        urls = mirror_urls(self, mirrors)
        if not urls:
            return cls
        # Same class name: torchvision names the folder ROOT/<class name>/raw after it.
        return type(cls.__name__, (cls,), {"mirrors": [url.rstrip("/") + "/" for url in urls]})

    def _read_with_torchvision(
        self, folder: Path, split: str
    ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        cls = self._torchvision_type(None)
        try:
            dataset = cls(
                folder.parent.parent, train=split == "train", **dict(self.torchvision_args)
            )
        except (AssertionError, TypeError, ValueError, RuntimeError) as error:
            # torchvision's checks are bare asserts: an empty message names no reason
            reason = " ".join(str(error).split()) or f"its {type(error).__name__} check failed"
            raise UsageError(
                f"torchvision cannot read {self.name} from {folder} ({reason}); the files are "
                "not valid IDX data: replace them"
            ) from None
        images, labels = dataset.data.numpy(), dataset.targets.numpy()
        names = self.split_files[split]
        # torchvision checked dtypes and dimensions; the counts it leaves unchecked.
        _check_counts(images, labels, *(folder / name for name in names))
        return images, labels, {name: file_sha256(folder / name) for name in names}

    def _read_idx(self, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        images_name, labels_name = self.split_files[split]
        images_path, labels_path = folder / images_name, folder / labels_name
        images_path = _find_file(folder, images_name) or images_path  # missing_files checked
        labels_path = _find_file(folder, labels_name) or labels_path
        images, images_sha = read_idx_with_sha(images_path)
        labels, labels_sha = read_idx_with_sha(labels_path)
        _check_split(images, labels, images_path, labels_path, self.label_column)
        return images, labels, {images_name: images_sha, labels_name: labels_sha}

    def _names_from_labels(self, folder: Path) -> tuple[str, ...]:
        """Name an unnamed source's classes "0".."K-1", K = largest label of both splits + 1."""
        largest = 0
        for split in SPLITS:
            path = _find_file(folder, self.split_files[split][1])
            labels = read_idx_with_sha(path)[0] if path is not None else np.zeros(1)
            largest = max(largest, int(labels.max(initial=0)))
        return digit_names(largest + 1)


@dataclass(frozen=True, kw_only=True)
class IdxFolderSource(IdxSource):
    """A folder holding the four standard IDX files directly (spec ``idx:PATH``).

    Its classes are unnamed: their number is the largest label + 1, their names the digits.
    Nothing else is searched and nothing is downloaded.
    """

    location: Path

    @classmethod
    def from_folder(cls, path: str | Path) -> IdxFolderSource:
        """Build the source for ``path`` (the folder need not exist yet)."""
        path = Path(path).expanduser()
        return cls(name=f"idx:{path}", folder=path.name, class_names=(), location=path)

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """The folder itself: an ``idx:`` source ignores ``data_dir`` and the cache."""
        return [("idx folder", self.location)]

    def how_to_supply(self) -> str:
        """Where to put the four files."""
        return f"put {', '.join(self.file_names)} (raw or .gz) directly in {self.location}"


def mirror_urls(source: IdxSource, mirrors: list[str] | None) -> list[str]:
    """Base URLs to use instead of torchvision's: ``mirrors``, else ``MMGEN_MIRRORS``, else none.

    ``MMGEN_MIRRORS`` holds URLs separated by spaces or commas; ``{name}`` and ``{folder}`` in
    them become the source's name and folder, so one variable can serve several sources.
    """
    given = "mirrors" if mirrors is not None else MIRRORS_ENV
    if mirrors is None:
        mirrors = [url for url in re.split(r"[\s,]+", os.environ.get(MIRRORS_ENV, "")) if url]
    for url in mirrors:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ftp", "file") or not (
            parts.netloc or parts.scheme == "file"
        ):
            raise UsageError(
                f"{given} holds {url!r}, which is not a base URL; give http(s)://HOST/PATH "
                "(or file:///PATH), several separated by spaces or commas"
            )
    return [
        url.replace("{name}", source.name).replace("{folder}", source.folder) for url in mirrors
    ]


def download_error(name: str, error: BaseException) -> FileNotFoundError:
    """torchvision's download failure (often several lines) as one line with the fix."""
    reason = " ".join(str(error).split())
    return FileNotFoundError(
        f"could not download {name} through torchvision: {reason}. To fix: check the network "
        f"or the mirrors ({MIRRORS_ENV}), or copy the files by hand and pass --data-dir ROOT"
    )


def _find_file(folder: Path, name: str) -> Path | None:
    """Return ``folder/name`` or ``folder/name.gz``, preferring the raw file (no decompression)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_split(
    images: np.ndarray,
    labels: np.ndarray,
    images_path: Path,
    labels_path: Path,
    label_column: int | None,
) -> None:
    """Check one split: (N, H, W) uint8 images, (N,) uint8 labels (QMNIST: (N, 8) int32)."""
    if images.dtype != np.uint8 or images.ndim != 3:
        raise UsageError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}; mmgen needs "
            "(N, H, W) unsigned bytes: check that it is an images file"
        )
    label_ok = labels.ndim == 1 and labels.dtype == np.uint8
    if label_column is not None:
        label_ok = labels.ndim == 2 and labels.shape[1] > label_column
    if not label_ok:
        raise UsageError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}; labels must be "
            "(N,) unsigned bytes: check that it is a labels file"
        )
    _check_counts(images, labels, images_path, labels_path)


def _check_counts(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    """As many labels as images."""
    if len(images) != len(labels):
        raise UsageError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files come from different datasets: replace them"
        )
