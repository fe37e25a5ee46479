"""Where a source's files are looked for, in order, and how a failed search is reported.

First match wins: ``--data-dir``, ``MMGEN_DATA_DIR``, the user cache, then (MNIST family only)
Debian's ``/usr/share/datasets``. A download (``--download``) always goes into the user cache.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "MMGEN_DATA_DIR"
MIRRORS_ENV = "MMGEN_MIRRORS"
# Debian's dataset packages install here; a module constant so that tests can point it elsewhere.
DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")

Place = tuple[str, Path | None]  # (what the user calls it, the folder; None where unset)


def cache_dir() -> Path:
    """Return mmgen's user cache folder: ``$XDG_CACHE_HOME/mmgen`` or ``~/.cache/mmgen``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mmgen"


def debian_dir() -> Path:
    """Return Debian's dataset folder (read at call time, so that tests can move it)."""
    return DEBIAN_DATASETS_DIR


def data_roots(data_dir: str | Path | None) -> list[Place]:
    """Return the data roots searched, in order: ``--data-dir``, ``MMGEN_DATA_DIR``, the cache.

    Args:
        data_dir: the explicit data root (``--data-dir``), or ``None``.
    """
    env_value = os.environ.get(DATA_DIR_ENV) or None
    given = Path(data_dir).expanduser() if data_dir else None
    from_env = Path(env_value).expanduser() if env_value else None
    roots: list[Place] = [("--data-dir", given), (DATA_DIR_ENV, from_env), ("cache", cache_dir())]
    if given is not None and given == from_env:
        # --data-dir was filled from the variable (a caller's envvar fallback): one place.
        roots[:2] = [(f"--data-dir/{DATA_DIR_ENV}", given)]
    return roots


def describe_place(label: str, folder: Path | None, missing: list[str]) -> str:
    """Describe one searched place for the not-found message."""
    if folder is None:
        return f"{label} (not set)"
    if not folder.exists():
        return f"{label} {folder} (no such folder)"
    return f"{label} {folder} (lacks {', '.join(missing)})"
