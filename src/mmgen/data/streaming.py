"""A split read lazily from its HDF5 chunks: a torch ``Dataset`` whose memory is flat in N.

:class:`mmgen.data.h5io.MultimodalDataset` loads a whole split as float32 (369 MB for 60,000
tuples of two 28×28 modalities; a million tuples need about 6 GB). :class:`StreamingDataset`
keeps only a few decompressed chunks (``CHUNK_ROWS`` = 1,024 rows each) per process and gives
the same items. The file is opened lazily, once per process: a handle inherited through
``fork`` or a copy pickled for ``spawn`` is never used, so it is safe with DataLoader workers
under either start method.

Random access to a compressed file costs a chunk decompression per row. Shuffle with
:class:`ChunkShuffleSampler` instead of ``shuffle=True``: it visits windows of ``window``
chunks in a random order and the rows of each window in a random order, so each chunk is
decompressed once per epoch (per worker that reads it) while every batch mixes ``window``
chunks. docs/integrations.md says when to use which; docs/performance.md measures both.
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
from mmgen.data.h5io import SPLITS, open_dataset, read_rows, to_unit_float
from mmgen.data.header import header_from_attrs
from mmgen.data.shapes import from_stored
from mmgen.errors import UsageError

__all__ = ["ChunkShuffleSampler", "StreamingDataset", "streaming_loader"]

DEFAULT_WINDOW = 8  # chunks mixed by ChunkShuffleSampler and cached per process


class StreamingDataset(Dataset):
    """A split of an mmgen file as a torch ``Dataset`` read chunk by chunk on demand.

    Items are those of ``MultimodalDataset``: ``{"images": {m: (C, H, W) float32 in [0, 1]},
    "label": int64, "z": (d,) float32}`` (``"z"`` only where the file stores codes).

    Args:
        path: an mmgen file (checked once, here).
        split: ``"train"`` or ``"test"``.
        limit: use only the first ``limit`` tuples.
        cache_chunks: decompressed chunks kept per process (at least the sampler's window).
    """

    def __init__(
        self,
        path: Path | str,
        split: str = "train",
        limit: int | None = None,
        cache_chunks: int = DEFAULT_WINDOW,
    ) -> None:
        if split not in SPLITS:
            raise UsageError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        self.path = Path(path)
        self.split = split
        with open_dataset(self.path) as handle:
            header = header_from_attrs(handle.attrs, self.path)
            labels = handle[split]["labels"]
            self.chunk_rows = int(labels.chunks[0]) if labels.chunks else len(labels)
            size = len(labels)
        self.size = size if limit is None else min(limit, size)
        self.modalities = list(header.modalities)
        self.image_shapes = header.image_shapes
        self.has_latent = header.has_latent
        self.cache_chunks = max(1, cache_chunks)
        self._handle: h5py.File | None = None
        self._pid: int | None = None
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return self.size

    @property
    def num_chunks(self) -> int:
        return -(-self.size // self.chunk_rows)

    def __getstate__(self) -> dict[str, Any]:
        # A copy for a spawned worker carries no handle and no cached rows.
        state = self.__dict__.copy()
        state.update(_handle=None, _pid=None, _cache=OrderedDict())
        return state

    def _group(self) -> h5py.Group:
        """This process's own handle, opened on first use (a forked parent's is never used)."""
        if self._handle is None or self._pid != os.getpid():
            self._cache = OrderedDict()
            self._handle = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._handle[self.split]

    def _chunk(self, chunk: int) -> dict[str, np.ndarray]:
        """Rows of ``chunk`` (images as stored, labels, z), from the cache or the file."""
        cached = self._cache.get(chunk) if self._pid == os.getpid() else None
        if cached is not None:
            self._cache.move_to_end(chunk)
            return cached
        group = self._group()
        rows = slice(chunk * self.chunk_rows, min((chunk + 1) * self.chunk_rows, self.size))
        values = {
            m: from_stored(read_rows(group["images"][m], rows, self.path), shape)
            for m, shape in self.image_shapes.items()
        }
        values["labels"] = read_rows(group["labels"], rows, self.path).astype(np.int64)
        if self.has_latent:
            values["z"] = read_rows(group["z"], rows, self.path)
        self._cache[chunk] = values
        while len(self._cache) > self.cache_chunks:
            self._cache.popitem(last=False)
        return values

    def __getitem__(self, index: int | Sequence[int]) -> dict[str, Any]:
        """One item, or with a sequence of indices a whole batch (tensors stacked, in order)."""
        if not isinstance(index, int | np.integer):
            return self._batch(np.asarray(index, dtype=np.int64))
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} tuples")
        index %= self.size
        chunk, row = divmod(index, self.chunk_rows)
        values = self._chunk(chunk)
        item: dict[str, Any] = {
            "images": {m: torch.from_numpy(to_unit_float(values[m][row])) for m in self.modalities},
            "label": torch.tensor(values["labels"][row]),
        }
        if self.has_latent:
            item["z"] = torch.from_numpy(values["z"][row].copy())
        return item

    def _batch(self, indices: np.ndarray) -> dict[str, Any]:
        """Rows ``indices`` gathered chunk by chunk (one decompression per chunk at most)."""
        if len(indices) and not (-self.size <= indices.min() and indices.max() < self.size):
            raise IndexError(f"an index is out of range for {self.size} tuples")
        indices = indices % max(self.size, 1)
        chunks, rows = np.divmod(indices, self.chunk_rows)
        keys = (
            ["labels", "z", *self.modalities] if self.has_latent else ["labels", *self.modalities]
        )
        out: dict[str, np.ndarray] = {}
        for chunk in np.unique(chunks):
            where = np.flatnonzero(chunks == chunk)
            values = self._chunk(int(chunk))
            for key in keys:
                part = values[key][rows[where]]
                if key not in out:
                    out[key] = np.empty((len(indices), *part.shape[1:]), part.dtype)
                out[key][where] = part
        batch: dict[str, Any] = {
            "images": {m: torch.from_numpy(to_unit_float(out[m])) for m in self.modalities},
            "label": torch.from_numpy(out["labels"]),
        }
        if self.has_latent:
            batch["z"] = torch.from_numpy(out["z"])
        return batch

    def close(self) -> None:
        """Close this process's handle (reopened on the next item)."""
        if self._handle is not None and self._pid == os.getpid():
            self._handle.close()
        self._handle, self._pid, self._cache = None, None, OrderedDict()


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
