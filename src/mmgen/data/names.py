"""The one rule for modality names, shared by dataset files and multi-modal models.

A modality name is a key in three places: an HDF5 dataset path (``images/<m>``), a torch
``ModuleDict`` key (no ``.``) and a subset's encoder name, where ``+`` joins modalities
(``mnist+fashion-mnist``). So a name is ASCII letters, digits, ``_`` and ``-``, not starting
with ``-``, and none of the names the file layout or a batch uses for something else.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mmgen.errors import UsageError

__all__ = ["RESERVED_NAMES", "check_modality_name", "check_modality_names", "derive_modality_names"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
NAME_RULE = "letters, digits, '_' and '-' (not first)"
# Keys that a file's split group or a model's batch uses besides the modalities.
RESERVED_NAMES = ("images", "labels", "z", "code_index", "permutation", "source_index")


def check_modality_name(name: object) -> None:
    """Raise ``UsageError`` unless ``name`` is a valid modality name (see the module docstring)."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"invalid modality name {name!r}: use {NAME_RULE}, e.g. 'mnist' or 'fashion-mnist' "
            "(give one with --modality NAME)"
        )
    if name in RESERVED_NAMES:
        raise UsageError(
            f"invalid modality name {name!r}: it is reserved ({', '.join(RESERVED_NAMES)}); "
            "choose another with --modality NAME"
        )


def check_modality_names(names: Sequence[object]) -> None:
    """Raise ``UsageError`` unless every name is valid and no name repeats."""
    for name in names:
        check_modality_name(name)
    if len(set(names)) != len(names):
        raise UsageError(f"modality names must be distinct, got {list(names)}")


def derive_modality_names(sources: Sequence[str]) -> list[str]:
    """Valid, unique modality names from source specs: ``idx:/data/scan.v2`` → ``scan-v2``.

    ``idx:PATH`` sources are named after their folder; every character outside the rule becomes
    ``-``; a repeated name gets ``-2``, ``-3``, ... (``mnist``, ``mnist-2``).

    Raises:
        UsageError: a source gives an empty or reserved name.
    """
    names: list[str] = []
    for source in sources:
        base = source.removeprefix("idx:").rstrip("/").rsplit("/", 1)[-1]
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-")
        if not base or base in RESERVED_NAMES:
            raise UsageError(
                f"source {source!r} gives the modality name {base!r}, which is empty or reserved "
                f"({', '.join(RESERVED_NAMES)}); name the modalities explicitly (--modality NAME)"
            )
        name, copy = base, 1
        while name in names:
            copy += 1
            name = f"{base}-{copy}"
        names.append(name)
    return names
