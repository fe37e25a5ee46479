"""Frozen configuration dataclasses shared by every command, with JSON round-trip.

Every artifact mmgen writes (checkpoint, dataset, report) carries the config that produced it,
so each config is a frozen dataclass of plain values that survives ``to_dict`` → JSON →
``from_dict`` unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from mmgen.errors import UsageError

T = TypeVar("T")


def to_dict(config: Any) -> dict[str, Any]:
    """Return a config dataclass as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild ``cls`` from ``to_dict`` output, rejecting unknown keys with a clear message.

    Lists are turned back into tuples where the field default is a tuple, so that
    ``from_dict(cls, to_dict(c)) == c``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UsageError(
            f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(fields)}"
        )
    values = {}
    for name, value in data.items():
        if isinstance(value, list):
            value = tuple(value)
        values[name] = value
    return cls(**values)


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (atomically: a temporary file, then a rename)."""
    from mmgen.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, with a one-line error naming the file when it is unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} should hold a JSON object, found {type(data).__name__}")
    return data


def require_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` naming the flag when ``value`` is not > 0."""
    if not value > 0:
        raise UsageError(f"{name} must be > 0, got {value}")
