"""The mmgen HDF5 schema in one place: layout, validation, readers, writer and a torch Dataset.

One file holds one multi-modal dataset (MNIST-E, its mixed twin MNIST-ME, or a naive pairing of
real images). Layout (``docs/format.md`` documents every field):

    /                       root attributes: the typed header (mmgen.data.header.DatasetHeader)
    /<split>/               split ∈ {"train", "test"}; attrs: size
    /<split>/images/<m>     (N, H, W) for grey modalities (C = 1), (N, C, H, W) otherwise;
                            uint8 levels ×255 (or float32 in [0, 1]); (C, H, W) of every
                            modality is in the header (1×28×28 when not recorded)
    /<split>/labels         (N,) int64 class of every tuple
    /<split>/z              (N, d) float32 true latent code (absent when has_latent is false)
    /<split>/code_index     (N,) int64 index of the shared code (absent when has_latent is false)
    /<split>/permutation/<m> (N,) int64, mixed files only: tuple i's modality m came from
                             tuple permutation[i] of the entangled source file
    /<split>/source_index/<m> (N,) int64, naive files only: row of the source split used
    /<split>/nuisance/<m>   (N, 3) int64, PolyMNIST-style files only (header ``nuisance``):
                            background image index, crop top, crop left (mmgen.polymnist)

Writing goes through :func:`create_dataset` (atomic, never replaces unasked, whole compressed
chunks only, no timestamps: the same rows give the same bytes). Reading goes through
:func:`open_dataset`, which checks the header and the layout first.

Over 450 lines on purpose: the schema is one contract (which datasets exist, their shapes,
dtypes and chunking, and the promises of the header checked against them on open); the writer
and the readers must change together with it, and the format test pins all of it at once.
"""

from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from mmgen.atomic import atomic_path
from mmgen.data.header import (
    FORMAT,
    KINDS,
    SCHEMA_VERSION,
    DatasetHeader,
    decode_attrs,
    encode_attrs,
    header_from_attrs,
)
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, ImageShape, describe, from_stored, stored_shape
from mmgen.errors import UsageError

__all__ = [
    "FORMAT",
    "KINDS",
    "SCHEMA_VERSION",
    "SPLITS",
    "DatasetHeader",
    "MultimodalDataset",
    "SplitData",
    "create_dataset",
    "decode_attrs",
    "encode_attrs",
    "header_from_attrs",
    "open_dataset",
    "read_attrs",
    "read_header",
    "read_split",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class SplitData:
    """One split in memory: images per modality, labels and (where stored) true latent codes."""

    images: dict[str, np.ndarray]  # modality → (N, C, H, W), uint8 (×255) or float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    z: np.ndarray | None  # (N, d) float32, None for a naive pairing

    def __len__(self) -> int:
        return len(self.labels)

    def images_float(self, modality: str) -> np.ndarray:
        """Images of ``modality`` as float32 levels in [0, 1], shape ``(N, C, H, W)``."""
        return to_unit_float(self.images[modality])


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 grey levels ×255 → float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32, copy=False)


def open_dataset(path: Path | str) -> h5py.File:
    """Open an mmgen file for reading, after checking its header and layout.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UsageError: the file is not HDF5, not written by mmgen, of an unknown schema, lacks a
            root attribute, a split or a dataset (one line naming the file and what is wrong).
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
    try:
        header = header_from_attrs(handle.attrs, path)
        check_layout(handle, header, path)
        check_promises(handle, header, path)
    except BaseException:
        handle.close()
        raise
    return handle


def read_header(path: Path | str) -> DatasetHeader:
    """The validated header of an mmgen file (see :class:`mmgen.data.header.DatasetHeader`)."""
    with open_dataset(path) as handle:
        return header_from_attrs(handle.attrs, path)


def read_attrs(path: Path | str) -> dict[str, Any]:
    """Root attributes of a checked mmgen file as plain values (JSON ones decoded)."""
    with open_dataset(path) as handle:
        return decode_attrs(handle.attrs)


def expected_paths(header: DatasetHeader) -> list[str]:
    """The datasets every split of a file with ``header`` holds."""
    paths = [f"images/{m}" for m in header.modalities] + ["labels"]
    if header.has_latent:
        paths += ["z", "code_index"]
    if header.has_nuisance:
        paths += [f"nuisance/{m}" for m in header.modalities]
    return paths


def check_layout(handle: h5py.File, header: DatasetHeader, path: Path | str) -> None:
    """Raise ``UsageError`` unless both splits hold every dataset, all of one length."""
    for split in SPLITS:
        group = handle.get(split)
        if not isinstance(group, h5py.Group):
            raise UsageError(
                f"{path} has no {split!r} split (it has {sorted(handle)}); the file is damaged "
                "or incomplete: regenerate it"
            )
        missing = [p for p in expected_paths(header) if not isinstance(group.get(p), h5py.Dataset)]
        if missing:
            raise UsageError(
                f"{path}: the {split} split lacks {', '.join(missing)}; the file is damaged or "
                "incomplete: regenerate it"
            )
        lengths = {p: group[p].shape[0] if group[p].shape else 0 for p in expected_paths(header)}
        if len(set(lengths.values())) != 1 or not lengths["labels"]:
            raise UsageError(f"{path}: the {split} split's datasets differ in length {lengths}")
        for modality, shape in header.image_shapes.items():
            rows = group[f"images/{modality}"].shape[1:]
            if rows != stored_shape(shape):
                raise UsageError(
                    f"{path}: the {split} images of {modality!r} have rows of shape {rows}, but "
                    f"the header records {describe(shape)} images (stored as "
                    f"{stored_shape(shape)}); the file is damaged: regenerate it"
                )


def check_promises(handle: h5py.File, header: DatasetHeader, path: Path | str) -> None:
    """Raise ``UsageError`` where the data contradict what the header promises about them.

    Cheap: the labels are read whole (8 bytes a row), images only by their dtype and their first
    chunk's values. Checked per split: the labels' dtype and range ``0 … C−1``, the width of
    ``z`` (``latent_dim``), the split's ``size`` attribute,
    the images' dtype (uint8, or float32 in [0, 1]; the one the command recorded).
    """
    recorded_dtype = header.config.get("dtype") if header.kind == "entangled" else None

    def lie(split: str, name: str, what: str) -> UsageError:
        return UsageError(f"{path}: {split}/{name} {what}; the file is damaged or was edited")

    for split in SPLITS:
        group = handle[split]
        labels = group["labels"]
        if labels.dtype.kind not in "iu":
            raise lie(split, "labels", f"holds {labels.dtype} values, not integers")
        values = read_rows(labels, slice(None), path)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= header.num_classes:
            raise lie(
                split,
                "labels",
                f"run from {low} to {high}, outside the header's "
                f"{header.num_classes} classes 0 … {header.num_classes - 1}",
            )
        for name in _index_datasets(group):  # row numbers: a float there would be cast
            if group[name].dtype.kind not in "iu":
                raise lie(split, name, f"holds {group[name].dtype} values, not integers")
        recorded_rows = group.attrs.get("size")
        if recorded_rows is not None and int(recorded_rows) != len(labels):
            raise lie(
                split, "labels", f"has {len(labels)} rows; its size attribute says {recorded_rows}"
            )
        if header.has_latent and group["z"].shape[1:] != (header.latent_dim,):
            raise lie(
                split,
                "z",
                f"has rows of shape {group['z'].shape[1:]}; the header records "
                f"latent_dim {header.latent_dim}",
            )
        for modality in header.modalities:
            images = group[f"images/{modality}"]
            if images.dtype.name not in IMAGE_DTYPES or (
                recorded_dtype is not None and images.dtype.name != recorded_dtype
            ):
                raise lie(
                    split,
                    f"images/{modality}",
                    f"holds {images.dtype} values; the header "
                    f"records {recorded_dtype or 'uint8 or float32'}",
                )
            if images.dtype.kind == "f":
                rows = images.chunks[0] if images.chunks else min(len(images), CHUNK_ROWS)
                sample = read_rows(images, slice(0, rows), path)
                if not (np.isfinite(sample).all() and sample.min() >= 0 and sample.max() <= 1):
                    raise lie(
                        split,
                        f"images/{modality}",
                        f"holds values from {sample.min()} to "
                        f"{sample.max()}; float images hold intensities in [0, 1]",
                    )


def _index_datasets(group: h5py.Group) -> list[str]:
    """The datasets of a split that hold row numbers: ``code_index``, ``source_index/*``,
    ``permutation/*``."""
    names = ["code_index"] if "code_index" in group else []
    for folder in ("source_index", "permutation"):
        if isinstance(group.get(folder), h5py.Group):
            names.extend(f"{folder}/{name}" for name in sorted(group[folder]))
    return names


def read_rows(dataset: h5py.Dataset, selection: Any, path: Path | str) -> np.ndarray:
    """``dataset[selection]``, with a one-line error naming the file when it cannot be read."""
    try:
        return dataset[selection]
    except OSError as error:
        raise UsageError(
            f"{path}: cannot read {dataset.name} ({str(error).splitlines()[0]}); the file is "
            "damaged: regenerate it"
        ) from None


def verify_readable(handle: h5py.File, path: Path | str) -> None:
    """Read every dataset of both splits once, chunk by chunk: damage is an error here."""
    for split in SPLITS:
        group = handle[split]
        for name in _dataset_paths(group):
            dataset = group[name]
            step = dataset.chunks[0] if dataset.chunks else len(dataset)
            for start in range(0, len(dataset), max(step, 1)):
                read_rows(dataset, slice(start, start + step), path)


def _dataset_paths(group: h5py.Group) -> list[str]:
    names: list[str] = []
    group.visit(lambda name: names.append(name) if isinstance(group[name], h5py.Dataset) else None)
    return names


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
        header = header_from_attrs(handle.attrs, path)
        group = handle[split]
        stop = len(group["labels"]) if limit is None else min(limit, len(group["labels"]))
        rows = slice(0, stop)
        images = {
            m: from_stored(read_rows(group["images"][m], rows, path), shape)  # (N, C, H, W)
            for m, shape in header.image_shapes.items()
        }
        labels = read_rows(group["labels"], rows, path).astype(np.int64)
        z = read_rows(group["z"], rows, path) if header.has_latent else None
    return SplitData(images=images, labels=labels, z=z)


class MultimodalDataset(Dataset):
    """A split as a torch ``Dataset``: each item is ``{"images": {m: (C, H, W)}, "label", "z"}``.

    The split is loaded into memory once (MNIST-sized splits take about 100 MB as float32).
    ``"z"`` is present only when the file stores true latent codes.
    """

    def __init__(self, path: Path | str, split: str = "train", limit: int | None = None) -> None:
        data = read_split(path, split, limit)
        self.modalities = list(data.images)
        self.images = {m: torch.from_numpy(data.images_float(m)) for m in self.modalities}
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

IMAGE_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype(np.uint8), "float32": np.dtype(np.float32)}
CHUNK_ROWS = 1024  # rows per HDF5 chunk of every dataset (800 KB of uint8 images)
# gzip rather than lzf: every HDF5 tool (h5dump, HDFView, netCDF, MATLAB) reads it without a
# plugin, and at level 4 it costs a few percent of one core at generation speed
# (docs/performance.md measures both).
COMPRESSION = "gzip"
COMPRESSION_LEVEL = 4
# Chunks are deflated here, several at once (zlib releases the GIL), and handed to HDF5 whole
# (write_direct_chunk): HDF5 would deflate them one by one, holding the GIL, and keep up to its
# chunk cache's worth (8 MiB per dataset in HDF5 2.0) to deflate at close, on the caller's thread.
DEFLATE_THREADS = min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Field:
    """One per-split dataset: its path inside the split group, element type and row shape."""

    path: str  # e.g. "images/mnist", "labels", "z", "permutation/fashion-mnist"
    dtype: np.dtype
    row_shape: tuple[int, ...] = ()
    level: int = COMPRESSION_LEVEL  # gzip level of its chunks (recorded in the file's filter)


def standard_fields(
    image_shapes: Mapping[str, ImageShape] | Sequence[str],
    image_dtype: str,
    latent_dim: int,
    extra: tuple[Field, ...] = (),
) -> tuple[Field, ...]:
    """The datasets every split holds: images per modality, labels, and z/code_index if any.

    Args:
        image_shapes: modality → ``(C, H, W)`` in the file's order (the header's
            ``image_shapes``); a plain sequence of modality names means 1×28×28 for each.
        image_dtype: ``"uint8"`` or ``"float32"``.
        latent_dim: d of the stored codes; 0 for none.
        extra: further per-split datasets (permutations, source rows).
    """
    if image_dtype not in IMAGE_DTYPES:
        raise UsageError(f"unknown image dtype {image_dtype!r}; choose one of {list(IMAGE_DTYPES)}")
    if not isinstance(image_shapes, Mapping):
        image_shapes = dict.fromkeys(image_shapes, DEFAULT_IMAGE_SHAPE)
    fields = [
        Field(f"images/{m}", IMAGE_DTYPES[image_dtype], stored_shape(shape))
        for m, shape in image_shapes.items()
    ]
    fields.append(Field("labels", np.dtype(np.int64)))
    if latent_dim > 0:
        fields.append(Field("z", np.dtype(np.float32), (latent_dim,)))
        fields.append(Field("code_index", np.dtype(np.int64)))
    return (*fields, *extra)


def check_output(path: Path | str, overwrite: bool) -> None:
    """Check before any work that ``path`` can be written: a one-line error otherwise.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        PermissionError: its folder (or the nearest existing parent) is read-only.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"--out {path} is a folder; give a file name such as {path / 'data.h5'}"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass --overwrite to replace it or choose another --out"
        )
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not os.access(folder, os.W_OK):
        raise PermissionError(
            f"cannot write --out {path}: {folder} is read-only or not writable by this user"
        )


def _checked_cast(array: np.ndarray, field: Field, where: str = "") -> np.ndarray:
    """``array`` as ``field.dtype``, refusing casts that would change values silently.

    Floats never become integers (float images stored as uint8 would be truncated to 0 and 1:
    convert them with round(255·x) first); integers must fit the target's range.
    """
    array = np.asarray(array)
    source, target = array.dtype, field.dtype
    if source == target:
        return array
    if target.kind in "iu" and source.kind in "iub":
        if source.kind == "b" or np.can_cast(source, target) or array.size == 0:
            return array.astype(target)
        bounds = np.iinfo(target)
        if bounds.min <= array.min() and array.max() <= bounds.max:
            return array.astype(target)
    elif target.kind == "f" and source.kind in "fiub":
        return array.astype(target)
    raise UsageError(
        f"{where or field.path}: refusing to store {source} values as {target} "
        "(values would change); "
        "convert them first (uint8 images are round(255·x) of x in [0, 1])"
    )


def shuffled(dtype: np.dtype) -> bool:
    """Whether a field's chunks are byte-shuffled before deflating: elements of several bytes.

    Why: shuffling groups the exponent bytes of floats (the high bytes of small integers) into
    runs, which deflate compresses better.
    """
    return dtype.itemsize > 1


def encode_chunk(rows: np.ndarray, chunk_rows: int, level: int = COMPRESSION_LEVEL) -> bytes:
    """One chunk as HDF5's filters store it: ``rows`` padded with the fill value 0 to
    ``chunk_rows`` rows (an edge chunk is stored whole), byte-shuffled if :func:`shuffled`
    (HDF5's shuffle filter: byte j of element i goes to position j·n + i of the n elements),
    then deflated at ``level`` in zlib format (HDF5's gzip filter)."""
    if len(rows) < chunk_rows:
        padded = np.zeros((chunk_rows, *rows.shape[1:]), dtype=rows.dtype)
        padded[: len(rows)] = rows
        rows = padded
    data = np.ascontiguousarray(rows).reshape(-1)
    if shuffled(data.dtype):
        data = np.ascontiguousarray(data.view(np.uint8).reshape(-1, data.dtype.itemsize).T)
    return zlib.compress(data.view(np.uint8), level)


class SplitWriter:
    """Appends rows to the datasets of one split, in order, writing whole HDF5 chunks only.

    Rows are buffered until a chunk is full, so the file's bytes do not depend on how callers
    batch their appends, and every chunk is compressed exactly once, by :func:`encode_chunk`
    on ``pool``'s threads, and written with ``write_direct_chunk`` in a fixed order (chunk by
    chunk, each field's in turn).
    """

    def __init__(
        self,
        group: h5py.Group,
        fields: tuple[Field, ...],
        size: int,
        sink: GuardedFile,
        pool: Executor,
    ) -> None:
        self.size = size
        self.written = 0
        self.sink = sink
        self.pool = pool
        self.group_name = group.name.strip("/")
        self.fields = {field.path: field for field in fields}
        self.datasets: dict[str, h5py.Dataset] = {}
        self.pending: dict[str, list[np.ndarray]] = {path: [] for path in self.fields}
        self.pending_rows = 0
        self.chunk_rows = rows = min(CHUNK_ROWS, size)
        for field in fields:
            self.datasets[field.path] = group.create_dataset(
                field.path,
                shape=(size, *field.row_shape),
                dtype=field.dtype,
                chunks=(rows, *field.row_shape),
                compression=COMPRESSION,
                compression_opts=field.level,
                shuffle=shuffled(field.dtype),  # the filters encode_chunk applies
                track_times=False,  # no timestamps: the same command gives the same bytes
            )

    def append(self, rows: dict[str, np.ndarray], origin: str | None = None) -> None:
        """Add the next rows; ``rows`` maps every field path to an array of the same length.

        ``origin`` (the input the rows were read from) is named by a refused cast.
        """
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
            where = f"{self.sink.target}: {self.group_name}/{path}"
            if origin is not None:
                where += f" (rows read from {origin})"
            self.pending[path].append(_checked_cast(array, field, where))
        self.pending_rows += count
        if self.written + self.pending_rows == self.size:
            self._flush(self.pending_rows)  # the split is complete: its edge chunk too
        elif self.pending_rows >= self.chunk_rows:
            self._flush((self.pending_rows // self.chunk_rows) * self.chunk_rows)

    def close(self) -> None:
        """Write the last partial chunk and check that every row was given."""
        self._flush(self.pending_rows)
        if self.written != self.size:
            raise UsageError(f"split holds {self.written} of its {self.size} rows")

    def _flush(self, count: int) -> None:
        """Write the next ``count`` pending rows: whole chunks, or the split's last rows."""
        if count == 0:
            return
        data = {}
        for path, parts in self.pending.items():
            data[path] = parts[0] if len(parts) == 1 else np.concatenate(parts)
            self.pending[path] = [data[path][count:]] if count < len(data[path]) else []
        # Chunk by chunk, each field's in turn: the order one-chunk appends give, so the layout
        # of the file (where each chunk lands) does not depend on how many chunks a flush holds.
        jobs = [(path, s) for s in range(0, count, self.chunk_rows) for path in self.fields]
        encoded = self.pool.map(
            lambda job: encode_chunk(
                data[job[0]][job[1] : min(job[1] + self.chunk_rows, count)],
                self.chunk_rows,
                self.fields[job[0]].level,
            ),
            jobs,
        )
        for (path, start), chunk in zip(jobs, encoded, strict=True):
            offset = (self.written + start,) + (0,) * len(self.fields[path].row_shape)
            self.datasets[path].id.write_direct_chunk(offset, chunk)
        self.written += count
        self.pending_rows -= count
        self.sink.raise_error()  # stop at the first failed write, not after all the work


class DatasetWriter:
    """An mmgen file being written: the header plus one :class:`SplitWriter` per split."""

    def __init__(
        self,
        handle: h5py.File,
        header: DatasetHeader,
        sizes: dict[str, int],
        fields: tuple[Field, ...] | dict[str, tuple[Field, ...]],
        sink: GuardedFile,
        pool: Executor,
    ) -> None:
        if set(sizes) != set(SPLITS):
            raise UsageError(f"a dataset has the splits {list(SPLITS)}, got {sorted(sizes)}")
        header.write(handle)
        self.splits: dict[str, SplitWriter] = {}
        for split in SPLITS:
            group = handle.create_group(split)
            group.attrs["size"] = sizes[split]
            split_fields = fields[split] if isinstance(fields, dict) else fields
            paths = {f.path for f in split_fields}
            missing = [p for p in expected_paths(header) if p not in paths]
            if missing:
                raise UsageError(f"the fields of split {split} lack {missing} (see the header)")
            self.splits[split] = SplitWriter(group, split_fields, sizes[split], sink, pool)

    def append(self, split: str, rows: dict[str, np.ndarray], origin: str | None = None) -> None:
        """Append rows to ``split`` (see :meth:`SplitWriter.append`)."""
        self.splits[split].append(rows, origin)

    def close(self) -> None:
        for writer in self.splits.values():
            writer.close()


class GuardedFile:
    """The file object HDF5 writes through: a failed write is recorded, never shown to HDF5.

    Why: with h5py 3.16 / HDF5 2.0, once a write of a file fails (a full disk: ENOSPC), closing
    the file fails too and releasing the h5py objects afterwards crashes the process with a
    segmentation fault, so the user saw exit 139 instead of an error. Through this object
    HDF5 always sees success; the first ``OSError`` is kept, later writes are dropped (the file
    is discarded anyway), and :meth:`raise_error` raises it once HDF5 is out of the way. HDF5
    does not read back what it writes into a new file, so dropped writes are never read.
    """

    def __init__(self, path: Path, target: Path) -> None:
        self.raw = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed by close()
        self.target = target  # the final path, for the error message
        self.error: OSError | None = None

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def readinto(self, buffer: Any) -> int:
        return self.raw.readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self.raw.read(size)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += self.raw.write(view[done:])
                return len(view)
            except OSError as error:
                self.error = error
        self.raw.seek(len(view), os.SEEK_CUR)
        return len(view)

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.raw.truncate(size)
            except OSError as error:
                self.error = error
        return self.raw.tell() if size is None else size

    def flush(self) -> None:
        """Nothing is buffered here (an unbuffered raw file)."""

    def close(self) -> None:
        self.raw.close()

    def raise_error(self) -> None:
        """Raise the first failed write as a one-line ``OSError`` naming the output."""
        if self.error is not None:
            code = self.error.errno or errno.EIO
            raise OSError(
                code,
                f"could not write {self.target}: {os.strerror(code)}; nothing was written "
                "(free some space or choose another --out)",
            )


@contextmanager
def create_dataset(
    path: Path | str,
    header: DatasetHeader,
    sizes: dict[str, int],
    fields: tuple[Field, ...] | dict[str, tuple[Field, ...]],
    overwrite: bool = False,
) -> Iterator[DatasetWriter]:
    """Write an mmgen file that appears at ``path`` only once complete.

    The file is written to a temporary sibling and moved onto ``path`` when the block ends
    without error; on any error the temporary is removed and an existing ``path`` is left
    untouched. Without ``overwrite`` the final move fails if ``path`` appeared meanwhile (two
    runs writing one output: one fails instead of both reporting success).

    Args:
        path: the output file.
        header: the root attributes (validated when built).
        sizes: rows per split, e.g. ``{"train": 60000, "test": 10000}``.
        fields: the datasets of every split (:func:`standard_fields`), or a dict per split.
        overwrite: replace an existing ``path``; otherwise that is a ``FileExistsError``.

    Example:
        >>> with create_dataset("out.h5", header, {"train": 10, "test": 5}, fields) as writer:
        ...     writer.append("train", {"images/mnist": images, "labels": labels, ...})
    """
    check_output(path, overwrite)
    if any(size <= 0 for size in sizes.values()):
        raise UsageError(f"every split needs at least one tuple, got sizes {sizes}")
    with atomic_path(path, replace=overwrite) as tmp:
        sink = GuardedFile(tmp, Path(path))
        try:
            with (
                ThreadPoolExecutor(DEFLATE_THREADS, thread_name_prefix="mmgen-deflate") as pool,
                h5py.File(sink, "w") as handle,
            ):
                writer = DatasetWriter(handle, header, sizes, fields, sink, pool)
                yield writer
                writer.close()
        finally:
            sink.close()
        sink.raise_error()
