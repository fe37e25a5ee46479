"""A study scored against the ground truth: excess nats, recovered fraction, dose–response.

docs/truth.md §6, docs/method.md, replicated as docs/study.md says. For a model,
a dataset replicate r, an evaluator seed s and a file F of the replicate (E, ME, a partial twin
T_f), on the ``n`` test rows the evaluation used (``study-extras.json``'s subset):

    ll_{r,s}(F)   = the model's importance-weighted bound log p(M), mean over the n rows
    t_r(F)        = (1/n) Σ_{i<n} log p_F(x_i)      the truth's per-tuple log p, same rows
    excess        = t_r(F) − ll_{r,s}(F)            ≥ 0 up to noise (Gibbs)
    g_{r,s}(T)    = ll_{r,s}(E) − ll_{r,s}(T)       the model's gap
    G_r(T)        = t_r(E) − t_r(T)                 the true gap (H_T − H_E on these rows)
    ρ_{r,s}(T)    = g_{r,s}(T) / G_r(T)             the recovered fraction

each summarised over replicates by ``mmgen.study.statistics.replicated_summary`` (mean over
seeds, then over replicates; Student-t interval over replicate means; sign count; variance
components). The dose–response runs f = 0 (E itself, both gaps 0), the partial fractions and
f = 1 (ME): the model's gap against the true gap with their intervals, the Spearman rank
correlation of the model's mean gap with f (monotonicity), and the calibration slope, the
least-squares slope of the replicate means g̅_r(T_f) on G_r(T_f) over every twin and replicate
(1: the model recovers each increment of shared information in full).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from mmgen.pixel_baseline import fusion_gain
from mmgen.plots import save_figure
from mmgen.study import steps
from mmgen.study.figures import RECOVERED, network
from mmgen.study.plan import ENTANGLED, Plan, Unit
from mmgen.study.run import JOBS_DIR, evaluation_extras, truth_summaries
from mmgen.study.statistics import replicated_summary

FILE_FIELDS = (
    "point", "model", "file", "replicate", "seed", "rows", "model_log_likelihood",
    "true_log_likelihood", "excess",
)  # fmt: skip
GAP_FIELDS = (
    "point", "model", "twin", "fraction", "replicate", "seed", "model_gap", "true_gap",
    "recovered",
)  # fmt: skip
ENCODER_PROBE = ("z", "class_knn")  # the latent-recovery R² the report compares with pixels


def unit_truth(out: Path, plan: Plan, unit: Unit) -> dict[str, Any]:
    """One unit's truth: every generated file's summary, and (sampled files) its per-tuple
    ``log_p`` on the evaluated rows; plus the evaluation's rows and pixel baseline."""
    evaluation = plan.jobs[unit.evaluate]
    extras = evaluation_extras(out, evaluation)
    rows = extras["subset"]["test"]["used"] if extras["subset"]["test"] else None
    result: dict[str, Any] = {"rows": rows, "extras": extras, "summaries": {}, "log_p": {}}
    if unit.truth is None:
        return result
    job = plan.jobs[unit.truth]
    result["summaries"] = truth_summaries(out, job)
    for name, relative in job.spec["files"].items():
        if not result["summaries"][name].get("finite"):
            continue
        truth = steps.load_truth(out / JOBS_DIR / relative)
        if truth is None:
            raise RuntimeError(f"the truth of {relative} is missing or stale; rerun the study")
        log_p = np.asarray(truth.per_tuple["log_p"], dtype=np.float64)
        result["log_p"][name] = log_p if rows is None else log_p[:rows]
    result["rows"] = rows if rows is not None else _any_length(result["log_p"])
    return result


def _any_length(arrays: Mapping[str, np.ndarray]) -> int | None:
    return next((len(a) for a in arrays.values()), None)


def collect(
    out: Path, plan: Plan, seeds: Sequence[int], reports: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[tuple[str, int], dict[str, Any]]]:
    """The per-(replicate, seed) calibration records (files, gaps) and every unit's truth."""
    files, gaps = [], []
    truths: dict[tuple[str, int], dict[str, Any]] = {}
    for point in plan.points:
        for unit in (u for u in plan.units if u.point == point.name):
            truth = unit_truth(out, plan, unit)
            truths[point.name, unit.replicate] = truth
            if not truth["log_p"]:
                continue
            true = {name: float(math.fsum(v) / len(v)) for name, v in truth["log_p"].items()}
            report = reports[unit.evaluate]
            for model in point.recipe.evaluate["models"]:
                for seed in seeds:
                    ll = {
                        name: float(
                            steps.evaluated_figures(report, name, model, seed)["log_likelihood"]
                        )
                        for name in true
                    }
                    for name in true:
                        files.append(
                            {
                                "point": point.name, "model": model, "file": name,
                                "replicate": unit.replicate, "seed": seed, "rows": truth["rows"],
                                "model_log_likelihood": ll[name],
                                "true_log_likelihood": true[name],
                                "excess": true[name] - ll[name],
                            }
                        )  # fmt: skip
                    for twin in unit.twins:
                        model_gap = ll[ENTANGLED] - ll[twin]
                        true_gap = true[ENTANGLED] - true[twin]
                        gaps.append(
                            {
                                "point": point.name, "model": model, "twin": twin,
                                "fraction": unit.fractions[twin], "replicate": unit.replicate,
                                "seed": seed, "model_gap": model_gap, "true_gap": true_gap,
                                "recovered": model_gap / true_gap if true_gap else math.nan,
                            }
                        )  # fmt: skip
    return files, gaps, truths


def _grid(records: Sequence[Mapping[str, Any]], value: str) -> np.ndarray:
    """``(R, S)`` of ``value`` from one group's records."""
    cells = {(r["replicate"], r["seed"]): r[value] for r in records}
    replicates = sorted({r for r, _ in cells})
    seeds = sorted({s for _, s in cells})
    return np.array([[cells[r, s] for s in seeds] for r in replicates], dtype=np.float64)


def _groups(records: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[tuple, list]:
    groups: dict[tuple, list] = defaultdict(list)
    for record in records:
        groups[tuple(record[f] for f in fields)].append(record)
    return groups


def recovered_rows(gaps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (point, model, twin): the recovered fraction replicated, beside the model's gap and
    the true gap (its replicate means have one value each: the truth has no seed)."""
    rows = []
    for (point, model, twin), records in _groups(gaps, ("point", "model", "twin")).items():
        true = _grid(records, "true_gap")[:, :1]
        rows.append(
            {
                "point": point, "model": model, "network": network(model), "comparison": twin,
                "figure": RECOVERED, "key": "", "better": "higher",
                "fraction": records[0]["fraction"],
                **replicated_summary(_grid(records, "recovered"), True),
                "model_gap": replicated_summary(_grid(records, "model_gap"), True),
                "true_gap": replicated_summary(true, True),
            }
        )  # fmt: skip
    return rows


def excess_rows(files: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (point, model, file): the model's log p(M), the true one and the excess, replicated."""
    rows = []
    for (point, model, name), records in _groups(files, ("point", "model", "file")).items():
        rows.append(
            {
                "point": point, "model": model, "file": name, "rows": records[0]["rows"],
                "model_log_likelihood": replicated_summary(
                    _grid(records, "model_log_likelihood"), True
                ),
                "true_log_likelihood": replicated_summary(
                    _grid(records, "true_log_likelihood")[:, :1], True
                ),
                "excess": replicated_summary(_grid(records, "excess"), False),
            }
        )  # fmt: skip
    return rows


def shared_information(
    truths: Mapping[tuple[str, int], Mapping[str, Any]], point: str
) -> dict[str, Any]:
    """E's true conditional mutual information per pair (whole test split), over replicates;
    or, for decoded means, the entropy floor and the statement that no finite target exists."""
    summaries = [t["summaries"][ENTANGLED] for (p, _), t in sorted(truths.items()) if p == point
                 and t["summaries"]]  # fmt: skip
    if not summaries:
        return {"available": False}
    if not summaries[0].get("finite"):
        floors = np.array([[s["entropy_floor"]["total"]["mean"]] for s in summaries])
        return {
            "available": True, "finite": False, "statement": summaries[0]["statement"],
            "entropy_floor": replicated_summary(floors, True),
        }  # fmt: skip
    pairs = {}
    for pair in summaries[0]["mutual_information"]:
        values = np.array([[s["mutual_information"][pair]["mean"]] for s in summaries])
        pairs[pair] = replicated_summary(values, True)
    return {"available": True, "finite": True, "mutual_information": pairs}


def dose_response(rows: Sequence[Mapping[str, Any]], point: str) -> dict[str, Any]:
    """Per model: (f, model gap, true gap) from f = 0 to 1, Spearman over f, calibration slope."""
    result = {}
    for model in dict.fromkeys(r["model"] for r in rows if r["point"] == point):
        twins = sorted(
            (r for r in rows if r["point"] == point and r["model"] == model),
            key=lambda r: r["fraction"],
        )
        curve = [{"fraction": 0.0, "model_gap": _zero(), "true_gap": _zero()}]
        curve += [
            {"fraction": r["fraction"], "model_gap": r["model_gap"], "true_gap": r["true_gap"]}
            for r in twins
        ]
        fractions = [c["fraction"] for c in curve]
        means = [c["model_gap"]["mean"] for c in curve]
        spearman = None
        if len(curve) >= 3 and np.ptp(means) > 0 and np.ptp(fractions) > 0:
            spearman = float(stats.spearmanr(fractions, means).statistic)
        x = np.concatenate([r["true_gap"]["replicate_means"] for r in twins])
        y = np.concatenate([r["model_gap"]["replicate_means"] for r in twins])
        slope = None
        if len(x) >= 2 and np.ptp(x) > 0:
            slope = float(np.polyfit(x, y, 1)[0])
        result[model] = {"curve": curve, "spearman": spearman, "slope": slope}
    return result


def _zero() -> dict[str, Any]:
    return {"mean": 0.0, "interval": [0.0, 0.0], "replicate_means": []}


def draw_dose_response(curves: Mapping[str, Any], out: Path, name: str) -> str:
    """Each model's gap against the true gap over f (95 % intervals both ways), y = x dashed."""
    figure = Figure(figsize=(6, 4.5))
    axes = figure.add_subplot()
    top = 0.0
    for model, entry in curves.items():
        xs = [c["true_gap"]["mean"] for c in entry["curve"]]
        ys = [c["model_gap"]["mean"] for c in entry["curve"]]
        xerr = [_half(c["true_gap"]) for c in entry["curve"]]
        yerr = [_half(c["model_gap"]) for c in entry["curve"]]
        axes.errorbar(xs, ys, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=model)
        for c, x, y in zip(entry["curve"], xs, ys, strict=True):
            axes.annotate(f"f={c['fraction']:g}", (x, y), fontsize="x-small")
        top = max([top, *xs])
    axes.plot([0, top], [0, top], linestyle="--", color="grey", linewidth=0.8, label="y = x")
    axes.set_xlabel("true gap E − twin_f (nats)")
    axes.set_ylabel("model gap E − twin_f, log p(M) (nats)")
    axes.legend(fontsize="small")
    save_figure(figure, out / name)
    return name


def _half(summary: Mapping[str, Any]) -> float:
    interval = summary.get("interval")
    return 0.0 if interval is None else (interval[1] - interval[0]) / 2


def recovery_rows(
    reports: Mapping[str, Mapping[str, Any]], plan: Plan, truths: Mapping, seeds: Sequence[int]
) -> list[dict[str, Any]]:
    """Per point and model: latent-recovery R² of E's joint and single encoders, the fusion
    gain R²(joint) − max R²(single), replicated; and the same for the pixel baseline."""
    rows = []
    for point in plan.points:
        units = [u for u in plan.units if u.point == point.name]
        pixels: dict[str, list[list[float]]] = defaultdict(list)
        for unit in units:
            baseline = truths[point.name, unit.replicate]["extras"]["pixel_baseline"]
            for name, entry in baseline.items():
                pixels[name].append([entry["r2"]])
        rows.append(
            {
                "point": point.name, "model": "pixels (no model)",
                "r2": {n: replicated_summary(np.array(v), True) for n, v in pixels.items()},
            }
        )  # fmt: skip
        for model in point.recipe.evaluate["models"]:
            values: dict[str, list[list[float]]] = defaultdict(list)
            for unit in units:
                per_seed: dict[str, list[float]] = defaultdict(list)
                for seed in seeds:
                    figures = steps.evaluated_figures(
                        reports[unit.evaluate], ENTANGLED, model, seed
                    )
                    recovery = figures.get("latent_recovery")
                    if not isinstance(recovery, Mapping):
                        break
                    r2 = {
                        encoder: float(targets[ENCODER_PROBE[0]][ENCODER_PROBE[1]]["r2"])
                        for encoder, targets in recovery.items()
                    }
                    joint = max(r2, key=lambda e: e.count("+"))
                    singles = {e: v for e, v in r2.items() if "+" not in e}
                    for encoder, value in r2.items():
                        per_seed[encoder].append(value)
                    if singles and joint not in singles:
                        per_seed["fusion_gain"].append(fusion_gain(r2[joint], singles))
                for name, seed_values in per_seed.items():
                    values[name].append(seed_values)
            if values:
                rows.append(
                    {
                        "point": point.name, "model": model,
                        "r2": {n: replicated_summary(np.array(v), True) for n, v in values.items()},
                    }
                )  # fmt: skip
    return rows
