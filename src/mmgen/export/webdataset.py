"""WebDataset: POSIX tar shards, one example per tuple, read by ``webdataset.WebDataset``.

    {split}-{shard:06d}.tar           at most SHARD_TUPLES tuples each, in the file's order

Example ``i`` of a split has the key ``{i:08d}`` and the members ``{key}.{modality}.png`` (one
PNG per modality), ``{key}.cls`` (the class as ASCII digits) and ``{key}.{field}.npy`` for
every other per-tuple field (``z``, ``code_index``, nuisance, ...; NumPy's format, so
``.decode()`` gives arrays back). Members carry no time stamp, owner or permissions of this
machine: the same file gives the same shards, byte for byte.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmgen.data.h5io import SPLITS
from mmgen.export.images import check_png_shapes, png_bytes
from mmgen.export.tuples import SplitReader, to_uint8

SHARD_TUPLES = 10_000


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:06d}.tar"


def npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(value), allow_pickle=False)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # no time stamp: the same bytes on every run
    tar.addfile(info, io.BytesIO(data))


def write(reader: SplitReader, out: Path, on_progress: Callable[[int], None]) -> None:
    """Write every split of ``reader``'s file as tar shards under ``out``."""
    check_png_shapes(reader.header.image_shapes, "the webdataset export")
    for split in SPLITS:
        tar: tarfile.TarFile | None = None
        try:
            for block in reader.blocks(split):
                levels = {m: to_uint8(images) for m, images in block.images.items()}
                for offset in range(len(block)):
                    index = block.start + offset
                    if index % SHARD_TUPLES == 0:
                        if tar is not None:
                            tar.close()
                        shard = out / shard_name(split, index // SHARD_TUPLES)
                        tar = tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT)
                    assert tar is not None
                    key = f"{index:08d}"
                    for modality, images in levels.items():
                        _add(tar, f"{key}.{modality}.png", png_bytes(images[offset]))
                    _add(tar, f"{key}.cls", str(int(block.labels[offset])).encode())
                    for name, values in block.extras.items():
                        _add(tar, f"{key}.{name}.npy", npy_bytes(values[offset]))
                on_progress(len(block))
        finally:
            if tar is not None:
                tar.close()
