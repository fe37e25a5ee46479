"""The verdict across seeds (docs/method.md): is the entangled dataset measurably better?

The same seed s trains every model on every dataset, so the figures of one seed are paired. For
a figure f and the seeds s = 1 … n, the paired differences

    d_s = f(E, s) − f(ME, s)        (and f(E, s) − f(naive, s))

give the verdict: the mean d̄, a 95 % interval d̄ ± t_{0.975, n−1} · sd(d) / √n (Student t on
the paired differences, sd with n − 1 degrees of freedom) and the count of seeds whose d_s lies
on the side the figure's direction expects (``higher`` is better: d_s > 0; ``lower``: d_s < 0).
One seed has no interval.

The figures that should separate the datasets (issue 8): the importance-weighted log p(M) and
the conditionals log p(m | rest) (higher is better: an entangled modality predicts the others),
the posterior KL and JSD between encoders (lower is better: the encoders of an entangled tuple
agree) and the latent recovery R² (higher is better: the true codes are recoverable).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CONFIDENCE = 0.95
NO_INTERVAL = "1 seed: no interval"


@dataclass(frozen=True)
class Family:
    """A figure family of the verdict: where it sits in a job's figures and its direction."""

    label: str  # as the verdict table names it
    path: tuple[str, ...]  # keys into a job's figures
    higher_is_better: bool
    leaf: str | None = None  # for families whose leaves are records: the field to use


FAMILIES: tuple[Family, ...] = (
    Family("log p(M)", ("log_likelihood",), True),
    Family("log p(m | rest)", ("conditional",), True),
    Family("posterior KL", ("posterior", "divergence"), False, leaf="kl"),
    Family("posterior JSD", ("posterior", "divergence"), False, leaf="jsd"),
    # encoder → target code → probe → {"r2", "k"}: the R² only (k is the probe's setting)
    Family("latent recovery R²", ("latent_recovery",), True, leaf="r2"),
)


def student_t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with an integer ``df`` ≥ 1, in closed form.

    Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df): with θ = atan(t / √df),
    A(t | df) = P(|T| < t) is a finite series in sin θ and cos θ.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    cos2, sin = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/π)[θ + sin θ (cos θ + (2/3) cos³θ + …)], up to cos^{df−2} θ
        series, term = 0.0, math.cos(theta)
        for k in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        inside = 2 / math.pi * (theta + sin * series)
    else:  # even: sin θ [1 + (1/2) cos²θ + (1·3)/(2·4) cos⁴θ + …], up to cos^{df−2} θ
        series, term = 0.0, 1.0
        for k in range(df // 2):
            series += term
            term *= cos2 * (2 * k + 1) / (2 * k + 2)
        inside = sin * series
    return 0.5 + math.copysign(inside / 2, t)


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with integer ``df`` (bisection on ``student_t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2
        if student_t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def paired_summary(differences: Sequence[float], higher_is_better: bool) -> dict[str, Any]:
    """Mean, 95 % Student-t interval and sign agreement of paired differences d_s (§5b).

    Args:
        differences: d_s = f(E, s) − f(other, s), one per seed, in seed order.
        higher_is_better: the figure's direction; the expected side of d_s is > 0 when true.

    Returns:
        ``{"n", "mean", "sd", "interval": [low, high] or None, "agree", "expected"}``, where
        ``agree`` counts the seeds with d_s on the ``expected`` side (``"> 0"`` or ``"< 0"``).
    """
    values = [float(d) for d in differences]
    n = len(values)
    if n == 0:
        raise ValueError("no paired differences: the verdict needs at least one seed")
    mean = math.fsum(values) / n
    agree = sum(1 for d in values if (d > 0 if higher_is_better else d < 0))
    summary: dict[str, Any] = {
        "n": n,
        "mean": mean,
        "sd": None,
        "interval": None,
        "agree": agree,
        "expected": "> 0" if higher_is_better else "< 0",
    }
    if n > 1:
        sd = math.sqrt(math.fsum((d - mean) ** 2 for d in values) / (n - 1))
        half = student_t_quantile(0.5 + CONFIDENCE / 2, n - 1) * sd / math.sqrt(n)
        summary["sd"] = sd
        summary["interval"] = [mean - half, mean + half]
    return summary


def family_values(figures: Mapping[str, Any], family: Family) -> dict[str, float]:
    """The numeric figures of ``family`` in one job's figures, by key (``""``: a single value).

    ``None`` (a figure not computed; its ``notes`` say why) and missing entries give no values;
    nested records are flattened to ``outer/inner`` keys so that any depth of figure works.
    """
    value: Any = figures
    for part in family.path:
        if not isinstance(value, Mapping):
            return {}
        value = value.get(part)
    return dict(_numbers(value, "", family.leaf))


def _numbers(value: Any, prefix: str, leaf: str | None) -> Iterator[tuple[str, float]]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        yield prefix, float(value)
        return
    if isinstance(value, Mapping):
        if leaf is not None and leaf in value and not isinstance(value[leaf], Mapping):
            yield from _numbers(value[leaf], prefix, None)
            return
        for key in sorted(value):
            yield from _numbers(value[key], f"{prefix}/{key}" if prefix else str(key), leaf)


def comparisons(kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    """``(entangled, other)`` dataset pairs to compare: every entangled file against every
    mixed file, then every naive file (datasets in the given order)."""
    entangled = [name for name, kind in kinds.items() if kind == "entangled"]
    pairs = []
    for other_kind in ("mixed", "naive"):
        others = [name for name, kind in kinds.items() if kind == other_kind]
        pairs += [(e, o) for e in entangled for o in others]
    return pairs


def verdict(
    per_seed: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Any]]]],
    kinds: Mapping[str, str],
    models: Sequence[str],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    """Every verdict row: model × comparison × figure of ``FAMILIES``.

    Args:
        per_seed: dataset → model → seed → that job's figures.
        kinds: dataset → its kind (``entangled``, ``mixed``, ``naive``).
        models: the models, in report order.
        seeds: the seeds, in report order (the pairing).

    Returns:
        Rows ``{"model", "entangled", "other", "figure", "key", "better", **paired_summary}``,
        only for figures that both datasets of a pair have for every seed.
    """
    rows = []
    for model in models:
        for entangled, other in comparisons(kinds):
            for family in FAMILIES:
                left = [family_values(per_seed[entangled][model][s], family) for s in seeds]
                right = [family_values(per_seed[other][model][s], family) for s in seeds]
                keys = set.intersection(*(set(v) for v in left + right))
                for key in sorted(keys):
                    differences = [a[key] - b[key] for a, b in zip(left, right, strict=True)]
                    rows.append(
                        {
                            "model": model,
                            "entangled": entangled,
                            "other": other,
                            "figure": family.label,
                            "key": key,
                            "better": "higher" if family.higher_is_better else "lower",
                            **paired_summary(differences, family.higher_is_better),
                        }
                    )
    return rows


def summarise_seeds(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and standard deviation over seeds of figure trees of one shape.

    Numbers become their mean and their sample sd (n − 1 degrees of freedom; ``None`` for one
    seed); records recurse; anything else (``None`` for a figure not computed, a note, a list of
    encoder names) is kept when every seed agrees on it. Keys missing from a seed are
    left out.

    Returns:
        ``(mean tree, sd tree)``, both shaped like the records.
    """
    if not records:
        raise ValueError("no records: a summary needs at least one seed")
    mean, sd = _summarise(list(records))
    return mean, sd


def _summarise(values: list[Any]) -> tuple[Any, Any]:
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        n = len(values)
        mean = math.fsum(values) / n
        if n == 1:
            return mean, None
        return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    if all(isinstance(v, Mapping) for v in values):
        keys = [k for k in values[0] if all(k in v for v in values[1:])]
        means, sds = {}, {}
        for key in keys:
            means[key], sds[key] = _summarise([v[key] for v in values])
        return means, sds
    if all(v == values[0] for v in values[1:]):
        return values[0], values[0]
    return None, None
