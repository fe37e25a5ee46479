"""``--classes``: keep a subset of a source's classes, in a chosen order, relabelled 0..K-1.

Sources with different class sets (ten of CIFAR-100's hundred, EMNIST's letters a–j) can then be
combined with each other: a CVAE per source, all with the same number of classes (the M²VAE
paper's requirement that the uni-modal sets share their classes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mmgen.errors import UsageError

ClassChoice = str | int


def parse_classes(text: str | None) -> tuple[str, ...] | None:
    """Split the CLI's ``--classes a,b,c`` at commas; ``None`` or blank: every class."""
    if text is None or not text.strip():
        return None
    return tuple(part.strip() for part in text.split(","))


def class_indices(
    source: str, class_names: Sequence[str], classes: Sequence[ClassChoice]
) -> tuple[int, ...]:
    """Return the source's index of each chosen class, in the order chosen.

    A string is a class name first, else a decimal index; an int is an index.

    Raises:
        UsageError: an empty choice, an unknown name or index (the message lists the valid
            ones), or a class chosen twice.
    """
    if not classes:
        raise UsageError(f"--classes for {source} names no class; give names or indices")
    by_name = {name: index for index, name in enumerate(class_names)}
    chosen: list[int] = []
    for choice in classes:
        index = by_name.get(choice) if isinstance(choice, str) else None
        if index is None:
            index = _as_index(choice, len(class_names))
        if index is None:
            raise UsageError(
                f"--classes: {source} has no class {choice!r}; valid names: "
                f"{', '.join(class_names)} (or indices 0..{len(class_names) - 1})"
            )
        if index in chosen:
            raise UsageError(
                f"--classes: class {choice!r} of {source} is chosen twice; name each class once"
            )
        chosen.append(index)
    return tuple(chosen)


def select(labels: np.ndarray, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return the positions of the examples of the chosen classes and their new labels.

    The new label of an example of class ``indices[k]`` is ``k``; the examples keep their order.
    """
    relabel = np.full(int(max(labels.max(initial=0), *indices)) + 1, -1, dtype=np.int64)
    relabel[list(indices)] = np.arange(len(indices))
    new_labels = relabel[labels]
    keep = np.flatnonzero(new_labels >= 0)
    return keep, new_labels[keep]


def _as_index(choice: ClassChoice, num_classes: int) -> int | None:
    if isinstance(choice, bool):
        return None
    if isinstance(choice, str):
        if not choice.isdecimal():
            return None
        choice = int(choice)
    if isinstance(choice, int | np.integer) and 0 <= choice < num_classes:
        return int(choice)
    return None
