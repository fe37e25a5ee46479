"""The mmgen HDF5 schema in one place: constants, validation, readers and a torch Dataset.

One file holds one multi-modal dataset (MNIST-E, its mixed twin MNIST-ME, or a naive pairing of
real images). Layout (``docs/format.md`` documents every field):

    /                       attrs: format="mmgen", schema_version, mmgen_version, kind,
                                   modalities (JSON list), sources (JSON), num_classes,
                                   class_names (JSON), latent_dim (0 when has_latent is false),
                                   has_latent, seed, config (JSON)
    /<split>/               split ∈ {"train", "test"}; attrs: size
    /<split>/images/<m>     (N, 28, 28) uint8 grey levels ×255 (or float32 in [0, 1])
    /<split>/labels         (N,) int64 class of every tuple
    /<split>/z              (N, d) float32 true latent code (absent when has_latent is false)
    /<split>/code_index     (N,) int64 index of the shared code (absent when has_latent is false)
    /<split>/permutation/<m> (N,) int64, mixed files only: tuple i's modality m came from
                             tuple permutation[i] of the entangled source file
    /<split>/source_index/<m> (N,) int64, naive files only: row of the source split used

Mixed files add the root attribute ``parent`` (JSON): the entangled file they came from.
Writing goes through :func:`create_dataset` (atomic, never overwrites unasked, whole
compressed chunks only, no timestamps: the same rows give the same bytes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mmgen.atomic import atomic_path
from mmgen.errors import UsageError

FORMAT = "mmgen"
SCHEMA_VERSION = 1
SPLITS = ("train", "test")
KINDS = ("entangled", "mixed", "naive")
JSON_ATTRS = ("modalities", "sources", "class_names", "config", "parent")


@dataclass(frozen=True)
class SplitData:
    """One split in memory: images per modality, labels and (where stored) true latent codes."""

    images: dict[str, np.ndarray]  # modality → (N, 28, 28), uint8 (×255) or float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    z: np.ndarray | None  # (N, d) float32, None for a naive pairing

    def __len__(self) -> int:
        return len(self.labels)

    def images_float(self, modality: str) -> np.ndarray:
        """Images of ``modality`` as float32 grey levels in [0, 1], shape ``(N, 28, 28)``."""
        return to_unit_float(self.images[modality])


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 grey levels ×255 → float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def open_dataset(path: Path | str) -> h5py.File:
    """Open an mmgen file for reading, with a one-line error when it is not one.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not HDF5, not written by mmgen, or of a newer schema.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist (expected an HDF5 file from mmgen generate)"
        )
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise UsageError(f"{path} is not an HDF5 file (expected one from mmgen generate)") from None
    if handle.attrs.get("format") != FORMAT:
        handle.close()
        raise UsageError(
            f"{path} is an HDF5 file but not an mmgen dataset (no format='mmgen' attribute); "
            "make one with mmgen generate or mmgen shuffle"
        )
    version = int(handle.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        handle.close()
        raise UsageError(
            f"{path} uses schema version {version}, newer than this mmgen reads "
            f"({SCHEMA_VERSION}); upgrade mmgen"
        )
    return handle


def read_attrs(path: Path | str) -> dict[str, Any]:
    """Root attributes of an mmgen file, with the JSON-encoded ones decoded."""
    with open_dataset(path) as handle:
        return decode_attrs(handle.attrs)


def decode_attrs(attrs: h5py.AttributeManager) -> dict[str, Any]:
    """Turn h5py root attributes into plain Python values (JSON fields decoded)."""
    result: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in JSON_ATTRS:
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        result[key] = value
    return result


def encode_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """Plain values → values h5py stores (JSON fields encoded as strings)."""
    return {
        key: json.dumps(value, sort_keys=True) if key in JSON_ATTRS else value
        for key, value in attrs.items()
    }


def read_split(path: Path | str, split: str, limit: int | None = None) -> SplitData:
    """Load one split into memory.

    Args:
        path: an mmgen HDF5 file.
        split: ``"train"`` or ``"test"``.
        limit: read only the first ``limit`` tuples.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    with open_dataset(path) as handle:
        if split not in handle:
            raise UsageError(f"{path} has no {split!r} split (it has {sorted(handle)})")
        group = handle[split]
        stop = len(group["labels"]) if limit is None else min(limit, len(group["labels"]))
        modalities = json.loads(handle.attrs["modalities"])
        images = {m: group["images"][m][:stop] for m in modalities}
        labels = group["labels"][:stop].astype(np.int64)
        z = group["z"][:stop] if "z" in group else None
    return SplitData(images=images, labels=labels, z=z)


class MultimodalDataset(Dataset):
    """A split as a torch ``Dataset``: each item is ``{"images": {m: (1, 28, 28)}, "label", "z"}``.

    The split is loaded into memory once (MNIST-sized splits take about 100 MB as float32).
    ``"z"`` is present only when the file stores true latent codes.
    """

    def __init__(self, path: Path | str, split: str = "train", limit: int | None = None) -> None:
        data = read_split(path, split, limit)
        self.modalities = list(data.images)
        self.images = {
            m: torch.from_numpy(data.images_float(m)).unsqueeze(1) for m in self.modalities
        }
        self.labels = torch.from_numpy(data.labels)
        self.z = None if data.z is None else torch.from_numpy(data.z)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {
            "images": {m: self.images[m][index] for m in self.modalities},
            "label": self.labels[index],
        }
        if self.z is not None:
            item["z"] = self.z[index]
        return item


# --- Writing -----------------------------------------------------------------------------------

IMAGE_SHAPE = (28, 28)
IMAGE_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype(np.uint8), "float32": np.dtype(np.float32)}
# Names used by the layout itself; a modality may not take them (``images/<m>`` is unambiguous,
# but readers that flatten a tuple into one dict would collide).
RESERVED_NAMES = ("images", "labels", "z", "code_index", "permutation", "source_index")
CHUNK_ROWS = 1024  # rows per HDF5 chunk of every dataset (800 KB of uint8 images)
# gzip rather than lzf: every HDF5 tool (h5dump, HDFView, netCDF, MATLAB) reads it without a
# plugin, and at level 4 it costs a few percent of one core at generation speed
# (docs/performance.md measures both).
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4


@dataclass(frozen=True)
class Field:
    """One per-split dataset: its path inside the split group, element type and row shape."""

    path: str  # e.g. "images/mnist", "labels", "z", "permutation/fashion-mnist"
    dtype: np.dtype
    row_shape: tuple[int, ...] = ()


def standard_fields(
    modalities: list[str], image_dtype: str, latent_dim: int, extra: tuple[Field, ...] = ()
) -> tuple[Field, ...]:
    """The datasets every split holds: images per modality, labels, and z/code_index if any."""
    if image_dtype not in IMAGE_DTYPES:
        raise UsageError(f"unknown image dtype {image_dtype!r}; choose one of {list(IMAGE_DTYPES)}")
    fields = [Field(f"images/{m}", IMAGE_DTYPES[image_dtype], IMAGE_SHAPE) for m in modalities]
    fields.append(Field("labels", np.dtype(np.int64)))
    if latent_dim > 0:
        fields.append(Field("z", np.dtype(np.float32), (latent_dim,)))
        fields.append(Field("code_index", np.dtype(np.int64)))
    return (*fields, *extra)


def modality_names(source_names: list[str]) -> list[str]:
    """Modality names from source names: HDF5-safe, unique (``mnist``, ``mnist-2``, ...).

    ``idx:PATH`` sources are named after their folder. Characters other than letters, digits,
    ``-``, ``_`` and ``.`` become ``-``.

    Raises:
        ValueError: a name is empty or reserved by the layout (see ``RESERVED_NAMES``).
    """
    names: list[str] = []
    for source in source_names:
        base = source.removeprefix("idx:").rstrip("/").rsplit("/", 1)[-1]
        base = "".join(c if c.isalnum() or c in "-_." else "-" for c in base).strip(".")
        if not base or base in RESERVED_NAMES:
            raise UsageError(
                f"source {source!r} gives the modality name {base!r}, which is empty or reserved "
                f"({', '.join(RESERVED_NAMES)}); name the modalities explicitly (--modality NAME)"
            )
        name, copy = base, 1
        while name in names:
            copy += 1
            name = f"{base}-{copy}"
        names.append(name)
    return names


def check_modality_names(names: list[str]) -> None:
    """Raise ``ValueError`` unless ``names`` are unique, non-empty, HDF5-safe and not reserved."""
    for name in names:
        if not name or "/" in name or name in (".", "..") or name in RESERVED_NAMES:
            raise UsageError(
                f"invalid modality name {name!r}: it must be non-empty, contain no '/' and not "
                f"be one of {', '.join(RESERVED_NAMES)}"
            )
    if len(set(names)) != len(names):
        raise UsageError(f"modality names must be unique, got {names}")


def check_output(path: Path | str, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``overwrite`` (a one-line error otherwise)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"--out {path} is a folder; give a file name such as {path / 'data.h5'}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass --overwrite to replace it or choose another --out"
        )


class SplitWriter:
    """Appends rows to the datasets of one split, in order, writing whole HDF5 chunks only.

    Rows are buffered until a chunk is full, so the file's bytes do not depend on how callers
    batch their appends, and every chunk is compressed exactly once.
    """

    def __init__(self, group: h5py.Group, fields: tuple[Field, ...], size: int) -> None:
        self.size = size
        self.written = 0
        self.fields = {field.path: field for field in fields}
        self.datasets: dict[str, h5py.Dataset] = {}
        self.pending: dict[str, list[np.ndarray]] = {path: [] for path in self.fields}
        self.pending_rows = 0
        rows = min(CHUNK_ROWS, size)
        for field in fields:
            self.datasets[field.path] = group.create_dataset(
                field.path,
                shape=(size, *field.row_shape),
                dtype=field.dtype,
                chunks=(rows, *field.row_shape),
                compression=COMPRESSION,
                compression_opts=COMPRESSION_LEVEL,
                # Byte-shuffling groups the exponent bytes of floats: better compression.
                shuffle=field.dtype.itemsize > 1,
                track_times=False,  # no timestamps: the same command gives the same bytes
            )

    def append(self, rows: dict[str, np.ndarray]) -> None:
        """Add the next rows; ``rows`` maps every field path to an array of the same length."""
        if set(rows) != set(self.fields):
            raise UsageError(f"rows for {sorted(rows)}, expected {sorted(self.fields)}")
        count = {len(array) for array in rows.values()}
        if len(count) != 1:
            raise UsageError(f"fields of one append differ in length: {sorted(count)}")
        (count,) = count
        if self.written + self.pending_rows + count > self.size:
            raise UsageError(
                f"appending {count} rows would exceed the split size {self.size} "
                f"({self.written + self.pending_rows} already given)"
            )
        for path, array in rows.items():
            field = self.fields[path]
            if array.shape[1:] != field.row_shape:
                raise UsageError(f"{path}: rows of shape {array.shape[1:]}, expected {field}")
            self.pending[path].append(np.asarray(array, dtype=field.dtype))
        self.pending_rows += count
        chunk = min(CHUNK_ROWS, self.size)
        if self.pending_rows >= chunk:
            self._flush((self.pending_rows // chunk) * chunk)

    def close(self) -> None:
        """Write the last partial chunk and check that every row was given."""
        self._flush(self.pending_rows)
        if self.written != self.size:
            raise UsageError(f"split holds {self.written} of its {self.size} rows")

    def _flush(self, count: int) -> None:
        if count == 0:
            return
        for path, parts in self.pending.items():
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self.datasets[path][self.written : self.written + count] = data[:count]
            self.pending[path] = [data[count:]] if count < len(data) else []
        self.written += count
        self.pending_rows -= count


class DatasetWriter:
    """An mmgen file being written: root attributes plus one :class:`SplitWriter` per split."""

    def __init__(
        self,
        handle: h5py.File,
        attrs: dict[str, Any],
        sizes: dict[str, int],
        fields: tuple[Field, ...] | dict[str, tuple[Field, ...]],
    ) -> None:
        missing = sorted(set(REQUIRED_ATTRS) - set(attrs))
        if missing:
            raise UsageError(f"root attributes {missing} are missing")
        header = {"format": FORMAT, "schema_version": SCHEMA_VERSION}
        for key, value in encode_attrs({**header, **attrs}).items():
            handle.attrs[key] = value
        self.splits: dict[str, SplitWriter] = {}
        for split, size in sizes.items():
            if split not in SPLITS:
                raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
            group = handle.create_group(split)
            group.attrs["size"] = size
            split_fields = fields[split] if isinstance(fields, dict) else fields
            self.splits[split] = SplitWriter(group, split_fields, size)

    def append(self, split: str, rows: dict[str, np.ndarray]) -> None:
        """Append rows to ``split`` (see :meth:`SplitWriter.append`)."""
        self.splits[split].append(rows)

    def close(self) -> None:
        for writer in self.splits.values():
            writer.close()


REQUIRED_ATTRS = (
    "mmgen_version",
    "kind",
    "modalities",
    "sources",
    "num_classes",
    "class_names",
    "latent_dim",
    "has_latent",
    "seed",
    "config",
)


@contextmanager
def create_dataset(
    path: Path | str,
    attrs: dict[str, Any],
    sizes: dict[str, int],
    fields: tuple[Field, ...] | dict[str, tuple[Field, ...]],
    overwrite: bool = False,
) -> Iterator[DatasetWriter]:
    """Write an mmgen file that appears at ``path`` only once complete.

    The file is written to a temporary sibling and renamed when the block ends without error;
    on any error the temporary is removed and an existing ``path`` is left untouched.

    Args:
        path: the output file.
        attrs: root attributes (``REQUIRED_ATTRS``; JSON ones as plain values).
        sizes: rows per split, e.g. ``{"train": 60000, "test": 10000}``.
        fields: the datasets of every split (:func:`standard_fields`), or a dict per split.
        overwrite: replace an existing ``path``; otherwise that is a ``FileExistsError``.

    Example:
        >>> with create_dataset("out.h5", attrs, {"train": 10}, fields) as writer:
        ...     writer.append("train", {"images/mnist": images, "labels": labels})
    """
    check_output(path, overwrite)
    if any(size <= 0 for size in sizes.values()):
        raise UsageError(f"every split needs at least one tuple, got sizes {sizes}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        writer = DatasetWriter(handle, attrs, sizes, fields)
        yield writer
        writer.close()
