"""Small helpers several modules share, written once: file hashing, safe names, split keys.

Nothing here knows about models, datasets or commands; every module may import it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

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
