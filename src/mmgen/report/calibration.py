"""The calibration of an evaluation: every model scored against its files' ground truth.

docs/truth.md §6 on the rows evaluate measured, as the study does it (``mmgen.study.calibration``)
but within one evaluation, whose only replication is the evaluator seed s. For a model, a file F
whose current truth ``mmgen truth F`` stored beside it, and its first ``n`` test rows (the
evaluated ones, ``--test-limit``/``--limit``):

    ll_s(F)  = the model's importance-weighted bound log p(M), mean over the n rows
    t(F)     = (1/n) Σ_{i<n} log p_F(x_i)        the truth's per-tuple log p, same rows
    excess_s = t(F) − ll_s(F)                     ≥ 0 up to noise (Gibbs)
    g_s(T)   = ll_s(E) − ll_s(T)                  the model's gap, T a mixed twin of E
    G(T)     = (1/n) Σ_{i<n} [log p_E(x_i^E) − log p_T(x_i^T)]    the true gap, same rows
    ρ_s(T)   = g_s(T) / G(T)                      the recovered fraction

each summarised over the seeds by its mean and a 95 % Student-t interval
(``mmgen.truth.stats.mean_interval``). Evaluator seeds are not dataset replicates: the interval
is the evaluator's noise on this one draw of the dataset; ``mmgen study`` gives the verdict over
dataset replicates. A decoded-means file has no finite target; its entropy floor
``Σ_pixels H(x)`` over the evaluated rows is computed from its images (``mmgen.truth``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from mmgen.errors import UsageError
from mmgen.runner import DatasetInfo, twin_groups
from mmgen.truth import load_truth
from mmgen.truth.oracle import NO_TARGET, entropy_floor
from mmgen.truth.stats import mean_interval

SEEDS_NOTE = (
    "intervals are over evaluator seeds (initialisation, minibatch order, metric draws) on this "
    "one draw of each dataset: evaluator seeds are not dataset replicates; for the verdict "
    "replicated over datasets run mmgen study (docs/study.md)"
)
NAIVE = "naive pairing of real images: no generating process, so no truth"
ZERO_GAP = "the true gap is 0 on these rows: no fraction"


def no_truth(path: Any) -> str:
    """The note of a generated file without a current stored truth."""
    return f"no truth stored (run mmgen truth {path})"


def file_truth(info: DatasetInfo, test: Mapping[str, Tensor], rows: int) -> dict[str, Any]:
    """What is known of one file's truth on its first ``rows`` test rows (``test``: the loaded
    test split).

    Returns:
        ``{"status", "finite", "note", "rows", "true_log_likelihood", "entropy_floor"}`` and,
        for a finite truth, ``"log_p"``: the per-tuple ``(rows,)`` float64 array (not JSON; the
        report drops it). ``status``: ``stored``, ``decoded means``, ``missing`` or ``naive``.
    """
    record: dict[str, Any] = {
        "status": "missing", "finite": None, "note": None, "rows": rows,
        "true_log_likelihood": None, "entropy_floor": None,
    }  # fmt: skip
    if info.kind == "naive":
        record.update(status="naive", note=NAIVE)
        return record
    if info.decode == "mean":
        return _means(record, info, test)
    try:  # the file's SHA-256 is known: compared below
        truth = load_truth(info.path, check=False)
    except UsageError as error:  # an unreadable sidecar must not cost the evaluation's report
        record["note"] = f"{error} (then run mmgen truth {info.path})"
        return record
    if truth is not None and truth.summary.get("finite") is False:
        return _means(record, info, test)
    if truth is None:
        record["note"] = no_truth(info.path)
        return record
    if (
        truth.summary.get("dataset_sha256") != info.sha256
        or truth.summary.get("split", "test") != "test"
        or len(truth.per_tuple.get("log_p", ())) < rows
    ):
        record["note"] = f"the stored truth is stale (run mmgen truth {info.path})"
        return record
    log_p = np.asarray(truth.per_tuple["log_p"], dtype=np.float64)[:rows]
    record.update(
        status="stored",
        finite=True,
        true_log_likelihood=float(math.fsum(log_p) / rows),
        log_p=log_p,
    )
    return record


def _means(record: dict[str, Any], info: DatasetInfo, test: Mapping[str, Tensor]) -> dict:
    """A decoded-means file's record: no finite target, the entropy floor of its test rows."""
    floors = {m: entropy_floor(test[m].detach().cpu()).numpy() for m in info.modalities}
    total = np.sum(list(floors.values()), axis=0)
    record.update(
        status="decoded means",
        finite=False,
        note=NO_TARGET,
        entropy_floor={**{m: mean_interval(v) for m, v in floors.items()},
                       "total": mean_interval(total)},
    )  # fmt: skip
    return record


def _over_seeds(values: Mapping[int, float]) -> dict[str, Any]:
    """Mean and 95 % Student-t interval over the seeds, with each seed's value."""
    summary = mean_interval(np.array(list(values.values()), dtype=np.float64))
    del summary["numerical_error"]
    return {**summary, "per_seed": {str(seed): float(v) for seed, v in values.items()}}


def calibrate(
    datasets: Sequence[DatasetInfo],
    truths: Mapping[str, Mapping[str, Any]],
    per_seed: Mapping[str, Mapping[str, Mapping[int, Mapping[str, Any]]]],
    models: Sequence[str],
    seeds: Sequence[int],
) -> dict[str, Any]:
    """``report.json``'s ``calibration``: per file and model the excess, per entangled file,
    mixed twin and model the recovered fraction (module docstring). ``None`` with a ``note``
    wherever a figure cannot be computed."""
    files: dict[str, Any] = {}
    for info in datasets:
        truth = truths[info.name]
        entry = {k: v for k, v in truth.items() if k != "log_p"}
        entry["models"] = {}
        for model in models:
            ll = {s: float(per_seed[info.name][model][s]["log_likelihood"]) for s in seeds}
            row: dict[str, Any] = {"model_log_likelihood": _over_seeds(ll), "excess": None}
            if truth["finite"]:
                true = truth["true_log_likelihood"]
                row["excess"] = _over_seeds({s: true - v for s, v in ll.items()})
            entry["models"][model] = row
        files[info.name] = entry

    gaps: list[dict[str, Any]] = []
    for entangled, twins in twin_groups(datasets):
        for twin in twins:
            t_e, t_t = truths[entangled.name], truths[twin.name]
            true_gap = None
            note = next((t["note"] for t in (t_e, t_t) if not t["finite"]), None)
            if note is None:
                true_gap = mean_interval(t_e["log_p"] - t_t["log_p"])
                del true_gap["numerical_error"]
                if true_gap["mean"] == 0:
                    note = ZERO_GAP
            for model in models:
                model_gap = {
                    s: float(per_seed[entangled.name][model][s]["log_likelihood"])
                    - float(per_seed[twin.name][model][s]["log_likelihood"])
                    for s in seeds
                }
                recovered = None
                if true_gap is not None and note is None:
                    recovered = _over_seeds({s: g / true_gap["mean"] for s, g in model_gap.items()})
                gaps.append(
                    {
                        "model": model, "entangled": entangled.name, "twin": twin.name,
                        "rows": t_e["rows"], "model_gap": _over_seeds(model_gap),
                        "true_gap": true_gap, "recovered": recovered, "note": note,
                    }
                )  # fmt: skip
    return {"note": SEEDS_NOTE, "files": files, "gaps": gaps}


def _cell(summary: Mapping[str, Any] | None, digits: int = 2, scale: float = 1.0) -> str:
    """``mean [low, high]`` (no interval for one value), ``n/a`` for ``None``."""
    if summary is None:
        return "n/a"
    mean = f"{summary['mean'] * scale:.{digits}f}"
    interval = summary.get("interval")
    if interval is None:
        return mean
    return f"{mean} [{interval[0] * scale:.{digits}f}, {interval[1] * scale:.{digits}f}]"


def render_means_statements(report: Mapping[str, Any]) -> list[str]:
    """The report's first lines for every decoded-means file: no finite target, the floor."""
    lines = []
    for name, entry in report.get("calibration", {}).get("files", {}).items():
        if entry["status"] != "decoded means":
            continue
        floor = entry["entropy_floor"]
        letters = report["datasets"][name]["letters"]
        parts = ", ".join(f"{letters[m]} {floor[m]['mean']:.1f}" for m in letters)
        lines += [
            f"**{name} stores decoded means: its likelihood gap has no finite target.** "
            f"{entry['note'][0].upper()}{entry['note'][1:]}. Entropy floor Σ_pixels H(x) over "
            f"its {entry['rows']} evaluated test rows (nats per tuple): {parts}; total "
            f"{_cell(floor['total'], 1)} (95 % interval over rows), so log p(M) ≤ "
            f"−{floor['total']['mean']:.1f} for every model.",
            "",
        ]
    return lines


def render_calibration(report: Mapping[str, Any]) -> list[str]:
    """The calibration section (the report's first table when a file has a stored truth)."""
    calibration = report.get("calibration")
    if not calibration:
        return []
    seeds = len(report["seeds"])
    lines = ["## Calibration against the ground truth (docs/truth.md)", ""]
    stored = {n: e for n, e in calibration["files"].items() if e["status"] == "stored"}
    if stored:
        lines += [
            f"Over the first test rows evaluated: the model's importance-weighted log p(M), "
            "the true mean log p(x) of the generating process on the same rows, and the excess "
            f"true − model (≥ 0 up to noise); mean [95 % interval] over {seeds} evaluator "
            f"seed(s): {calibration['note']}.",
            "",
            "| model | file | rows | model log p(M) | true log p(x) | excess (nats) |",
            "|---|---|---|---|---|---|",
        ]
        for model in report["config"]["models"]:
            for name, entry in stored.items():
                row = entry["models"][model]
                lines.append(
                    f"| {model} | {name} | {entry['rows']} | "
                    f"{_cell(row['model_log_likelihood'])} | "
                    f"{entry['true_log_likelihood']:.2f} | {_cell(row['excess'])} |"
                )
        lines.append("")
    for name, entry in calibration["files"].items():
        if entry["status"] in ("missing", "naive"):
            lines.append(f"- {name}: {entry['note']}")
        elif entry["status"] == "decoded means":
            lines.append(f"- {name}: decoded means, no finite target (above)")
    if not stored or len(stored) < len(calibration["files"]):
        lines.append("")
    gaps = [g for g in calibration["gaps"] if g["recovered"] is not None]
    if gaps:
        lines += [
            "Recovered fraction: the model's E − twin gap of log p(M) as a fraction of the true "
            "gap on the same rows (the true gap's interval is over rows; the others' over "
            "evaluator seeds).",
            "",
            "| model | E − twin | rows | model gap (nats) | true gap (nats) | recovered |",
            "|---|---|---|---|---|---|",
        ]
        for gap in gaps:
            lines.append(
                f"| {gap['model']} | {gap['entangled']} − {gap['twin']} | {gap['rows']} | "
                f"{_cell(gap['model_gap'])} | {_cell(gap['true_gap'])} | "
                f"{_cell(gap['recovered'], 0, 100)} % |"
            )
        lines.append("")
        for gap in gaps:
            recovered, true = gap["recovered"], gap["true_gap"]
            interval = recovered["interval"]
            spread = (
                "1 evaluator seed: no interval"
                if interval is None
                else f"[{interval[0] * 100:.0f}, {interval[1] * 100:.0f}] over "
                f"{recovered['n']} evaluator seeds"
            )
            lines.append(
                f"- {gap['model']} recovers {recovered['mean'] * 100:.0f} % ({spread}) of the "
                f"{true['mean']:.2f} nats by which the truth separates {gap['entangled']} from "
                f"{gap['twin']} on these {gap['rows']} rows."
            )
        lines.append("")
    skipped = {(g["entangled"], g["twin"]): g["note"] for g in calibration["gaps"] if g["note"]}
    for (entangled, twin), note in skipped.items():
        lines.append(f"- {entangled} − {twin}: no recovered fraction ({note})")
    if skipped:
        lines.append("")
    return lines
