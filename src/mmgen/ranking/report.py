"""The ranking study's report: values.csv, report.json and report.md.

For a metric f (joint coherence; cross coherence given k = 1 … 4), replicate r, variant v,
model m and training seed s, the replicate's value is the mean over its seeds,
f̄_r(v, m) = (1/S) Σ_s f_{r,s}(v, m). Per model and variant: the mean over replicates with its
95 % Student-t interval (``mmgen.study.statistics.replicated_summary``, R ≥ 2). The ranking of
the models per variant orders their means (highest first), and counts the replicates whose own
order of f̄_r agrees with it. The differences E − mixed and E − naive per model are paired on
replicate and seed (``d_{r,s} = f_{r,s}(E, m) − f_{r,s}(twin, m)``) and summarised the same way.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.atomic import atomic_path
from mmgen.config import load_json, save_json
from mmgen.errors import UsageError
from mmgen.ranking.multivae_steps import metric_names
from mmgen.ranking.plan import ENTANGLED, MIXED, NAIVE, VARIANTS, RankingPlan, plan_ranking
from mmgen.ranking.recipe import MODALITIES, validate_ranking
from mmgen.ranking.run import classifier_accuracy, fit_result
from mmgen.study.run import RECIPE_FILE, is_done
from mmgen.study.statistics import ONE_REPLICATE, replicated_summary

REPORT_MD, REPORT_JSON, VALUES_CSV = "report.md", "report.json", "values.csv"
CSV_FIELDS = ("replicate", "variant", "model", "metric", "value", "seeds")
VARIANT_NAMES = {
    ENTANGLED: "PolyMNIST-E",
    MIXED: "mixed twin",
    NAIVE: "naive pairing",
}
DIFFERENCES = ((ENTANGLED, MIXED), (ENTANGLED, NAIVE))
MODEL_NAMES = {"mvae": "MVAE", "mmvae": "MMVAE", "mopoe": "MoPoE"}


def collect(out: Path, plan: RankingPlan) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``values[metric][variant][model]``: an ``(R, S)`` array of the fits' figures.

    Raises:
        UsageError: a fit job is not finished.
    """
    replicates = 1 + max(f.replicate for f in plan.fits)
    seeds = sorted({f.seed for f in plan.fits})
    models = list(dict.fromkeys(f.model for f in plan.fits))
    metrics = metric_names(MODALITIES)
    values = {
        metric: {
            v: {m: np.full((replicates, len(seeds)), np.nan) for m in models} for v in VARIANTS
        }
        for metric in metrics
    }
    for fit in plan.fits:
        job = plan.jobs[fit.key]
        if not is_done(out, job):
            raise UsageError(f"{out}: job {job.describe()} is not finished; run the study first")
        figures = fit_result(out, plan, fit.key)["coherence"]
        for metric in metrics:
            values[metric][fit.variant][fit.model][fit.replicate, seeds.index(fit.seed)] = figures[
                metric
            ]
    return values


def ranking(means: dict[str, float]) -> list[str]:
    """Models ordered by mean, highest first (ties by name, for a stable order)."""
    return sorted(means, key=lambda m: (-means[m], m))


def build_ranking_report(out: Path | str) -> dict[str, Any]:
    """Write report.md, report.json and values.csv of a finished study folder ``out``."""
    out = Path(out)
    recipe = validate_ranking(_recipe_document(load_json(out / RECIPE_FILE)), str(out))
    plan = plan_ranking(recipe)
    values = collect(out, plan)
    models = list(recipe.models)
    report: dict[str, Any] = {
        "recipe": recipe.as_dict(),
        "replicates": recipe.replicates,
        "evaluator_seeds": list(recipe.evaluator_seeds),
        "note": ONE_REPLICATE if recipe.replicates == 1 else "",
        "metrics": {},
        "classifier_accuracy": {
            str(r): classifier_accuracy(out, plan, r) for r in range(recipe.replicates)
        },
    }
    rows = []
    for metric, by_variant in values.items():
        entry: dict[str, Any] = {"summary": {}, "ranking": {}, "differences": {}}
        for variant, by_model in by_variant.items():
            entry["summary"][variant] = {m: _summary(by_model[m]) for m in models}
            means = {m: entry["summary"][variant][m]["mean"] for m in models}
            order = ranking(means)
            agree = sum(
                ranking({m: float(by_model[m][r].mean()) for m in models}) == order
                for r in range(recipe.replicates)
            )
            entry["ranking"][variant] = {
                "order": order,
                "agree": agree,
                "ties": [means[a] == means[b] for a, b in zip(order, order[1:], strict=False)],
            }
            for m in models:
                for r, value in enumerate(by_model[m].mean(axis=1)):
                    rows.append((r, variant, m, metric, float(value), by_model[m].shape[1]))
        for first, second in DIFFERENCES:
            entry["differences"][f"{first}-{second}"] = {
                m: _summary(by_variant[first][m] - by_variant[second][m]) for m in models
            }
        report["metrics"][metric] = entry
    _write_csv(out / VALUES_CSV, rows)
    save_json(out / REPORT_JSON, report)
    with atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text(to_markdown(report, models))
    return report


def _recipe_document(recorded: dict[str, Any]) -> dict[str, Any]:
    return recorded  # recipe.json is as_dict(): the TOML document's own shape


def _summary(values: np.ndarray) -> dict[str, Any]:
    summary = replicated_summary(values, higher_is_better=True)
    return {
        "mean": summary["mean"],
        "interval": summary["interval"],
        "replicates": summary["replicates"],
        "seeds": summary["seeds"],
        "positive": summary["agree"],  # replicates whose mean is > 0 (differences)
        "replicate_means": summary["replicate_means"],
    }


def _write_csv(path: Path, rows: list[tuple]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for row in rows:
        writer.writerow([*row[:4], repr(row[4]), row[5]])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


def _figure(summary: dict[str, Any], percent: bool = True) -> str:
    scale = 100.0 if percent else 1.0
    mean = summary["mean"] * scale
    if summary["interval"] is None or any(math.isnan(x) for x in summary["interval"]):
        return f"{mean:.1f}"
    low, high = (x * scale for x in summary["interval"])
    return f"{mean:.1f} [{low:.1f}, {high:.1f}]"


def to_markdown(report: dict[str, Any], models: list[str]) -> str:
    """The report as Markdown: coherences (%), rankings, differences, classifier ceilings."""
    recipe = report["recipe"]
    r, s = report["replicates"], len(report["evaluator_seeds"])
    lines = [
        "# PolyMNIST-E ranking study",
        "",
        f"MultiVae's {', '.join(MODEL_NAMES[m] for m in models)} trained by MultiVae's trainer on "
        "PolyMNIST-E, its mixed twin and the naive pairing; MultiVae's CoherenceEvaluator. "
        f"{r} dataset replicate(s) × {s} training seed(s) per replicate; figures in % with a "
        "95 % Student-t interval over replicate means"
        + (" (one replicate: no interval)." if r == 1 else "."),
        "",
        f"Budget: CVAE {recipe['cvae']['epochs']} epochs on {recipe['cvae']['limit']} images; "
        f"PolyMNIST {recipe['polymnist']['n_train']} train / {recipe['polymnist']['n_test']} test "
        f"tuples ({recipe['polymnist']['decode']}); MultiVae {recipe['multivae']['epochs']} "
        f"epochs, batch {recipe['multivae']['batch_size']}, latent "
        f"{recipe['multivae']['latent_dim']}, β {recipe['multivae']['beta']}, MMVAE K "
        f"{recipe['multivae']['mmvae_k']}; classifiers {recipe['classifier']['epochs']} epochs; "
        f"joint coherence from {recipe['coherence']['joint_samples']} prior samples.",
        "",
    ]
    for metric, entry in report["metrics"].items():
        lines += [f"## {metric}", "", "| model | " + " | ".join(
            VARIANT_NAMES[v] for v in VARIANTS) + " | E − mixed | E − naive |",
            "|---" * (3 + len(VARIANTS)) + "|"]  # fmt: skip
        for m in models:
            cells = [_figure(entry["summary"][v][m]) for v in VARIANTS]
            for a, b in DIFFERENCES:
                difference = entry["differences"][f"{a}-{b}"][m]
                cells.append(f"{_figure(difference)} ({difference['positive']}/{r} > 0)")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
        for v in VARIANTS:
            order = entry["ranking"][v]
            text = order["order"][0] + "".join(
                (" = " if tie else " > ") + m
                for tie, m in zip(order["ties"], order["order"][1:], strict=True)
            )
            lines.append(
                f"- ranking on {VARIANT_NAMES[v]}: {text} ({order['agree']}/{r} replicates agree)"
            )
        lines.append("")
    lines += ["## Classifier ceilings", "",
              "Accuracy (%) of each replicate's classifiers (trained on the naive train split) "
              "on each variant's test split, mean over modalities m0 … m4:", "",
              "| replicate | " + " | ".join(VARIANT_NAMES[v] for v in VARIANTS) + " |",
              "|---" * (1 + len(VARIANTS)) + "|"]  # fmt: skip
    for replicate, by_variant in report["classifier_accuracy"].items():
        cells = [f"{100 * float(np.mean(list(by_variant[v].values()))):.1f}" for v in VARIANTS]
        lines.append(f"| {replicate} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)
