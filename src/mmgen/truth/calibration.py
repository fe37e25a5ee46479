"""Scoring a model against the truth (docs/truth.md §6): excess nats and the recovered gap."""

from __future__ import annotations

from typing import Any

import numpy as np

from mmgen.errors import UsageError
from mmgen.truth.oracle import Truth
from mmgen.truth.stats import mean_interval


def _require_finite(truth: Truth) -> None:
    if not truth.summary.get("finite"):
        raise UsageError(f"no finite truth: {truth.summary.get('statement', 'decoded means')}")


def excess(truth: Truth, model_log_likelihood: float) -> dict[str, Any]:
    """``true mean log p(x) − the model's mean test log-likelihood`` (≥ 0 up to noise, Gibbs).

    Returns:
        ``{"true", "model", "excess", "numerical_error"}`` in nats per tuple.
    """
    _require_finite(truth)
    figure = truth.summary["log_likelihood"]
    return {
        "true": figure["mean"],
        "model": float(model_log_likelihood),
        "excess": figure["mean"] - float(model_log_likelihood),
        "numerical_error": figure["numerical_error"],
    }


def true_gap(entangled: Truth, other: Truth) -> dict[str, Any]:
    """The true E − ME gap of mean test log p(x): ``H_other − H_E``, per row paired.

    ``d_i = log p_E(x_i^E) − log p_other(x_i^other)`` over the rows both files share (twins of
    one entangled file: same size, same classes per row); mean, 95 % interval over rows and
    numerical error (the two files' errors added).
    """
    _require_finite(entangled)
    _require_finite(other)
    a, b = entangled.per_tuple["log_p"], other.per_tuple["log_p"]
    if len(a) != len(b):
        raise UsageError(
            f"the two truths cover {len(a)} and {len(b)} tuples; twins have equal sizes"
        )
    errors = [t.summary["log_likelihood"]["numerical_error"] or 0.0 for t in (entangled, other)]
    return mean_interval(np.asarray(a) - np.asarray(b), float(sum(errors)))


def recovered_fraction(model_gap: float, gap: dict[str, Any] | float) -> float:
    """A model's E − ME gap as a fraction of the true gap (``true_gap``'s mean, or a number)."""
    truth = gap["mean"] if isinstance(gap, dict) else float(gap)
    if truth == 0:
        return float("nan")
    return float(model_gap) / truth
