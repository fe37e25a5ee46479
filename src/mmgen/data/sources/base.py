"""What every uni-modal source shares: the in-memory split, and the interface of a source.

A source (the M²VAE paper's "uni-modal set", Korthals et al., Sec. 3) is a labelled image data
set with a train and a test split. Each kind of source (:mod:`.mnist`, :mod:`.torchvision_sets`,
:mod:`.folder`, :mod:`.arrays`, :mod:`.digits`) subclasses :class:`Source` and says only where
its files lie, which files a folder must hold, and how one split is read.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen.errors import UsageError
from mmgen.shared import file_sha256  # noqa: F401 (the sources import it from here)

from .places import Place, data_roots, describe_place

SPLITS = ("train", "test")


@dataclass(frozen=True, eq=False)
class SplitArrays:
    """One split as a source reads it, before ``--classes`` and ``limit`` are applied."""

    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,) int64 in [0, len(class_names))
    class_names: tuple[str, ...]  # index = label
    files: dict[str, str]  # file name -> SHA-256 of its (decompressed) bytes
    details: dict[str, Any] = field(default_factory=dict)  # more identity, e.g. a split rule


@dataclass(frozen=True, kw_only=True)
class Source:
    """A labelled image source: where its files are looked for and how one split is read.

    Subclasses override :meth:`missing_files`, :meth:`read` and, where they differ from a
    folder under each data root, :meth:`search_places` and :meth:`how_to_supply`.
    """

    name: str  # the spec the user typed: "svhn", "folder:PATH", ...
    folder: str  # the source's folder under a data root: "SVHN" → <root>/SVHN/
    requires: tuple[tuple[str, str], ...] = ()  # (module to import, pip extra that installs it)

    @property
    def can_download(self) -> bool:
        """Whether ``--download`` can fetch the files (through torchvision)."""
        return False

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """Return ``(label, folder)`` for every place searched, in order; ``None`` where unset.

        Args:
            data_dir: the explicit data root (``--data-dir``), or ``None``.
        """
        return [
            (label, root / self.folder if root else None) for label, root in data_roots(data_dir)
        ]

    def missing_files(self, folder: Path) -> list[str]:
        """Return the files that ``folder`` lacks for this source (empty: it holds them all)."""
        raise NotImplementedError

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read ``split`` from ``folder`` (a folder that :meth:`missing_files` accepted)."""
        raise NotImplementedError

    def download(self, cache_root: Path, mirrors: list[str] | None) -> Path:
        """Fetch the files into the cache root ``cache_root``; return the folder they are in."""
        raise UsageError(f"{self.name} cannot be downloaded; {self.how_to_supply()}")

    def how_to_supply(self) -> str:
        """One sentence telling the user how to make the files available."""
        raise NotImplementedError

    def require_extras(self) -> None:
        """Raise ``UsageError`` naming the pip extra when a module the source needs is absent."""
        for module, extra in self.requires:
            if importlib.util.find_spec(module) is None:
                raise UsageError(
                    f"source {self.name} needs {module}, which is not installed; install the "
                    f"extra: pip install 'mmgen-entangled[{extra}]'"
                )

    def not_found(self, places: list[Place]) -> FileNotFoundError:
        """The one-line error for a search that found no folder holding the files."""
        searched = "; ".join(
            describe_place(label, folder, self.missing_files(folder) if folder else [])
            for label, folder in places
        )
        return FileNotFoundError(
            f"{self.name} files not found; searched {searched}. To fix: {self.how_to_supply()}"
        )

    def supply_hint(self, files: str) -> str:
        """``how_to_supply`` for a source with a folder under each data root."""
        hint = (
            f"put {files} in ROOT/{self.folder} and pass --data-dir ROOT or set MMGEN_DATA_DIR=ROOT"
        )
        if self.can_download:
            from .places import cache_dir  # late: tests move the cache through the environment

            hint += f", or pass --download to fetch them into {cache_dir() / self.folder}"
        return hint


@dataclass(frozen=True, eq=False)
class SourceData:
    """One split of a source in memory, with what identifies the files it came from."""

    name: str  # source spec: "mnist", "svhn", "folder:PATH", "idx:PATH", ...
    split: str  # "train" | "test"
    images: np.ndarray  # (N, C, H, W) uint8 grey or colour levels
    labels: np.ndarray  # (N,) int64 in [0, num_classes)
    class_names: tuple[str, ...]  # index = label (after --classes: the chosen ones, in order)
    files: dict[str, str]  # file name -> SHA-256 of its (decompressed) bytes
    root: str  # folder the files were read from
    classes: tuple[int, ...] | None = None  # --classes: label k was the source's classes[k]
    details: dict[str, Any] = field(default_factory=dict)  # more identity (e.g. digits' split)

    @property
    def num_classes(self) -> int:
        """Number of classes of the source (not only those present in this split)."""
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image of the source."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    def as_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Levels ``x / 255`` as ``(N, C, H, W)`` float32 and labels ``(N,)``, on ``device``.

        The keys ``"images"`` and ``"labels"`` are what the CVAE and the classifiers train on.
        """
        images = torch.from_numpy(self.images).to(device).float().div_(255.0)
        return {"images": images, "labels": torch.from_numpy(self.labels).to(device)}

    def identity(self) -> dict[str, Any]:
        """Return a JSON-ready record of where these examples came from.

        ``classes`` (the original index of each kept class) appears only when ``--classes``
        chose a subset, so that a default run records what it always recorded.
        """
        record: dict[str, Any] = {
            "name": self.name,
            "split": self.split,
            "root": self.root,
            "files": dict(self.files),
            "num_images": int(len(self.labels)),
        }
        if self.classes is not None:
            record["classes"] = list(self.classes)
        return {**record, **self.details}


def digit_names(count: int = 10) -> tuple[str, ...]:
    """Class names ``"0"`` .. ``"count-1"``: the names of every digit set and unnamed source."""
    return tuple(str(label) for label in range(count))


def to_uint8_levels(images: np.ndarray, what: str) -> np.ndarray:
    """``uint8`` as is; floats in [0, 1] as ``round(255·x)``, the rounding ``generate`` uses.

    Raises:
        UsageError: another dtype, or floats outside [0, 1]; the message names ``what``.
    """
    if images.dtype == np.uint8:
        return images
    if np.issubdtype(images.dtype, np.floating):
        if images.size and (
            np.nanmin(images) < 0 or np.nanmax(images) > 1 or np.isnan(images).any()
        ):
            raise UsageError(
                f"{what} holds floats outside [0, 1]; give uint8 levels 0..255 or floats in [0, 1]"
            )
        # float32 as in generate (torch.round(x * 255) on float32): the same levels bit for bit.
        return np.round(images.astype(np.float32) * np.float32(255.0)).astype(np.uint8)
    raise UsageError(
        f"{what} holds {images.dtype} data; give uint8 levels 0..255 or floats in [0, 1]"
    )
