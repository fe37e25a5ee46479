"""PolyMNIST's two layouts, so that PolyMNIST code reads an mmgen file unchanged.

Modality k of the file (in the header's order) is PolyMNIST's ``m{k}``; the card records which
mmgen modality each ``m{k}`` is. Under the export folder:

    {split}/m{k}/{i}.{label}.png      MoPoE's folders (Sutter et al., 2021): tuple i of the
                                      split, one PNG per modality, its class in the name
    MMNIST/{split}/m{k}.pt            MultiVae's MMNISTDataset: float32 (N, C, H, W) in [0, 1]
    MMNIST/{split}/labels.pt          int64 (N,)
    MMNIST/{split}/{extra}.pt         every other per-tuple field (z, code_index, nuisance, ...)

``multivae.data.datasets.MMNISTDataset(data_path=DIR, split=...)`` reads ``m0`` .. ``m4``
(exactly five modalities); other PolyMNIST code globs ``m{k}`` folders. The ``.pt`` tensors
hold one modality of a whole split, so one modality is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mmgen.data.h5io import SPLITS
from mmgen.export.images import check_png_shapes, png_bytes
from mmgen.export.tuples import SplitReader, to_float, to_uint8


def folder_name(index: int) -> str:
    """PolyMNIST's name of modality ``index``: ``m0``, ``m1``, ..."""
    return f"m{index}"


def write(reader: SplitReader, out: Path, on_progress: Callable[[int], None]) -> None:
    """Write both layouts of every split of ``reader``'s file under ``out``."""
    header = reader.header
    check_png_shapes(header.image_shapes, "the polymnist export")
    names = {m: folder_name(k) for k, m in enumerate(header.modalities)}
    for split in SPLITS:
        for name in names.values():
            (out / split / name).mkdir(parents=True)
        tensors = out / "MMNIST" / split
        tensors.mkdir(parents=True)
        labels: list[np.ndarray] = []
        extras: dict[str, list[np.ndarray]] = {}
        for block in reader.blocks(split):
            for modality, images in block.images.items():
                folder = out / split / names[modality]
                levels = to_uint8(images)
                for offset, (image, label) in enumerate(zip(levels, block.labels, strict=True)):
                    (folder / f"{block.start + offset}.{label}.png").write_bytes(png_bytes(image))
            labels.append(block.labels)
            for name, values in block.extras.items():
                extras.setdefault(name, []).append(values)
            on_progress(len(block))
        torch.save(torch.from_numpy(np.concatenate(labels)), tensors / "labels.pt")
        for name, parts in extras.items():
            torch.save(torch.from_numpy(np.concatenate(parts)), tensors / f"{name}.pt")
        for modality, name in names.items():
            whole = np.empty((reader.size(split), *header.image_shapes[modality]), np.float32)
            for block in reader.blocks(split, modalities=[modality]):  # one in memory
                whole[block.start : block.start + len(block)] = to_float(block.images[modality])
            torch.save(torch.from_numpy(whole), tensors / f"{name}.pt")


def modality_map(modalities: tuple[str, ...]) -> dict[str, str]:
    """``{"m0": "mnist", ...}``: which mmgen modality each PolyMNIST name holds (for the card)."""
    return {folder_name(k): m for k, m in enumerate(modalities)}
