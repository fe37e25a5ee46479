"""Small helpers several modules share, written once: file hashing, safe names, split keys,
grey levels ↔ [0, 1].

Nothing here knows about models, datasets or commands; every module may import it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
from torch import Tensor

# A split's place in the random key ``(seed, split, ...)`` of generate, shuffle and pair: the
# train and test draws are independent streams of one seed.
SPLIT_KEYS = {"train": 0, "test": 1}


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of the bytes of the file at ``path``."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def safe_name(name: str, fallback: str = "dataset") -> str:
    """``name`` as a file-name fragment: runs of other characters than ``A-Za-z0-9_.-`` become
    one ``-`` (``idx:/a/b`` → ``idx-a-b``); ``fallback`` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or fallback


def to_unit(images: Tensor) -> Tensor:
    """Stored images as float32 in [0, 1]: uint8 levels ``x / 255``, floats as they are."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def to_levels(images: Tensor) -> Tensor:
    """Images in [0, 1] as uint8 levels ``round(255·x)`` (the inverse of :func:`to_unit`)."""
    return torch.round(images * 255.0).to(torch.uint8)
