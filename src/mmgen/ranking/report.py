"""The ranking study's report: values.csv, report.json and report.md.

For a metric f (joint coherence; cross coherence given k = 1 … 4), replicate r, variant v,
model m and training seed s, the replicate's value is the mean over its seeds,
f̄_r(v, m) = (1/S) Σ_s f_{r,s}(v, m). Per model and variant: the mean over replicates with its
95 % Student-t interval (``mmgen.study.statistics.replicated_summary``, R ≥ 2). The ranking of
the models per variant orders their means (highest first), and counts the replicates whose own
order of f̄_r agrees with it. The differences E − mixed and E − naive per model are paired on
replicate and seed (``d_{r,s} = f_{r,s}(E, m) − f_{r,s}(twin, m)``) and summarised the same way.

mmgen's own figures beside them, on the variants whose files hold the true code z (PolyMNIST-E
and its twin): the latent recovery R² of z from each fit's joint posterior mean (per-class kNN
and affine probes, ``mmgen.probes``) and its fusion gain (joint − best single modality,
``mmgen.pixel_baseline.fusion_gain``), summarised, ranked and differenced like a coherence; the
model-free pixel baseline (the same kNN on the raw composites) beside them; and the ground
truth of each file (its total correlation given the class, docs/truth.md §3b) over replicates.
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
from mmgen.metrics import subset_name
from mmgen.polymnist import default_names
from mmgen.ranking.multivae_steps import metric_names
from mmgen.ranking.plan import (
    ENTANGLED,
    MIXED,
    NAIVE,
    VARIANTS,
    WITH_CODES,
    RankingPlan,
    plan_ranking,
)
from mmgen.ranking.recipe import MODALITIES, validate_ranking
from mmgen.ranking.run import (
    BASELINE_FILE,
    PROBE_FILE,
    TRUTH_FILE,
    classifier_accuracy,
    fit_result,
    job_result,
)
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
# mmgen's latent-recovery figures: (metric, probe, which figure of the probe job)
LATENT = (
    ("latent R² of z, joint (kNN)", "class_knn", "joint"),
    ("latent R² of z, joint (affine)", "class_affine", "joint"),
    ("fusion gain (kNN)", "class_knn", "fusion_gain"),
)
PIXELS = "pixels"  # the model-free baseline's row
TRUTH_METRIC = "true total correlation (nats)"


def _axes(plan: RankingPlan) -> tuple[int, list[int], list[str]]:
    """The plan's replicate count, training seeds (sorted) and models (in recipe order)."""
    replicates = 1 + max(f.replicate for f in plan.fits)
    return (
        replicates,
        sorted({f.seed for f in plan.fits}),
        list(dict.fromkeys(f.model for f in plan.fits)),
    )


def collect(out: Path, plan: RankingPlan) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``values[metric][variant][model]``: an ``(R, S)`` array of the fits' figures.

    Raises:
        UsageError: a fit job is not finished.
    """
    replicates, seeds, models = _axes(plan)
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


def collect_latent(out: Path, plan: RankingPlan) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``values[metric][variant][model]``: ``(R, S)`` latent-recovery figures of the fits on
    the variants with codes (``LATENT``)."""
    replicates, seeds, models = _axes(plan)
    values = {
        metric: {
            v: {m: np.full((replicates, len(seeds)), np.nan) for m in models} for v in WITH_CODES
        }
        for metric, _, _ in LATENT
    }
    for fit in plan.fits:
        if fit.key not in plan.probes:
            continue
        result = _finished(out, plan, plan.probes[fit.key], PROBE_FILE)
        for metric, probe, figure in LATENT:
            if figure == "joint":
                value = result["recovery"][result["joint"]]["z"][probe]["r2"]
            else:
                value = result["fusion_gain"][probe]
            values[metric][fit.variant][fit.model][fit.replicate, seeds.index(fit.seed)] = value
    return values


def collect_references(out: Path, plan: RankingPlan) -> dict[str, dict[str, np.ndarray]]:
    """``values[metric][variant]``: ``(R, 1)`` model-free figures per replicate: the pixel
    baseline's for each latent metric, and the true total correlation (when computed)."""
    replicates = _axes(plan)[0]
    pixels = [metric for metric, probe, _ in LATENT if probe == "class_knn"]  # its one probe
    metrics = pixels + ([TRUTH_METRIC] if plan.truths else [])
    values = {m: {v: np.full((replicates, 1), np.nan) for v in WITH_CODES} for m in metrics}
    for r in range(replicates):
        baseline = _finished(out, plan, plan.baselines[r], BASELINE_FILE)
        joint = subset_name(default_names(MODALITIES))
        for variant in WITH_CODES:
            for metric, _, figure in LATENT:
                if metric in pixels:
                    key = joint if figure == "joint" else "fusion_gain"
                    values[metric][variant][r, 0] = baseline[variant][key]["r2"]
        if plan.truths:
            truths = _finished(out, plan, plan.truths[r], TRUTH_FILE)
            for variant in WITH_CODES:
                summary = truths[variant]
                if summary.get("finite"):
                    values[TRUTH_METRIC][variant][r, 0] = summary["total_correlation"]["mean"]
    return values


def _finished(out: Path, plan: RankingPlan, key: str, name: str) -> dict[str, Any]:
    job = plan.jobs[key]
    if not is_done(out, job):
        raise UsageError(f"{out}: job {job.describe()} is not finished; run the study first")
    return job_result(out, plan, key, name)


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
    rows: list[tuple] = []
    for metric, by_variant in values.items():
        report["metrics"][metric] = _entry(
            by_variant, models, recipe.replicates, DIFFERENCES, rows, metric
        )
    latent = collect_latent(out, plan)
    references = collect_references(out, plan)
    report["mmgen"] = {"latent": {}, "references": {}}
    for metric, by_variant in latent.items():
        report["mmgen"]["latent"][metric] = _entry(
            by_variant, models, recipe.replicates, DIFFERENCES[:1], rows, metric
        )
    for metric, by_variant in references.items():
        model = "truth" if metric == TRUTH_METRIC else PIXELS
        report["mmgen"]["references"][metric] = {
            v: _summary(values_of) for v, values_of in by_variant.items()
        }
        for variant, values_of in by_variant.items():
            rows += [
                (r, variant, model, metric, float(v), 1) for r, v in enumerate(values_of[:, 0])
            ]
    _write_csv(out / VALUES_CSV, rows)
    save_json(out / REPORT_JSON, report)
    with atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text(to_markdown(report, models))
    return report


def _entry(
    by_variant: dict[str, dict[str, np.ndarray]],
    models: list[str],
    replicates: int,
    differences: tuple[tuple[str, str], ...],
    rows: list[tuple],
    metric: str,
) -> dict[str, Any]:
    """One metric's summaries, rankings and paired differences; its CSV rows added."""
    entry: dict[str, Any] = {"summary": {}, "ranking": {}, "differences": {}}
    for variant, by_model in by_variant.items():
        entry["summary"][variant] = {m: _summary(by_model[m]) for m in models}
        means = {m: entry["summary"][variant][m]["mean"] for m in models}
        order = ranking(means)
        agree = sum(
            ranking({m: float(by_model[m][r].mean()) for m in models}) == order
            for r in range(replicates)
        )
        entry["ranking"][variant] = {
            "order": order,
            "agree": agree,
            "ties": [means[a] == means[b] for a, b in zip(order, order[1:], strict=False)],
        }
        for m in models:
            for r, value in enumerate(by_model[m].mean(axis=1)):
                rows.append((r, variant, m, metric, float(value), by_model[m].shape[1]))
    for first, second in differences:
        entry["differences"][f"{first}-{second}"] = {
            m: _summary(by_variant[first][m] - by_variant[second][m]) for m in models
        }
    return entry


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
    """``mean [low, high]``: in % with one decimal, or as is (R², nats) with two."""
    scale, digits = (100.0, 1) if percent else (1.0, 2)
    mean = summary["mean"] * scale
    if summary["interval"] is None or any(math.isnan(x) for x in summary["interval"]):
        return f"{mean:.{digits}f}"
    low, high = (x * scale for x in summary["interval"])
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


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
        lines += _metric_lines(metric, entry, models, VARIANTS, DIFFERENCES, r)
    lines += _mmgen_lines(report, models, r)
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


def _metric_lines(
    metric: str,
    entry: dict[str, Any],
    models: list[str],
    variants: tuple[str, ...],
    differences: tuple[tuple[str, str], ...],
    replicates: int,
    percent: bool = True,
    references: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """A metric's table (models × variants and differences; a reference row when given) and
    its rankings."""
    header = [VARIANT_NAMES[v] for v in variants] + [
        f"{'E' if a == ENTANGLED else a} − {b}" for a, b in differences
    ]
    lines = [f"## {metric}", "", "| model | " + " | ".join(header) + " |",
             "|---" * (1 + len(header)) + "|"]  # fmt: skip
    for m in models:
        cells = [_figure(entry["summary"][v][m], percent) for v in variants]
        for a, b in differences:
            difference = entry["differences"][f"{a}-{b}"][m]
            cells.append(
                f"{_figure(difference, percent)} ({difference['positive']}/{replicates} > 0)"
            )
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    if references is not None:
        cells = [_figure(references[v], percent) for v in variants] + ["" for _ in differences]
        lines.append(f"| {PIXELS} (no model) | " + " | ".join(cells) + " |")
    lines.append("")
    for v in variants:
        order = entry["ranking"][v]
        text = order["order"][0] + "".join(
            (" = " if tie else " > ") + m
            for tie, m in zip(order["ties"], order["order"][1:], strict=True)
        )
        lines.append(
            f"- ranking on {VARIANT_NAMES[v]}: {text} ({order['agree']}/{replicates} "
            "replicates agree)"
        )
    lines.append("")
    return lines


def _mmgen_lines(report: dict[str, Any], models: list[str], replicates: int) -> list[str]:
    """mmgen's own figures: the truth of each file, latent recovery beside the pixel baseline."""
    figures = report["mmgen"]
    references = figures["references"]
    lines = ["# mmgen's own figures", ""]
    if TRUTH_METRIC in references:
        truth = references[TRUTH_METRIC]
        lines += [
            "## Ground truth",
            "",
            "Total correlation of the five modalities given the class, "
            "`E[log p(x | c) − Σ_m log p(x_m | c)]` over the test split (nats, docs/truth.md "
            "§3b), mean over replicates with its 95 % interval: the information the five "
            "modalities share beyond the class.",
            "",
            "| " + " | ".join(VARIANT_NAMES[v] for v in VARIANTS) + " |",
            "|---" * len(VARIANTS) + "|",
            "| "
            + " | ".join(
                _figure(truth[v], percent=False) if v in truth else "— (real digits: no truth)"
                for v in VARIANTS
            )
            + " |",
            "",
        ]
    lines += [
        "Latent recovery (docs/method.md): R² of the true code z on the test split from each "
        "fit's posterior mean given all five modalities, by per-class probes fitted on the "
        "train split; fusion gain = R²(joint) − the best single modality's. The naive pairing "
        "has no z. The pixel row is the same kNN probe on the raw composites (no model): a "
        "figure it reaches is not evidence about a model.",
        "",
    ]
    for metric, entry in figures["latent"].items():
        reference = references.get(metric)
        lines += _metric_lines(
            metric, entry, models, WITH_CODES, DIFFERENCES[:1], replicates, False, reference
        )
    return lines
