"""One random-stream scheme: every draw comes from a generator keyed by (seed, stream, index…).

A stream is named by a key of strings and integers, for example ``("train", epoch)``,
``("generate", split, block)`` or ``("metric", "iw")``. NumPy's ``SeedSequence`` mixes the
whole key, so nearby keys give unrelated streams, and a result depends only on its key: not on
the order in which streams are used, the batch size or the number of processes. Nothing here
touches a global generator.

A run's seed is an integer in ``0 … 2**63 − 1`` (``SEED_MIN`` … ``SEED_MAX``), checked by every
command (``check_seed``) and by every stream built here: the range is never reduced modulo
anything, so two recorded seeds never draw the same numbers.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from mmgen.errors import UsageError

__all__ = ["SEED_MAX", "SEED_MIN", "check_seed", "key_entropy", "numpy_stream", "stream"]

Key = int | str
SEED_MIN = 0
SEED_MAX = 2**63 - 1


def check_seed(seed: object, flag: str = "--seed") -> int:
    """``seed`` as an int; ``UsageError`` naming ``flag`` unless it is in ``0 … 2**63 − 1``."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise UsageError(f"{flag} must be an integer, got {seed!r}")
    if not SEED_MIN <= int(seed) <= SEED_MAX:
        raise UsageError(
            f"{flag} {seed} is out of range; use an integer in {SEED_MIN} .. {SEED_MAX} (2**63 - 1)"
        )
    return int(seed)


def _word(part: Key) -> int:
    """A key part as a non-negative integer: strings by their CRC-32 (stable across runs)."""
    if isinstance(part, str):
        return zlib.crc32(part.encode()) + 2**32  # offset keeps names apart from small integers
    if isinstance(part, bool) or not isinstance(part, int | np.integer):
        raise TypeError(f"a stream key holds ints and strings, got {part!r}")
    return int(part) % 2**63


def key_entropy(seed: int, *key: Key) -> int:
    """A 63-bit seed mixed from ``seed`` and ``key`` (the same key gives the same number)."""
    words = [check_seed(seed), *(_word(part) for part in key)]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def stream(seed: int, *key: Key, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for the stream ``key`` of a run seeded ``seed``."""
    generator = torch.Generator(device=device)
    generator.manual_seed(key_entropy(seed, *key))
    return generator


def numpy_stream(seed: int, *key: Key) -> np.random.Generator:
    """A NumPy ``Generator`` for the stream ``key`` of a run seeded ``seed``."""
    words = [check_seed(seed), *(_word(part) for part in key)]
    return np.random.default_rng(np.random.SeedSequence(words))
