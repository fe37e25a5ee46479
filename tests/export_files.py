"""A small but real mmgen file for the export tests: five modalities, mixed shapes, extras.

Written through mmgen's own writer (``h5io.create_dataset``) with random images, so an export
that drops, reorders or rescales a value is seen, and with one extra per-tuple field
(``nuisance/svhn``, the kind of field PolyMNIST-E adds) beside ``z`` and ``code_index``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmgen.data.h5io import Field, create_dataset, standard_fields
from mmgen.data.header import DatasetHeader, ModalitySource

SIZES = {"train": 23, "test": 11}  # not multiples of 10: a partial last block and shard
SHAPES = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "kmnist": (1, 28, 28),
    "svhn": (3, 32, 32),
    "digits": (1, 8, 8),
}
LATENT = 3


def write_five(path: Path, seed: int = 0) -> Path:
    """An entangled five-modality file with random contents; returns ``path``."""
    header = DatasetHeader(
        kind="entangled",
        modalities=tuple(SHAPES),
        sources={
            m: ModalitySource(
                name=m,
                class_names=tuple(f"{m}-{k}" for k in range(10)),
                checkpoint=f"/nowhere/{m}",
                checkpoint_sha256=f"{k:064x}",
                image_shape=shape,
            )
            for k, (m, shape) in enumerate(SHAPES.items())
        },
        num_classes=10,
        class_names=tuple(f"class-{k}" for k in range(10)),
        latent_dim=LATENT,
        seed=seed,
        config={"n_train": SIZES["train"], "n_test": SIZES["test"], "seed": seed},
    )
    extra = (Field("nuisance/svhn", np.dtype(np.float32), (2,)),)
    fields = standard_fields(SHAPES, "uint8", LATENT, extra)
    rng = np.random.default_rng(seed)
    with create_dataset(path, header, SIZES, fields) as writer:
        for split, size in SIZES.items():
            rows = {
                f"images/{m}": rng.integers(0, 256, (size, *shape), dtype=np.uint8)
                for m, shape in SHAPES.items()
            }
            for m, shape in SHAPES.items():
                if shape[0] == 1:
                    rows[f"images/{m}"] = rows[f"images/{m}"][:, 0]
            rows["labels"] = rng.integers(0, 10, size).astype(np.int64)
            rows["z"] = rng.normal(size=(size, LATENT)).astype(np.float32)
            rows["code_index"] = np.arange(size, dtype=np.int64)
            rows["nuisance/svhn"] = rng.uniform(0, 4, (size, 2)).astype(np.float32)
            writer.append(split, rows)
    return path


def read_all(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Split → dataset path → array, read with plain h5py (images as (N, C, H, W))."""
    import h5py

    out: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(path, "r") as handle:
        for split in SIZES:
            values: dict[str, np.ndarray] = {}
            handle[split].visititems(
                lambda name, item, values=values: (
                    values.__setitem__(name, item[:]) if isinstance(item, h5py.Dataset) else None
                )
            )
            for m, shape in SHAPES.items():
                images = values[f"images/{m}"]
                values[f"images/{m}"] = images.reshape(len(images), *shape)
            out[split] = values
    return out
