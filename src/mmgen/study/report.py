"""``mmgen study report``: the study's verdict from its finished evaluations.

Writes into the study folder:

- ``report.json``: the recipe, the primary figure, every verdict row (every model × twin ×
  figure × sweep point, ``mmgen.study.statistics.replicated_summary``), the naive pairing's rows
  (descriptive, outside the verdict), the counts and the sweeps;
- ``values.csv``: one line per (point, model, comparison, figure, key, replicate, seed) with
  both datasets' values and their difference, from which every interval can be recomputed;
- ``report.md``: the primary figure first, the counts with a multiplicity note, every verdict
  row, the naive pairing, and each sweep's table and figure (``sweep-<factor>.png``): each
  model's gap against the swept factor, marked "not converged" where the last step of a budget
  moves it by more than its interval's half-width.

Over 450 lines on purpose: every section reads the same per-(replicate, seed) tables in one
pass and must render every row of them; the statistics (``statistics``), the calibration
(``calibration``) and the figures' names (``figures``) are already apart.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from mmgen import __version__
from mmgen.atomic import atomic_path
from mmgen.config import load_json, save_json
from mmgen.errors import UsageError
from mmgen.plots import save_figure
from mmgen.study import calibration, steps
from mmgen.study.figures import FAMILY_BY_LABEL, RECOVERED, figure_values, network
from mmgen.study.plan import BASE_POINT, ENTANGLED, NAIVE, Plan, plan_study
from mmgen.study.recipe import Recipe, validate
from mmgen.study.run import RECIPE_FILE, evaluation_report, is_done
from mmgen.study.statistics import excludes_zero, replicated_summary

log = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD, VALUES_CSV = "report.json", "report.md", "values.csv"
CALIBRATION_CSV, GAPS_CSV = "calibration.csv", "gaps.csv"
DOSE_RESPONSE_PNG = "dose-response.png"
CSV_FIELDS = (
    "point", "model", "comparison", "figure", "key", "replicate", "seed",
    "entangled", "other", "difference",
)  # fmt: skip
NOT_CONVERGED = "not converged"


def read_study(out: Path | str) -> tuple[Recipe, Plan]:
    """The recipe a study folder was run with, and its plan; every evaluation must be done.

    Raises:
        UsageError: the folder holds no study, or some of its jobs are unfinished.
    """
    out = Path(out)
    if not (out / RECIPE_FILE).is_file():
        raise UsageError(f"{out} holds no study ({RECIPE_FILE}); run `mmgen study run` first")
    recipe = validate(load_json(out / RECIPE_FILE), str(out / RECIPE_FILE))
    plan = plan_study(recipe)
    missing = [job for job in plan.jobs.values() if not is_done(out, job)]
    if missing:
        raise UsageError(
            f"{out}: {len(missing)} of {len(plan.jobs)} jobs are unfinished (e.g. "
            f"{missing[0].describe()}); run `mmgen study run` with its recipe again to finish them"
        )
    return recipe, plan


def collect_values(out: Path, recipe: Recipe, plan: Plan) -> list[dict[str, Any]]:
    """Every paired value: one record per (point, model, comparison, figure, key, r, s).

    Only figures that both datasets have for every replicate and seed of a point are kept
    (as ``mmgen.verdict`` does for seeds).
    """
    reports = {
        key: evaluation_report(out, plan.jobs[key]) for key in {u.evaluate for u in plan.units}
    }
    records = []
    seeds = recipe.evaluator_seeds
    for point in plan.points:
        units = [u for u in plan.units if u.point == point.name]
        models = point.recipe.evaluate["models"]
        others = list(units[0].twins) + ([NAIVE] if units[0].naive else [])
        for model in models:
            for other in others:
                grid: dict[tuple[str, str], dict[tuple[int, int], tuple[float, float]]] = (
                    defaultdict(dict)
                )
                for unit in units:
                    report = reports[unit.evaluate]
                    for seed in seeds:
                        left = figure_values(
                            steps.evaluated_figures(report, ENTANGLED, model, seed)
                        )
                        right = figure_values(steps.evaluated_figures(report, other, model, seed))
                        for name in left.keys() & right.keys():
                            grid[name][unit.replicate, seed] = (left[name], right[name])
                complete = len(units) * len(seeds)
                for (figure, key), cells in sorted(grid.items()):
                    if len(cells) != complete:
                        continue
                    for (replicate, seed), (e, o) in sorted(cells.items()):
                        records.append(
                            {
                                "point": point.name,
                                "model": model,
                                "comparison": other,
                                "figure": figure,
                                "key": key,
                                "replicate": replicate,
                                "seed": seed,
                                "entangled": e,
                                "other": o,
                                "difference": e - o,
                            }
                        )
    return records


def verdict_rows(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (point, model, comparison, figure, key): the replicated summary."""
    groups: dict[tuple, dict[tuple[int, int], float]] = defaultdict(dict)
    order: list[tuple] = []
    for record in records:
        group = tuple(record[f] for f in ("point", "model", "comparison", "figure", "key"))
        if group not in groups:
            order.append(group)
        groups[group][record["replicate"], record["seed"]] = record["difference"]
    rows = []
    for group in order:
        cells = groups[group]
        replicates = sorted({r for r, _ in cells})
        seeds = sorted({s for _, s in cells})
        d = np.array([[cells[r, s] for s in seeds] for r in replicates])
        point, model, comparison, figure, key = group
        higher = FAMILY_BY_LABEL[figure].higher_is_better
        rows.append(
            {
                "point": point,
                "model": model,
                "network": network(model),
                "comparison": comparison,
                "figure": figure,
                "key": key,
                "better": "higher" if higher else "lower",
                **replicated_summary(d, higher),
            }
        )
    return rows


def side(row: Mapping[str, Any]) -> str:
    """``expected``, ``wrong`` (the interval excludes 0 on that side) or ``includes 0``/``n/a``."""
    if row["interval"] is None:
        return "n/a"
    if not excludes_zero(row):
        return "includes 0"
    positive = row["interval"][0] > 0
    return "expected" if positive == (row["expected"] == "> 0") else "wrong"


def counts(rows: Sequence[Mapping[str, Any]], models: Sequence[str]) -> dict[str, int]:
    """How many rows lie on each side, a model sharing another's joint network counted once.

    JMVAE-zero trains JMVAE's network: when both are in the study, JMVAE-zero's rows are left
    out of the counts (they are still reported).
    """
    present = set(models)
    counted = [r for r in rows if r["network"] == r["model"] or r["network"] not in present]
    result = {"rows": len(counted), "expected": 0, "wrong": 0, "includes 0": 0, "n/a": 0}
    for row in counted:
        result[side(row)] += 1
    result["networks"] = len({r["network"] for r in counted})
    return result


def sweep_curves(recipe: Recipe, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per sweep: each model's primary-figure gap to the first twin at every value."""
    curves = []
    twin = "me" if recipe.twins["mixed"] else None
    for sweep in recipe.sweeps:
        entry: dict[str, Any] = {"factor": sweep.factor, "values": list(sweep.values), "models": {}}
        entry["budget"] = sweep.is_budget
        for model in recipe.evaluate["models"]:
            by_key: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for value in sweep.values:
                for row in rows:
                    if (
                        row["point"] == f"{sweep.factor}={value}"
                        and row["model"] == model
                        and row["figure"] == recipe.primary
                        and (twin is None or row["comparison"] == twin)
                    ):
                        by_key[row["key"]].append(
                            {"value": value, "mean": row["mean"], "interval": row["interval"]}
                        )
            entry["models"][model] = {
                key: {"points": points, "converged": converged(points, sweep.is_budget)}
                for key, points in by_key.items()
            }
        curves.append(entry)
    return curves


def converged(points: Sequence[Mapping[str, Any]], budget: bool) -> bool | None:
    """False when the last budget step moves the gap by more than the last interval's
    half-width; ``None`` when that cannot be said (no budget, no interval, one point)."""
    if not budget or len(points) < 2 or points[-1]["interval"] is None:
        return None
    low, high = points[-1]["interval"]
    return abs(points[-1]["mean"] - points[-2]["mean"]) <= (high - low) / 2


def build_report(out: Path | str) -> dict[str, Any]:
    """Read a finished study folder and write its report; returns report.json's contents."""
    out = Path(out)
    recipe, plan = read_study(out)
    records = collect_values(out, recipe, plan)
    rows = verdict_rows(records)
    reports = {
        key: evaluation_report(out, plan.jobs[key]) for key in {u.evaluate for u in plan.units}
    }
    file_records, gap_records, truths = calibration.collect(
        out, plan, recipe.evaluator_seeds, reports
    )
    recovered = calibration.recovered_rows(gap_records)
    verdict = [r for r in rows if r["comparison"] != NAIVE]
    naive = [r for r in rows if r["comparison"] == NAIVE]
    base = [r for r in verdict if r["point"] == BASE_POINT]
    report = {
        "format": "mmgen-study-report",
        "mmgen_version": __version__,
        "recipe": recipe.as_dict(),
        "primary": recipe.primary,
        "replicates": recipe.replicates,
        "evaluator_seeds": list(recipe.evaluator_seeds),
        "points": [p.name for p in plan.points],
        "calibration": {
            "recovered": recovered,
            "excess": calibration.excess_rows(file_records),
            "shared_information": {
                p.name: calibration.shared_information(truths, p.name) for p in plan.points
            },
            "dose_response": calibration.dose_response(recovered, BASE_POINT),
            "latent_recovery": calibration.recovery_rows(
                reports, plan, truths, recipe.evaluator_seeds
            ),
            "subsets": {f"{p}/r{r}": t["extras"]["subset"] for (p, r), t in sorted(truths.items())},
        },
        "counts": {
            "primary": counts(
                [
                    r
                    for r in base + recovered
                    if r["figure"] == recipe.primary and r["point"] == BASE_POINT
                ],
                recipe.evaluate["models"],
            ),
            "all": counts(base, recipe.evaluate["models"]),
        },
        "verdict": verdict,
        "descriptive": naive,
        "sweeps": sweep_curves(recipe, verdict + recovered),
    }
    figures = {}
    if report["calibration"]["dose_response"]:
        figures["dose-response"] = calibration.draw_dose_response(
            report["calibration"]["dose_response"], out, DOSE_RESPONSE_PNG
        )
    for curve in report["sweeps"]:
        figures[curve["factor"]] = draw_sweep(curve, recipe.primary, out)
    report["figures"] = figures
    save_json(out / REPORT_JSON, report)
    with atomic_path(out / VALUES_CSV) as tmp:
        tmp.write_text(values_csv(records))
    with atomic_path(out / CALIBRATION_CSV) as tmp:
        tmp.write_text(values_csv(file_records, calibration.FILE_FIELDS))
    with atomic_path(out / GAPS_CSV) as tmp:
        tmp.write_text(values_csv(gap_records, calibration.GAP_FIELDS))
    with atomic_path(out / REPORT_MD) as tmp:
        tmp.write_text(render_markdown(report))
    return report


def values_csv(records: Sequence[Mapping[str, Any]], fields: Sequence[str] = CSV_FIELDS) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in record.items()})
    return buffer.getvalue()


def sweep_table(curve: Mapping[str, Any]) -> list[str]:
    """One row per model (and key), one column per swept value; ``—`` where the figure has no
    value at a setting (decoded means: no finite true gap, so no recovered fraction)."""
    values = curve["values"]
    lines = ["| model | key | " + " | ".join(str(v) for v in values) + " | |"]
    lines.append("|---|---|" + "---|" * len(values) + "---|")
    missing = False
    for model, keys in curve["models"].items():
        for key, entry in keys.items():
            by_value = {p["value"]: p for p in entry["points"]}
            cells = [
                f"{by_value[v]['mean']:.4g} {_interval(by_value[v])}" if v in by_value else "—"
                for v in values
            ]
            missing = missing or len(by_value) < len(values)
            mark = {False: NOT_CONVERGED, True: "converged", None: ""}[entry["converged"]]
            lines.append(f"| {model} | {_cell(key) or '—'} | " + " | ".join(cells) + f" | {mark} |")
    if missing:
        lines += ["", "—: no value at this setting (decoded means have no finite true gap, so no "
                  "recovered fraction; their rows are in the verdict tables above)."]  # fmt: skip
    return lines


def draw_sweep(curve: Mapping[str, Any], primary: str, out: Path) -> str:
    """Each model's gap against the swept factor, 95 % intervals as bars; the file name."""
    figure = Figure(figsize=(6, 4))
    axes = figure.add_subplot()
    values = curve["values"]
    positions = (
        values if all(isinstance(v, int | float) for v in values) else list(range(len(values)))
    )
    for model, keys in curve["models"].items():
        for key, entry in keys.items():
            means = [p["mean"] for p in entry["points"]]
            errors = [
                0.0 if p["interval"] is None else (p["interval"][1] - p["interval"][0]) / 2
                for p in entry["points"]
            ]
            label = model + (f" {key}" if key else "")
            if entry["converged"] is False:
                label += f" ({NOT_CONVERGED})"
            at = [positions[values.index(p["value"])] for p in entry["points"]]
            axes.errorbar(at, means, yerr=errors, marker="o", capsize=3, label=label)
    axes.axhline(0.0, color="grey", linewidth=0.8)
    if positions is not values:
        axes.set_xticks(positions, [str(v) for v in values])
    axes.set_xlabel(curve["factor"])
    axes.set_ylabel(f"{primary}: E − ME")
    axes.legend(fontsize="small")
    name = f"sweep-{curve['factor']}.png"
    save_figure(figure, out / name)
    return name


def _interval(row: Mapping[str, Any]) -> str:
    if row["interval"] is None:
        return "—"
    low, high = row["interval"]
    return f"[{low:.4g}, {high:.4g}]"


def _variance(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _rows_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [
        "| model | vs | figure | key | better | mean | 95 % interval | sign | σ² replicates "
        "| σ² seeds | side |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['comparison']} | {_cell(row['figure'])} "
            f"| {_cell(row['key']) or '—'} "
            f"| {row['better']} | {row['mean']:.4g} | {_interval(row)} "
            f"| {row['agree']}/{row['replicates']} {row['expected']} "
            f"| {_variance(row['variance']['between_replicates'])} "
            f"| {_variance(row['variance']['between_seeds'])} | {side(row)} |"
        )
    return lines


def render_markdown(report: Mapping[str, Any]) -> str:
    recipe = report["recipe"]
    r, seeds = report["replicates"], report["evaluator_seeds"]
    primary = report["primary"]
    verdict = report["verdict"]
    lines = [
        "# Study report",
        "",
        f"{r} dataset replicate(s) (each its own CVAE seeds, generate, shuffle and pair seeds) "
        f"× {len(seeds)} evaluator seed(s) {seeds}; study seed {recipe['seed']}; sources "
        f"{', '.join(recipe['sources'])}; models {', '.join(recipe['evaluate']['models'])}. "
        "The unit of every interval is the dataset replicate: mean over replicates of "
        "d̄_r = mean over seeds of f(E) − f(twin), 95 % Student-t interval over the replicate "
        "means; sign: replicates on the expected side (docs/study.md).",
        "",
    ]
    if r == 1:
        lines += [
            "**One dataset replicate: no interval for the construction.** The evaluator "
            "seeds measure only the evaluator's noise on one dataset draw.",
            "",
        ]
    base = [row for row in verdict if row["point"] == BASE_POINT]
    lines += calibration_markdown(report)
    if primary != RECOVERED:
        lines += [
            f"## Primary figure (declared in the recipe before the run): {primary}",
            "",
            *_rows_table([row for row in base if row["figure"] == primary]),
            "",
        ]
    for name, count in report["counts"].items():
        lines.append(
            f"- {name}: {count['rows']} rows over {count['networks']} joint networks "
            f"(a model sharing another's network, JMVAE-zero with JMVAE, counted once): "
            f"{count['expected']} intervals on the expected side, {count['wrong']} on the wrong "
            f"side, {count['includes 0']} include 0, {count['n/a']} without an interval."
        )
    total = len(verdict)
    lines += [
        "",
        f"Multiplicity: {total} verdict rows are reported below. Each 95 % interval alone "
        f"misses its true value one time in twenty, so about {total / 20:.1f} of them may "
        "exclude 0 by chance; only the primary figure was declared before the run, every other "
        "row is exploratory.",
        "",
        "## Every verdict row",
        "",
    ]
    for point in report["points"]:
        rows = [row for row in verdict if row["point"] == point]
        lines += [f"### {point}", "", *_rows_table(rows), ""]
    lines += [
        "## The naive pairing (descriptive, outside the verdict)",
        "",
        "The naive pairing holds real images, E and its twins decoded ones: E − naive mixes the "
        "image source with coherence, so these rows are no evidence for the construction.",
        "",
    ]
    for point in report["points"]:
        rows = [row for row in report["descriptive"] if row["point"] == point]
        if rows:
            lines += [f"### {point}", "", *_rows_table(rows), ""]
    for curve in report["sweeps"]:
        lines += [f"## Sweep: {curve['factor']} ({primary}, E − ME)", "", *sweep_table(curve)]
        figure = report["figures"].get(curve["factor"])
        lines += ["", f"![{curve['factor']}]({figure})", ""]
    lines += [f"Per-replicate and per-seed values: {VALUES_CSV}; everything: {REPORT_JSON}.", ""]
    return "\n".join(lines)


def _pm(summary: Mapping[str, Any] | None, scale: float = 1.0, digits: str = ".3g") -> str:
    """``mean [low, high]`` of a replicated summary (no interval: the mean alone)."""
    if summary is None:
        return "—"
    text = f"{summary['mean'] * scale:{digits}}"
    if summary["interval"] is not None:
        low, high = (v * scale for v in summary["interval"])
        text += f" [{low:{digits}}, {high:{digits}}]"
    return text


def verdict_sentence(row: Mapping[str, Any]) -> str:
    """E.g. "jmvae recovers 71 % [64, 78] of the 3.9 nats the modalities share (E − me)"."""
    twin = row["comparison"]
    return (
        f"{row['model']} recovers {_pm(row, 100, '.0f').replace(' [', ' % [', 1)}"
        f"{'' if row['interval'] is not None else ' %'} of the "
        f"{row['true_gap']['mean']:.3g} nats the modalities share (E − {twin}, true gap "
        f"{_pm(row['true_gap'])}; {row['agree']}/{row['replicates']} replicates > 0)"
    )


def calibration_markdown(report: Mapping[str, Any]) -> list[str]:
    """The report's first sections: the calibration against the ground truth (docs/truth.md)."""
    cal = report["calibration"]
    shared = cal["shared_information"].get(BASE_POINT, {"available": False})
    lines: list[str] = []
    means = [p for p, info in cal["shared_information"].items() if info.get("finite") is False]
    if means:
        info = cal["shared_information"][means[0]]
        lines += [
            f"**Decoded means ({', '.join(means)}): the likelihood gap has no finite target.** "
            f"{info['statement']}. Entropy floor of E, Σ_pixels H(x) over both modalities: "
            f"{_pm(info['entropy_floor'])} nats per tuple over replicates.",
            "",
        ]
    lines += ["## Calibration against the ground truth", ""]
    if not shared.get("available"):
        lines += ["No ground truth in this study ([truth] enabled = false).", ""]
        return lines
    if shared.get("finite"):
        lines += ["True shared information of E (conditional mutual information, whole test "
                  "split, mean over replicates with its 95 % interval):", ""]  # fmt: skip
        for pair, summary in shared["mutual_information"].items():
            lines.append(f"- I({pair.replace('+', '; ')} | c) = {_pm(summary)} nats")
        lines.append("")
    recovered = [r for r in cal["recovered"] if r["point"] == BASE_POINT]
    if recovered:
        lines += ["### Recovered fraction of the true gap (primary figure)" if report["primary"]
                  == RECOVERED else "### Recovered fraction of the true gap", ""]  # fmt: skip
        lines += [f"- {verdict_sentence(r)}." for r in recovered if r["comparison"] == "me"]
        lines += [
            "",
            "| model | twin | f | true gap (nats) | model gap (nats) | recovered fraction | sign "
            "| σ² replicates | σ² seeds | side |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in recovered:
            lines.append(
                f"| {r['model']} | {r['comparison']} | {r['fraction']:g} | {_pm(r['true_gap'])} "
                f"| {_pm(r['model_gap'])} | {_pm(r)} | {r['agree']}/{r['replicates']} > 0 "
                f"| {_variance(r['variance']['between_replicates'])} "
                f"| {_variance(r['variance']['between_seeds'])} | {side(r)} |"
            )
        lines += [
            "",
            "Recovered fraction ρ = (model's E − twin log p(M)) / (true E − twin log p(x)), both "
            "on the evaluated rows, per replicate and seed (gaps.csv); mean over seeds, then "
            "over replicates, 95 % Student-t interval over replicates.",
            "",
            "### Excess nats: the model's test log-likelihood beside the true one",
            "",
            "| model | file | rows | model log p(M) (IW) | true log p(x) | excess (nats) |",
            "|---|---|---|---|---|---|",
        ]
        for r in (r for r in cal["excess"] if r["point"] == BASE_POINT):
            lines.append(
                f"| {r['model']} | {r['file']} | {r['rows']} | {_pm(r['model_log_likelihood'])} "
                f"| {_pm(r['true_log_likelihood'])} | {_pm(r['excess'])} |"
            )
        lines.append("")
    dose = cal["dose_response"]
    if dose:
        lines += ["### Dose–response: each model's gap against the true gap over f", ""]
        for model, entry in dose.items():
            cells = "; ".join(
                f"f = {c['fraction']:g}: {_pm(c['model_gap'])} vs true {_pm(c['true_gap'])}"
                for c in entry["curve"]
            )
            spearman = "—" if entry["spearman"] is None else f"{entry['spearman']:.2f}"
            slope = "—" if entry["slope"] is None else f"{entry['slope']:.3g}"
            lines.append(
                f"- {model}: {cells}. Spearman (gap vs f) {spearman}; calibration slope "
                f"(model gap on true gap, replicate means) {slope}."
            )
        figure = report["figures"].get("dose-response")
        lines += ["", f"![dose-response]({figure})", ""] if figure else [""]
    lines += _recovery_markdown(cal["latent_recovery"])
    notes = [n for subset in cal["subsets"].values() for n in subset.get("notes", [])]
    if notes:
        lines += ["Evaluated rows (marginal-keeping subsets): " + "; ".join(sorted(set(notes)))]
        lines.append("")
    return lines


def _recovery_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    base = [r for r in rows if r["point"] == BASE_POINT]
    if not base:
        return []
    lines = [
        "### Latent recovery: raw R² (pixels pass it) and the fusion gain (coherence)",
        "",
        "R² of a per-class kNN probe predicting z on E's test rows, from each encoder's "
        "posterior means, beside the same probe on raw pixels (no model). **Raw R² does not "
        "show coherence**: the pixels of either image alone pass it. **The fusion gain** "
        "R²(joint) − max R²(single) **does**, on sampled data: what the tuple tells about z "
        "beyond its best modality.",
        "",
        "| model | " + " | ".join(sorted(base[0]["r2"])) + " |",
        "|---|" + "---|" * len(base[0]["r2"]),
    ]
    names = sorted(base[0]["r2"])
    for row in base:
        lines.append(
            f"| {row['model']} | "
            + " | ".join(_pm(row["r2"].get(n), digits=".3f") for n in names)
            + " |"
        )
    return [*lines, ""]
