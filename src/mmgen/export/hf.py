"""Hugging Face ``datasets``: one parquet file per split that ``load_dataset`` reads as it is.

    data/{split}-00000-of-00001.parquet

Hugging Face's own naming, so ``datasets.load_dataset("parquet", data_dir=DIR)`` (and the Hub)
find one split per file. Columns: one ``Image`` feature per modality (PNG bytes), ``label`` (a
``ClassLabel`` with the file's class names), and every other per-tuple field of the file as a
column named by its path (``z`` as a fixed-length list of float32, ``code_index``,
``permutation.<m>``, nuisance and truth fields where the file has them). The schema carries
the ``datasets`` features in its metadata, so images decode to PIL images and labels to class
indices. Rows are written in row groups of ``BLOCK_ROWS``: memory stays flat in N.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.data.h5io import SPLITS
from mmgen.errors import UsageError
from mmgen.export.images import check_png_shapes, png_bytes
from mmgen.export.tuples import Block, SplitReader, to_uint8


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import datasets
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError(
            "the hf export needs the `datasets` and `pyarrow` packages: "
            "pip install 'mmgen-entangled[hf]'"
        ) from None
    return datasets, pa, pq


def split_file(split: str) -> str:
    """The file of ``split`` relative to the export folder."""
    return f"data/{split}-00000-of-00001.parquet"


def features(reader: SplitReader, split: str) -> Any:
    """The ``datasets.Features`` of ``split``: images, label, then the extra columns."""
    datasets, _, _ = _libraries()
    columns: dict[str, Any] = {m: datasets.Image() for m in reader.header.modalities}
    columns["label"] = datasets.ClassLabel(names=list(reader.header.class_names))
    group = reader.handle[split]
    for name, path in reader.extras(split).items():
        dataset = group[path]
        value = datasets.Value(str(dataset.dtype))
        row_shape = dataset.shape[1:]
        if len(row_shape) > 1:
            raise UsageError(f"the hf export stores per-tuple vectors, not {path} {dataset.shape}")
        columns[name] = datasets.List(value, length=row_shape[0]) if row_shape else value
    return datasets.Features(columns)


def _table(block: Block, schema: Any, pa: Any) -> Any:
    arrays: list[Any] = []
    for field in schema:
        if field.name in block.images:
            levels = to_uint8(block.images[field.name])
            values = [{"bytes": png_bytes(image), "path": None} for image in levels]
            arrays.append(pa.array(values, type=field.type))
        elif field.name == "label":
            arrays.append(pa.array(block.labels, type=field.type))
        else:
            values = np.ascontiguousarray(block.extras[field.name])
            if values.ndim == 2:
                flat = pa.array(values.ravel(), type=field.type.value_type)
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            else:
                arrays.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write(reader: SplitReader, out: Path, on_progress: Callable[[int], None]) -> None:
    """Write every split of ``reader``'s file as a parquet file under ``out/data``."""
    _, pa, pq = _libraries()
    check_png_shapes(reader.header.image_shapes, "the hf export")
    (out / "data").mkdir()
    for split in SPLITS:
        schema = features(reader, split).arrow_schema
        with pq.ParquetWriter(out / split_file(split), schema) as writer:
            for block in reader.blocks(split):
                writer.write_table(_table(block, schema, pa))
                on_progress(len(block))
