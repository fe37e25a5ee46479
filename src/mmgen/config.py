"""Frozen configuration dataclasses shared by every command, with JSON round-trip.

Every artifact mmgen writes (checkpoint, dataset, report) carries the config that produced it,
so each config is a frozen dataclass of plain values that survives ``to_dict`` → JSON →
``from_dict`` unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import math
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


def standard_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``.

    Standard JSON (RFC 8259) has no NaN or Infinity; Python's ``json`` writes them as bare
    ``NaN``/``Infinity``, which other readers (``jq``, JavaScript, strict parsers) reject. A
    figure that could not be computed is therefore stored as ``null``.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: standard_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(item) for item in value]
    return value


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented standard JSON (atomically: a temporary file, then a rename).

    Non-finite floats are written as ``null`` (see :func:`standard_json`).
    """
    from mmgen.atomic import atomic_path

    text = json.dumps(standard_json(data), indent=2, sort_keys=True, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


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
    """Raise ``UsageError`` naming the flag when ``value`` is not > 0 (NaN included)."""
    if not value > 0:
        raise UsageError(f"{name} must be > 0, got {value}")


def require_finite(name: str, value: object) -> None:
    """Raise ``UsageError`` naming the flag when ``value`` is a non-finite float (NaN, ±inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
