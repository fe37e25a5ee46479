"""Reading an mmgen file for export: one split in blocks of rows, every per-tuple field with it.

Exports must not hold a whole split in memory (a million tuples are several GB), so a split is
read in blocks of :data:`BLOCK_ROWS` rows, a multiple of the file's chunk rows (each chunk is
decompressed once). Besides the images and labels, every other per-split dataset of the file
(``z``, ``code_index``, ``permutation/<m>``, ``source_index/<m>``, and any per-tuple nuisance or
truth a newer writer adds) travels as an *extra* column named by its path, ``/`` → ``.``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from mmgen.data.h5io import CHUNK_ROWS, SPLITS, open_dataset, read_rows
from mmgen.data.header import DatasetHeader, header_from_attrs
from mmgen.data.shapes import from_stored
from mmgen.errors import UsageError

BLOCK_ROWS = 8 * CHUNK_ROWS


@dataclass(frozen=True)
class Block:
    """Rows ``start .. start + len`` of one split."""

    start: int
    images: dict[str, np.ndarray]  # modality → (n, C, H, W) as stored (uint8 or float32)
    labels: np.ndarray  # (n,) int64
    extras: dict[str, np.ndarray]  # column name → (n, ...) every other per-split dataset

    def __len__(self) -> int:
        return len(self.labels)


def column_name(path: str) -> str:
    """``permutation/mnist`` → ``permutation.mnist``: one flat name per per-split dataset."""
    return path.replace("/", ".")


def extra_paths(group: h5py.Group, header: DatasetHeader) -> list[str]:
    """Every per-split dataset other than images and labels, sorted by path."""
    paths: list[str] = []

    def visit(name: str, item: object) -> None:
        if isinstance(item, h5py.Dataset) and not name.startswith("images/") and name != "labels":
            if item.shape[:1] == group["labels"].shape:
                paths.append(name)

    group.visititems(visit)
    return sorted(paths)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Levels as uint8: stored uint8 as is, float32 x in [0, 1] as round(255·x)."""
    if images.dtype == np.uint8:
        return images
    return np.rint(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def to_float(images: np.ndarray) -> np.ndarray:
    """Levels as float32 in [0, 1]: uint8 / 255, float32 as is."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


class SplitReader:
    """An open mmgen file, read one split at a time in blocks (use as a context manager)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.handle = open_dataset(self.path)
        self.header = header_from_attrs(self.handle.attrs, self.path)

    def __enter__(self) -> SplitReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.close()

    def size(self, split: str) -> int:
        return int(self.handle[split]["labels"].shape[0])

    def extras(self, split: str) -> dict[str, str]:
        """Column name → dataset path of the split's extra per-tuple datasets."""
        group = self.handle[split]
        return {column_name(p): p for p in extra_paths(group, self.header)}

    def blocks(
        self, split: str, rows: int = BLOCK_ROWS, modalities: Sequence[str] | None = None
    ) -> Iterator[Block]:
        """The split's rows in order, ``rows`` at a time (images of ``modalities``: all)."""
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        group = self.handle[split]
        extras = self.extras(split) if modalities is None else {}
        shapes = self.header.image_shapes
        names = self.header.modalities if modalities is None else modalities
        chosen = {m: shapes[m] for m in names}
        for start in range(0, self.size(split), rows):
            selection = slice(start, start + rows)
            images = {
                m: from_stored(read_rows(group["images"][m], selection, self.path), shape)
                for m, shape in chosen.items()
            }
            labels = read_rows(group["labels"], selection, self.path).astype(np.int64)
            values = {name: read_rows(group[p], selection, self.path) for name, p in extras.items()}
            yield Block(start, images, labels, values)
