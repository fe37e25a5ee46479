"""A split read lazily from its HDF5 chunks: a torch ``Dataset`` whose memory is flat in N.

:class:`mmgen.data.h5io.MultimodalDataset` loads a whole split as float32 (369 MB for 60,000
tuples of two 28×28 modalities; a million tuples need about 6 GB). :class:`StreamingDataset`
keeps only a fixed number of decompressed chunks (``CHUNK_ROWS`` = 1,024 rows each; 16 by
default, about 26 MB for two 28×28 modalities) per process and gives the same items. The file
is opened lazily, once per process: a handle inherited through ``fork`` or a copy pickled for
``spawn`` is never used, so it is safe with DataLoader workers under either start method.

Random access to a compressed file costs a chunk decompression per row. Shuffle with
:class:`ChunkShuffleSampler` instead of ``shuffle=True``: it visits windows of ``window``
chunks in a random order and the rows of each window in a random order, so each chunk is
decompressed once per epoch (per worker that reads it: the default cache holds two windows,
so a batch that straddles two windows evicts nothing the next batch needs) while every batch
mixes ``window`` chunks. An epoch then costs about one decompression of the file, what loading
it into memory costs. docs/integrations.md says when to use which; docs/performance.md
measures both.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler, SequentialSampler

from mmgen import rng
from mmgen.data.h5io import SPLITS, open_dataset
from mmgen.data.header import header_from_attrs
from mmgen.errors import UsageError

__all__ = ["ChunkShuffleSampler", "StreamingDataset", "streaming_loader"]

DEFAULT_WINDOW = 8  # chunks mixed by ChunkShuffleSampler and cached per process


class StreamingDataset(Dataset):
    """A split of an mmgen file as a torch ``Dataset`` read chunk by chunk on demand.

    Items are those of ``MultimodalDataset``: ``{"images": {m: (C, H, W) float32 in [0, 1]},
    "label": int64, "z": (d,) float32}`` (``"z"`` only where the file stores codes).

    Decompressed chunks live in one preallocated buffer per dataset of ``cache_chunks`` chunk
    slots (reused, least recently used first), so the rows held never exceed
    ``cache_chunks × chunk_rows`` whatever N. A batch is gathered from the slots with one
    fancy index per dataset and converted to float32 once.

    Args:
        path: an mmgen file (checked once, here).
        split: ``"train"`` or ``"test"``.
        limit: use only the first ``limit`` tuples.
        cache_chunks: decompressed chunks kept per process. Twice the sampler's window (the
            default) holds every chunk that a batch no larger than a window touches, also when
            it straddles two windows, so that each chunk is decompressed once per epoch; a batch
            that touches more chunks is still served, in groups, at the cost of re-reads.
    """

    def __init__(
        self,
        path: Path | str,
        split: str = "train",
        limit: int | None = None,
        cache_chunks: int = 2 * DEFAULT_WINDOW,
    ) -> None:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        self.path = Path(path)
        self.split = split
        with open_dataset(self.path) as handle:
            header = header_from_attrs(handle.attrs, self.path)
            labels = handle[split]["labels"]
            self.chunk_rows = int(labels.chunks[0]) if labels.chunks else max(len(labels), 1)
            size = len(labels)
        self.size = size if limit is None else min(limit, size)
        self.modalities = list(header.modalities)
        self.image_shapes = header.image_shapes
        self.has_latent = header.has_latent
        self.cache_chunks = max(1, cache_chunks)
        self._reset()

    def _reset(self) -> None:
        """Forget this process's handle and cached rows (buffers are allocated on first read)."""
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._slots: OrderedDict[int, int] = OrderedDict()  # chunk → slot, least recent first
        self._slot_of = np.full(self.num_chunks, -1, dtype=np.int64)  # chunk → slot or -1

    def __len__(self) -> int:
        return self.size

    @property
    def num_chunks(self) -> int:
        return -(-self.size // self.chunk_rows)

    @property
    def rows_held(self) -> int:
        """Rows of decompressed data this process holds (at most ``cache_chunks × chunk_rows``)."""
        return len(next(iter(self._buffers.values()))) * self.chunk_rows if self._buffers else 0

    @property
    def _cache(self) -> OrderedDict[int, int]:
        """The chunks held by this process (chunk → buffer slot), least recently used first."""
        return self._slots if self._pid == os.getpid() else OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        # A copy for a spawned worker carries no handle, no buffers and no cached rows.
        state = self.__dict__.copy()
        state.update(_handle=None, _pid=None, _datasets={}, _buffers={}, _slots=OrderedDict())
        state["_slot_of"] = np.full(self.num_chunks, -1, dtype=np.int64)
        return state

    def _open(self) -> None:
        """This process's own handle and buffers, made on first use (a forked parent's never)."""
        if self._handle is not None and self._pid == os.getpid():
            return
        self._reset()  # a handle inherited through fork is dropped, not closed: the parent's
        self._handle = h5py.File(self.path, "r")
        self._pid = os.getpid()
        group = self._handle[self.split]
        keys = {m: f"images/{m}" for m in self.modalities} | {"labels": "labels"}
        if self.has_latent:
            keys["z"] = "z"
        slots = min(self.cache_chunks, max(self.num_chunks, 1))
        for key, name in keys.items():
            dataset = group[name]
            self._datasets[key] = dataset
            row = self.image_shapes[key] if key in self.image_shapes else dataset.shape[1:]
            self._buffers[key] = np.empty((slots, self.chunk_rows, *row), dataset.dtype)

    def _load(self, chunks: np.ndarray) -> None:
        """Make every chunk in ``chunks`` (distinct, at most the slot count) resident."""
        for chunk in chunks.tolist():  # the resident ones become the most recently used
            if chunk in self._slots:
                self._slots.move_to_end(chunk)
        capacity = len(self._buffers["labels"])
        for chunk in chunks.tolist():
            if chunk in self._slots:
                continue
            if len(self._slots) < capacity:
                slot = len(self._slots)
            else:  # evict the least recently used chunk, which this call does not need
                evicted, slot = self._slots.popitem(last=False)
                self._slot_of[evicted] = -1
            rows = slice(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.size))
            count = rows.stop - rows.start
            for key, dataset in self._datasets.items():
                read_into(dataset, rows.start, self._buffers[key][slot, :count], self.path)
            self._slots[chunk] = slot
            self._slot_of[chunk] = slot

    def _gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """Rows ``indices`` (in range, in order) of every dataset, as stored."""
        self._open()
        chunks, rows = np.divmod(indices, self.chunk_rows)
        needed = np.unique(chunks)
        capacity = len(self._buffers["labels"])
        if len(needed) <= capacity:
            self._load(needed)
            slots = self._slot_of[chunks]
            return {key: buffer[slots, rows] for key, buffer in self._buffers.items()}
        # More chunks than slots (a batch larger than the cache was made for): in groups.
        out = {
            key: np.empty((len(indices), *buffer.shape[2:]), buffer.dtype)
            for key, buffer in self._buffers.items()
        }
        for first in range(0, len(needed), capacity):
            group = needed[first : first + capacity]
            self._load(group)
            where = np.flatnonzero(np.isin(chunks, group))
            slots = self._slot_of[chunks[where]]
            for key, buffer in self._buffers.items():
                out[key][where] = buffer[slots, rows[where]]
        return out

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        """One item, or with a sequence of indices a whole batch (tensors stacked, in order)."""
        if not isinstance(index, int | np.integer):
            return self._batch(np.asarray(index, dtype=np.int64))
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} tuples")
        values = self._gather(np.array([index % self.size], dtype=np.int64))
        item: dict[str, Any] = {
            "images": {m: torch.from_numpy(unit_float(values[m][0])) for m in self.modalities},
            "label": torch.tensor(int(values["labels"][0]), dtype=torch.int64),
        }
        if self.has_latent:
            item["z"] = torch.from_numpy(values["z"][0])
        return item

    def _batch(self, indices: np.ndarray) -> dict[str, Any]:
        """Rows ``indices`` gathered from resident chunks (one decompression per chunk at most)."""
        if len(indices) and not (-self.size <= indices.min() and indices.max() < self.size):
            raise IndexError(f"an index is out of range for {self.size} tuples")
        values = self._gather(indices % max(self.size, 1))
        batch: dict[str, Any] = {
            "images": {m: torch.from_numpy(unit_float(values[m])) for m in self.modalities},
            "label": torch.from_numpy(values["labels"].astype(np.int64, copy=False)),
        }
        if self.has_latent:
            batch["z"] = torch.from_numpy(values["z"])
        return batch

    def close(self) -> None:
        """Close this process's handle and free its buffers (reopened on the next item)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._reset()


def read_into(dataset: h5py.Dataset, start: int, out: np.ndarray, path: Path) -> None:
    """Rows ``start:start + len(out)`` of ``dataset`` decompressed straight into ``out``.

    ``out`` is a C-contiguous slot of a reused buffer (images in their ``(C, H, W)`` shape,
    the same bytes as the stored rows): no array is allocated per chunk, so the heap does not
    grow with the number of chunks read.
    """
    rows = (len(out), *dataset.shape[1:])
    space = dataset.id.get_space()
    space.select_hyperslab((start,) + (0,) * (dataset.ndim - 1), rows)
    try:
        dataset.id.read(h5py.h5s.create_simple(rows), space, out.reshape(rows))
    except OSError as error:
        raise UsageError(
            f"{path}: cannot read {dataset.name} ({str(error).splitlines()[0]}); the file is "
            "damaged: regenerate it"
        ) from None


def unit_float(images: np.ndarray) -> np.ndarray:
    """:func:`~mmgen.data.h5io.to_unit_float` in one pass (uint8 ÷ 255 computed in float32).

    The same values bit for bit: both divide the float32 grey level by 255 in float32.
    """
    if images.dtype == np.uint8:
        return np.divide(images, np.float32(255.0), dtype=np.float32)
    return images.astype(np.float32, copy=False)  # gathered rows are already a copy


class ChunkShuffleSampler(Sampler[int]):
    """A seeded shuffle that keeps reads chunk-local (for :class:`StreamingDataset`).

    Epoch e draws from ``rng.numpy_stream(seed, "chunk-shuffle", e)``: a permutation of the
    chunks, cut into windows of ``window`` chunks, and a permutation of each window's rows.
    Every index appears exactly once per epoch. Call :meth:`set_epoch` before each epoch.
    """

    def __init__(self, dataset: StreamingDataset, seed: int, window: int = DEFAULT_WINDOW) -> None:
        self.size = len(dataset)
        self.chunk_rows = dataset.chunk_rows
        self.seed = seed
        self.window = max(1, window)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = rng.numpy_stream(self.seed, "chunk-shuffle", self.epoch)
        chunks = generator.permutation(-(-self.size // self.chunk_rows))
        for start in range(0, len(chunks), self.window):
            rows = np.concatenate(
                [
                    np.arange(c * self.chunk_rows, min((c + 1) * self.chunk_rows, self.size))
                    for c in chunks[start : start + self.window]
                ]
            )
            yield from generator.permutation(rows).tolist()


def streaming_loader(
    dataset: StreamingDataset,
    batch_size: int,
    seed: int | None = None,
    window: int = DEFAULT_WINDOW,
    **loader_options: Any,
) -> DataLoader:
    """A ``DataLoader`` that fetches whole batches from ``dataset`` (no per-item Python work).

    ``seed``: shuffle with :class:`ChunkShuffleSampler` (``loader.sampler.sampler.set_epoch``
    between epochs); ``None``: the file's order. Other options (``num_workers``,
    ``multiprocessing_context``, ``pin_memory``, ...) go to the ``DataLoader``.
    """
    order: Sampler[int] = (
        SequentialSampler(range(len(dataset)))
        if seed is None
        else ChunkShuffleSampler(dataset, seed, window)
    )
    batches = BatchSampler(order, batch_size, drop_last=False)
    return DataLoader(dataset, batch_size=None, sampler=batches, **loader_options)
