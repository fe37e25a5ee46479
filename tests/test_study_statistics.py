"""The replicated verdict against independent computations (scipy.stats, ANOVA by hand)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mmgen.study.statistics import ONE_REPLICATE, excludes_zero, replicated_summary


def test_interval_is_scipy_t_interval_over_replicate_means() -> None:
    d = np.random.default_rng(3).normal(0.4, 1.0, size=(5, 3))
    summary = replicated_summary(d, higher_is_better=True)
    means = d.mean(axis=1)
    low, high = stats.t.interval(0.95, df=4, loc=means.mean(), scale=stats.sem(means))
    assert summary["mean"] == pytest.approx(means.mean(), rel=1e-12)
    assert summary["interval"] == pytest.approx([low, high], rel=1e-9)
    assert summary["sd"] == pytest.approx(np.std(means, ddof=1), rel=1e-12)
    assert summary["replicate_means"] == pytest.approx(list(means))


def test_variance_components_are_the_one_way_anova_estimates() -> None:
    # Replicate effects (sd 2) and seed noise (sd 0.5): R = 6, S = 4.
    generator = np.random.default_rng(7)
    d = generator.normal(0, 2.0, size=(6, 1)) + generator.normal(0, 0.5, size=(6, 4))
    summary = replicated_summary(d, higher_is_better=False)
    r, s = d.shape
    grand = d.mean()
    ss_between = s * sum((row.mean() - grand) ** 2 for row in d)
    ss_within = sum(((row - row.mean()) ** 2).sum() for row in d)
    ms_between, ms_within = ss_between / (r - 1), ss_within / (r * (s - 1))
    # scipy's one-way ANOVA on the replicates as groups gives the same F = MSB / MSW.
    f_scipy = stats.f_oneway(*d).statistic
    assert ms_between / ms_within == pytest.approx(f_scipy, rel=1e-9)
    assert summary["variance"]["between_seeds"] == pytest.approx(ms_within, rel=1e-12)
    assert summary["variance"]["between_replicates"] == pytest.approx(
        (ms_between - ms_within) / s, rel=1e-9
    )


def test_between_replicates_is_truncated_at_zero() -> None:
    # Replicate means identical, large seed noise: MSB < MSW.
    d = np.array([[1.0, -1.0], [-1.0, 1.0], [2.0, -2.0]])
    assert replicated_summary(d, True)["variance"]["between_replicates"] == 0.0


def test_sign_agreement_counts_replicate_means_on_the_expected_side() -> None:
    d = np.array([[1.0, 2.0], [-3.0, 0.5], [0.2, 0.2], [-0.1, -0.3]])  # means 1.5 -1.25 0.2 -0.2
    assert replicated_summary(d, True)["agree"] == 2
    assert replicated_summary(d, False)["agree"] == 2
    d = np.array([[1.0, 2.0], [3.0, 0.5], [0.2, 0.2]])
    assert replicated_summary(d, True)["agree"] == 3
    assert replicated_summary(d, False)["agree"] == 0


def test_one_replicate_has_no_interval_and_says_so() -> None:
    summary = replicated_summary(np.array([[0.3, 0.5, 0.1]]), True)
    assert summary["interval"] is None and summary["sd"] is None
    assert summary["variance"]["between_replicates"] is None
    assert summary["note"] == ONE_REPLICATE
    assert not excludes_zero(summary)


def test_one_seed_leaves_the_components_apart() -> None:
    summary = replicated_summary(np.array([[0.3], [0.5], [0.1]]), True)
    assert summary["variance"] == {"between_replicates": None, "between_seeds": None}
    assert summary["interval"] is not None
