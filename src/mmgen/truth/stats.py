"""Means over tuples with their 95 % Student-t interval (the truth's summaries, docs/truth.md)."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from mmgen.verdict import CONFIDENCE, student_t_quantile


@functools.cache
def _half_width_factor(n: int) -> float:
    """``t_{0.975, n−1}`` (cached: a summary asks for the same n some 30 times per file)."""
    return student_t_quantile(0.5 + CONFIDENCE / 2, n - 1)


def mean_interval(values: np.ndarray, error: float | None = None) -> dict[str, Any]:
    """``{"mean", "interval": [low, high] | None, "n", "numerical_error"}`` of ``values``.

    The interval is ``mean ± t_{0.975, n−1}·sd/√n`` over the tuples (the spread of the data, not
    the numerical error, which is reported beside it).
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    mean = float(math.fsum(values) / n)
    interval = None
    if n > 1:
        sd = float(np.sqrt(np.sum((values - mean) ** 2) / (n - 1)))
        half = _half_width_factor(n) * sd / math.sqrt(n)
        interval = [mean - half, mean + half]
    return {"mean": mean, "interval": interval, "n": n, "numerical_error": error}
