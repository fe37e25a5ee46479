"""The verdict across seeds (docs/method.md): Student t, paired differences, mean ± sd tables."""

from __future__ import annotations

import math

import pytest

from mmgen.report import render_verdict, verdict_key
from mmgen.report.markdown import _table
from mmgen.verdict import (
    FAMILIES,
    NO_INTERVAL,
    family_values,
    paired_summary,
    student_t_cdf,
    student_t_quantile,
    summarise_seeds,
    verdict,
)


@pytest.mark.parametrize(
    ("df", "expected"),
    # Two-sided 95 % critical values of Student's t (any statistics table).
    [(1, 12.7062), (2, 4.3027), (3, 3.1824), (4, 2.7764), (9, 2.2622), (29, 2.0452)],
)
def test_t_quantiles_match_the_tables(df: int, expected: float) -> None:
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-4)


def test_t_cdf_is_the_cauchy_for_one_degree_and_symmetric() -> None:
    for t in (-3.0, -0.5, 0.0, 0.7, 4.0):
        assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
        assert student_t_cdf(t, 6) + student_t_cdf(-t, 6) == pytest.approx(1.0, abs=1e-12)


def test_paired_summary_of_three_seeds() -> None:
    summary = paired_summary([1.0, 2.0, 3.0], higher_is_better=True)
    half = 4.302652729749 / math.sqrt(3)  # t_{0.975, 2} · sd / √n with sd = 1
    assert summary["mean"] == pytest.approx(2.0)
    assert summary["sd"] == pytest.approx(1.0)
    assert summary["interval"] == pytest.approx([2.0 - half, 2.0 + half])
    assert summary["agree"] == 3 and summary["n"] == 3 and summary["expected"] == "> 0"


def test_lower_is_better_counts_negative_differences() -> None:
    summary = paired_summary([-1.0, 0.5, -2.0], higher_is_better=False)
    assert summary["agree"] == 2 and summary["expected"] == "< 0"
    assert paired_summary([-1.0, 0.5, -2.0], higher_is_better=True)["agree"] == 1


def test_one_seed_has_no_interval() -> None:
    summary = paired_summary([4.0], higher_is_better=True)
    assert summary["interval"] is None and summary["sd"] is None
    assert summary["mean"] == 4.0 and summary["agree"] == 1


def _figures(log_likelihood: float, kl: float, recovery) -> dict:
    return {
        "log_likelihood": log_likelihood,
        "conditional": {"a|b": log_likelihood / 2},
        "posterior": {"divergence": {"a+b||a": {"kl": kl, "jsd": kl / 10}}},
        "latent_recovery": recovery,
        "elbo": {"a+b": -1.0},  # not a verdict figure
    }


def test_verdict_pairs_the_datasets_by_seed() -> None:
    per_seed = {
        "e": {"m": {0: _figures(-100.0, 1.0, {"a": 0.9}), 1: _figures(-101.0, 2.0, {"a": 0.8})}},
        "me": {"m": {0: _figures(-103.0, 3.0, {"a": 0.1}), 1: _figures(-102.0, 2.5, {"a": 0.2})}},
        "n": {"m": {0: _figures(-99.0, 1.0, "n/a"), 1: _figures(-100.0, 1.0, "n/a")}},
    }
    kinds = {"e": "entangled", "me": "mixed", "n": "naive"}
    rows = verdict(per_seed, kinds, ["m"], [0, 1])
    by = {(r["other"], r["figure"], r["key"]): r for r in rows}
    likelihood = by["me", "log p(M)", ""]
    assert likelihood["mean"] == pytest.approx(2.0)  # d = (3, 1)
    assert likelihood["agree"] == 2 and likelihood["better"] == "higher"
    assert by["me", "log p(m | rest)", "a|b"]["mean"] == pytest.approx(1.0)
    kl = by["me", "posterior KL", "a+b||a"]
    assert kl["mean"] == pytest.approx(-1.25) and kl["better"] == "lower" and kl["agree"] == 2
    assert by["me", "posterior JSD", "a+b||a"]["mean"] == pytest.approx(-0.125)
    assert by["me", "latent recovery R²", "a"]["mean"] == pytest.approx(0.7)
    # E − naive: the naive file has no true z, so no recovery row; the rest is there.
    assert by["n", "log p(M)", ""]["mean"] == pytest.approx(-1.0)
    assert by["n", "log p(M)", ""]["agree"] == 0
    assert not any(r["other"] == "n" and r["figure"].startswith("latent") for r in rows)
    assert not any(r["figure"].startswith("ELBO") for r in rows)


def test_summarise_seeds_gives_mean_and_sample_sd() -> None:
    mean, sd = summarise_seeds(
        [
            {"x": 1.0, "nested": {"y": 2.0}, "note": "n/a", "names": ["a"]},
            {"x": 3.0, "nested": {"y": 6.0}, "note": "n/a", "names": ["a"]},
        ]
    )
    assert mean == {"x": 2.0, "nested": {"y": 4.0}, "note": "n/a", "names": ["a"]}
    assert sd["x"] == pytest.approx(math.sqrt(2.0)) and sd["nested"]["y"] == pytest.approx(
        math.sqrt(8.0)
    )
    one_mean, one_sd = summarise_seeds([{"x": 5.0}])
    assert one_mean == {"x": 5.0} and one_sd == {"x": None}


def _report(seeds: list[int], rows: list[dict]) -> dict:
    entry = {"letters": {"mnist": "a", "fashion": "b"}}
    return {
        "seeds": seeds,
        "config": {"models": ["m"]},
        "verdict": rows,
        "datasets": {
            "e": {**entry, "models": {"m": {"log_likelihood": -100.0}}, "sd": {"m": {}}},
            "me": {**entry, "models": {"m": {"log_likelihood": -103.0}}, "sd": {"m": {}}},
        },
    }


def test_verdict_table_says_when_there_is_no_interval() -> None:
    row = {"model": "m", "entangled": "e", "other": "me", "figure": "log p(m | rest)",
           "key": "mnist|fashion", "better": "higher", **paired_summary([3.0], True)}  # fmt: skip
    lines = render_verdict(_report([0], [row]))
    table = [line for line in lines if line.startswith("| m |")]
    assert table == [f"| m | e − me | log p(m \\| rest) a\\|b | higher | 3.000 | {NO_INTERVAL} | "
                     "1/1 (> 0) |"]  # fmt: skip


def test_tables_show_mean_plus_minus_sd_over_seeds() -> None:
    report = _report([0, 1], [])
    report["datasets"]["e"]["sd"]["m"] = {"log_likelihood": 1.5}
    report["datasets"]["me"]["sd"]["m"] = {"log_likelihood": 0.25}
    lines = _table(report, lambda e, m, letters: {"": e["models"][m]["log_likelihood"]}, 2)
    assert lines[-1] == "| m | -100.00 ± 1.50 | -103.00 ± 0.25 |"
    one = _table(_report([0], []), lambda e, m, letters: {"": e["models"][m]["log_likelihood"]}, 2)
    assert one[-1] == "| m | -100.00 | -103.00 |"


def test_latent_recovery_enters_the_verdict_by_its_r2_only() -> None:
    figures = {"latent_recovery": {"mnist+fashion": {"z[fashion]": {
        "class_affine": {"r2": 0.5}, "class_knn": {"r2": 0.75, "k": 16}}}}}  # fmt: skip
    family = next(f for f in FAMILIES if f.label.startswith("latent recovery"))
    values = family_values(figures, family)
    assert values == {
        "mnist+fashion/z[fashion]/class_affine": 0.5,
        "mnist+fashion/z[fashion]/class_knn": 0.75,
    }
    letters = {"mnist": "a", "fashion": "b"}
    assert verdict_key("mnist+fashion/z[fashion]/class_knn", letters) == "ab → z[b] (class_knn)"
    assert verdict_key("mnist|fashion", letters) == "a|b"
