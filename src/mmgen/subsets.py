"""Subsets that keep the marginals (issue 17, item 3): which leading rows E and its twins share.

When an evaluator uses fewer rows than a split, the entangled file E and its mixed twins must be
compared on the same images per unmixed modality and the same multiset per mixed one; otherwise
the E − ME difference mixes coherence with a change of images. A mixed file's modality m holds,
in row i, the entangled file's image ``permutation/m[i]`` of the same split. Its first ``n`` rows
hold exactly the images of E's first ``n`` rows iff the prefix is closed under the permutation:

    {permutation[i] : i < n} = {0, …, n − 1}  ⇔  max_{i < n} permutation[i] = n − 1,

since a permutation is a bijection. ``mmgen shuffle --block-codes B`` permutes within blocks of
``B`` codes, so every prefix of whole blocks is closed; a file permuted over its whole split
(mmgen before issue 17, ``--block-codes 0``) is closed on its whole split only. Prefixes also
hold whole codes (with grid labels the C tuples of a code are consecutive), so that a subset
never splits a code between classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmgen.data import h5io
from mmgen.errors import UsageError

log = logging.getLogger(__name__)


def closed_prefixes(permutation: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: entry ``n − 1`` tells whether the first ``n`` rows are closed under it."""
    permutation = np.asarray(permutation, dtype=np.int64)
    return np.maximum.accumulate(permutation) == np.arange(len(permutation))


def whole_code_prefixes(code_index: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: entry ``n − 1`` tells whether the first ``n`` rows end on a whole code."""
    code_index = np.asarray(code_index)
    ends = np.ones(len(code_index), dtype=bool)
    ends[:-1] = code_index[1:] != code_index[:-1]
    return ends


def valid_prefixes(path: Path | str, split: str = "test") -> np.ndarray:
    """``(N,)`` bool: which prefix lengths of ``path``'s ``split`` keep the marginals.

    Whole codes (files with a code), closed under every stored permutation (mixed files).
    """
    with h5io.open_dataset(path) as handle:
        group = handle[split]
        valid = np.ones(len(group["labels"]), dtype=bool)
        if "code_index" in group:
            valid &= whole_code_prefixes(h5io.read_rows(group["code_index"], slice(None), path))
        for modality in group.get("permutation", {}):
            permutation = h5io.read_rows(group["permutation"][modality], slice(None), path)
            valid &= closed_prefixes(permutation)
    return valid


def marginal_keeping_rows(
    paths: Sequence[Path | str], n: int, split: str = "test", shrink: bool = False
) -> int:
    """How many leading rows of ``split`` to use in every file of ``paths`` so they share images.

    Args:
        paths: an entangled file and its twins (any order; naive files only need equal sizes).
        n: the rows asked for.
        split: ``"train"`` or ``"test"``.
        shrink: return the largest valid count ``≤ n`` instead of refusing ``n``.

    Returns:
        ``n`` when the first ``n`` rows of every file keep the marginals (whole codes, closed
        under every permutation), else (``shrink``) the largest such count.

    Raises:
        UsageError: ``n`` is not valid (and not ``shrink``), or no count ``≤ n`` is; the
            message names the nearest valid counts below and above.
    """
    if n < 1:
        raise UsageError(f"a subset needs at least one row, got {n}")
    valid: np.ndarray | None = None
    for path in paths:
        rows = valid_prefixes(path, split)
        if valid is not None and len(rows) != len(valid):
            raise UsageError(
                f"{path}'s {split} split has {len(rows)} tuples, {paths[0]}'s {len(valid)}: "
                "twins of one entangled file have the same size"
            )
        valid = rows if valid is None else valid & rows
    if valid is None:
        raise UsageError("no file given")
    n = min(n, len(valid))
    if valid[n - 1]:
        return n
    counts = np.flatnonzero(valid) + 1
    below, above = counts[counts < n], counts[counts > n]
    if shrink and len(below):
        log.info("the first %d %s rows (of %d asked) keep the marginals", below[-1], split, n)
        return int(below[-1])
    nearest = ", ".join(str(int(part[i])) for part, i in ((below, -1), (above, 0)) if len(part))
    raise UsageError(
        f"the first {n} {split} tuples of {', '.join(map(str, paths))} do not hold the same "
        f"images of every modality (a mixed file permutes across them); use {nearest} tuples, "
        "or mix with mmgen shuffle --block-codes so that whole blocks keep the marginals"
    )
