"""The verdict at the level of the claim: dataset replicates, evaluator seeds nested in them.

docs/method.md: for a figure f, replicate r and evaluator seed s,

    d_{r,s} = f(E_r, s) − f(T_r, s)            (T: a twin of E_r, e.g. ME_r)
    d̄_r     = (1/S) Σ_s d_{r,s}                 the replicate's value
    d̄       = (1/R) Σ_r d̄_r                     the verdict's estimate
    d̄ ± t_{0.975, R−1} · sd(d̄_r) / √R          its 95 % Student-t interval (R ≥ 2)

and the sign count: replicates whose d̄_r lies on the side the figure's direction expects. The
variance components are those of the one-way random-effects model d_{r,s} = μ + a_r + e_{r,s}
(balanced: every replicate has the same S seeds), from the ANOVA mean squares

    MS_within  = Σ_{r,s} (d_{r,s} − d̄_r)² / (R (S − 1))       estimates σ²_seed
    MS_between = S Σ_r (d̄_r − d̄)² / (R − 1)                    estimates σ²_seed + S σ²_replicate
    σ²_replicate = max(0, (MS_between − MS_within) / S)

(the method-of-moments estimator, truncated at 0). One replicate has no interval for the
construction: evaluator seeds alone measure the evaluator's noise on one dataset draw.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mmgen.verdict import CONFIDENCE, student_t_quantile

ONE_REPLICATE = "1 dataset replicate: no interval for the construction"


def replicated_summary(differences: np.ndarray, higher_is_better: bool) -> dict[str, Any]:
    """The verdict of one figure from its paired differences ``d`` of shape ``(R, S)``.

    Returns:
        ``{"replicates", "seeds", "mean", "sd", "interval", "agree", "expected",
        "replicate_means", "variance": {"between_replicates", "between_seeds"}, "note"}``;
        ``sd`` (of the replicate means), ``interval`` and ``between_replicates`` are ``None``
        for one replicate; both variance components are ``None`` for one seed (the two
        sources of noise cannot be told apart).
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 2 or d.size == 0:
        raise ValueError(f"differences must be a non-empty (R, S) array, got shape {d.shape}")
    replicates, seeds = d.shape
    means = d.mean(axis=1)  # d̄_r
    mean = float(math.fsum(means) / replicates)
    expected_positive = higher_is_better
    agree = int(np.sum(means > 0 if expected_positive else means < 0))
    within = None
    if seeds > 1:
        within = float(np.sum((d - means[:, None]) ** 2) / (replicates * (seeds - 1)))
    summary: dict[str, Any] = {
        "replicates": replicates,
        "seeds": seeds,
        "mean": mean,
        "sd": None,
        "interval": None,
        "agree": agree,
        "expected": "> 0" if expected_positive else "< 0",
        "replicate_means": [float(m) for m in means],
        "variance": {"between_replicates": None, "between_seeds": within},
        "note": ONE_REPLICATE if replicates == 1 else "",
    }
    if replicates > 1:
        sd = float(np.std(means, ddof=1))
        half = student_t_quantile(0.5 + CONFIDENCE / 2, replicates - 1) * sd / math.sqrt(replicates)
        summary["sd"] = sd
        summary["interval"] = [mean - half, mean + half]
        if within is not None:  # one seed: replicate and seed noise cannot be told apart
            between_ms = seeds * sd**2
            summary["variance"]["between_replicates"] = max(0.0, (between_ms - within) / seeds)
    return summary


def excludes_zero(summary: dict[str, Any]) -> bool:
    """Whether the interval lies wholly on one side of 0 (no interval: ``False``)."""
    interval = summary["interval"]
    return interval is not None and (interval[0] > 0 or interval[1] < 0)
