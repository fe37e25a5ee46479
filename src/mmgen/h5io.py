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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

FORMAT = "mmgen"
SCHEMA_VERSION = 1
SPLITS = ("train", "test")
KINDS = ("entangled", "mixed", "naive")
JSON_ATTRS = ("modalities", "sources", "class_names", "config")


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
        raise ValueError(f"{path} is not an HDF5 file (expected one from mmgen generate)") from None
    if handle.attrs.get("format") != FORMAT:
        handle.close()
        raise ValueError(
            f"{path} is an HDF5 file but not an mmgen dataset (no format='mmgen' attribute); "
            "make one with mmgen generate or mmgen shuffle"
        )
    version = int(handle.attrs.get("schema_version", -1))
    if version > SCHEMA_VERSION:
        handle.close()
        raise ValueError(
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
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    with open_dataset(path) as handle:
        if split not in handle:
            raise ValueError(f"{path} has no {split!r} split (it has {sorted(handle)})")
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
