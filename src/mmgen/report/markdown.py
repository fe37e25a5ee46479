"""The evaluation report: ``report.json`` (every figure) and ``report.md`` (tables to read).

``report.md`` has one table per metric family of docs/method.md with the datasets side by side as
columns, so MNIST-E, MNIST-ME and the naive pairing compare at a glance; the real-data
classifiers' test accuracies (the ceilings) sit beside every classifier-based figure. Modalities
are named by position (``a``, ``b``, ``c``…) so that rows line up across files whose modality
names differ; a legend per dataset maps the letters back.

Both files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmgen.atomic import atomic_path
from mmgen.config import save_json
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, describe
from mmgen.probes import code_modality
from mmgen.report.calibration import render_calibration, render_means_statements
from mmgen.verdict import NO_INTERVAL

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MISSING = "n/a"
NO_UNIMODAL = "Models without uni-modal encoders (plain JMVAE) have no rows here."
RECOVERY_NOTE = (
    "Probes fitted per class on the train split's posterior means, scored on the test split: "
    "R² = 1 − Σ‖z − ẑ‖² / Σ‖z − z̄‖² (1: the code is recovered; about 0: nothing beyond the "
    "class). `S → z`: the encoder of S against the stored code (in a mixed file, the code of "
    "the non-permuted modalities); `S → z[x]`: against the code that the permuted modality x "
    "of each tuple was decoded from (mixed files only). On MNIST-ME the encoder of x should "
    "recover z[x] and not z."
)
_SEPARATORS = re.compile(r"(\|\||->|\||\+)")


def write_report(out: Path | str, report: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out``; returns both paths."""
    out = Path(out)
    json_path, markdown_path = out / REPORT_JSON, out / REPORT_MD
    save_json(json_path, dict(report))
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(render_markdown(report))
    return json_path, markdown_path


def letter_key(key: str, letters: Mapping[str, str]) -> str:
    """A metric key with modality names replaced by letters: ``mnist+fashion`` → ``ab``,
    ``mnist|fashion`` → ``a|b``, ``mnist->fashion`` → ``a→b``, ``a+b||a`` → ``ab‖a``."""
    parts = _SEPARATORS.split(key)
    rendered = []
    for part in parts:
        if part == "+":
            continue
        rendered.append({"->": "→", "||": "‖"}.get(part, letters.get(part, part)))
    return "".join(rendered)


def verdict_key(key: str, letters: Mapping[str, str]) -> str:
    """A verdict row's key in letters: ``mnist+fashion`` → ``ab``; a latent-recovery key
    ``encoder/target/probe`` → ``ab → z[b] (class_knn)``."""
    parts = key.split("/")
    if len(parts) != 3:
        return "/".join(letter_key(part, letters) for part in parts)
    encoder, target, probe = parts
    modality = code_modality(target)
    code = "z" if modality is None else f"z[{letters.get(modality, modality)}]"
    return f"{letter_key(encoder, letters)} → {code} ({probe})"


class _MeanSd:
    """A table cell over seeds: the mean and the standard deviation of the seeds' values."""

    def __init__(self, mean: Any, sd: Any) -> None:
        self.mean, self.sd = mean, sd


def _format(value: Any, digits: int) -> str:
    if isinstance(value, _MeanSd):
        if not isinstance(value.mean, int | float) or not isinstance(value.sd, int | float):
            return _format(value.mean, digits)
        return f"{_format(value.mean, digits)} ± {_format(value.sd, digits)}"
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def _table(
    report: Mapping[str, Any],
    row_keys: Callable[[Mapping[str, Any], str, Mapping[str, str]], Mapping[str, Any]],
    digits: int,
    per_model: bool = True,
) -> list[str]:
    """Rows ``(model, letter key)`` × columns datasets, from ``row_keys(entry, model, letters)``
    that maps letter keys to values for one dataset and model (``""`` key: one row per model).
    Without ``per_model`` the rows are the keys alone (``model`` is then ``""``)."""
    datasets = report["datasets"]
    names = list(datasets)
    models = list(report["config"]["models"]) if per_model else [""]
    # Several seeds: a model's cells read "mean ± sd" over the seeds (the sd tree of "sd").
    with_sd = per_model and len(report.get("seeds", ())) > 1
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    notes: dict[tuple[str, str], str] = {}  # (model, dataset) → why a whole family is missing
    for dataset, entry in datasets.items():
        letters = entry["letters"]
        for model in models:
            values = row_keys(entry, model, letters)
            if with_sd:
                spreads = row_keys({**entry, "models": entry.get("sd", {})}, model, letters)
                values = {key: _MeanSd(value, spreads.get(key)) for key, value in values.items()}
            if set(values) == {""} and isinstance(_mean(values[""]), str):
                notes[model, dataset] = _mean(values[""])
            for key, value in values.items():
                cells.setdefault((model, key), {})[dataset] = value
    # An explanation ("n/a: file has no true z", from the figures' notes) fills that dataset's
    # cells in the model's rows.
    for model, dataset in notes:
        if any(m == model and key for m, key in cells):
            del cells[model, ""][dataset]
            for (m, key), values in cells.items():
                if m == model and key:
                    values.setdefault(dataset, notes[model, dataset])
    # Rows in model order, then the largest subset first (``ab`` before ``a``), then by name:
    # report.json is written with sorted keys, so its own order is not the natural one.
    order = {model: index for index, model in enumerate(models)}
    rows = sorted(
        (row for row, values in cells.items() if values),
        key=lambda row: (order[row[0]], -len(re.match(r"[a-z]*", row[1]).group()), row[1]),
    )
    cells = {row: cells[row] for row in rows}
    with_key = any(key for _, key in cells)
    header = [*(["model"] if per_model else []), *(["figure"] if with_key else []), *names]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (model, key), values in cells.items():
        row = [*([model] if per_model else []), *([key] if with_key else [])]
        row += [_format(values.get(name), digits) for name in names]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    return lines


def _mean(value: Any) -> Any:
    return value.mean if isinstance(value, _MeanSd) else value


def _metric(entry: Mapping[str, Any], model: str, *path: str) -> Any:
    value: Any = entry["models"].get(model)
    for part in path:
        if not isinstance(value, Mapping):
            return value
        value = value.get(part)
    return value


def _lettered(
    entry: Mapping[str, Any], model: str, letters: Mapping[str, str], *path: str
) -> dict[str, Any]:
    value = _metric(entry, model, *path)
    if value is None:
        return _explanation(entry, model, path[0])
    if not isinstance(value, Mapping):
        return {}
    return {letter_key(k, letters): v for k, v in value.items()}


def _explanation(entry: Mapping[str, Any], model: str, figure: str) -> dict[str, Any]:
    """``{"": "n/a: <why>"}`` for a figure a job could not compute (``None``) and explained in
    its ``notes``; ``{}`` when there is no note."""
    note = _metric(entry, model, "notes", figure)
    return {"": f"{MISSING}: {note}"} if isinstance(note, str) else {}


def _recovery(probe: str) -> Callable[..., dict[str, Any]]:
    """Rows ``S → z`` / ``S → z[b]`` of one latent-recovery probe of ``mmgen.probes``: the
    encoder of subset ``S`` against a code; a kNN cell names its ``k``."""

    def rows(entry: Mapping[str, Any], model: str, letters: Mapping[str, str]) -> dict:
        value = _metric(entry, model, "latent_recovery")
        if value is None:
            return _explanation(entry, model, "latent_recovery")
        if not isinstance(value, Mapping):
            return {}
        cells: dict[str, Any] = {}
        for encoder, targets in value.items():
            for target, fits in targets.items():
                modality = code_modality(target)
                code = "z" if modality is None else f"z[{letters.get(modality, modality)}]"
                fit = fits[probe]
                cell = fit["r2"] if "k" not in fit else f"{_format(fit['r2'], 3)} (k={fit['k']})"
                cells[f"{letter_key(encoder, letters)} → {code}"] = cell
        return cells

    return rows


def _ceilings(report: Mapping[str, Any]) -> str:
    parts = [
        f"{spec} {summary['test_accuracy']:.4f}" for spec, summary in report["classifiers"].items()
    ]
    return "Classifier ceilings (test accuracy on the real test split): " + ", ".join(parts) + "."


def render_markdown(report: Mapping[str, Any]) -> str:
    """The human-readable report: setup, then one table per metric family."""
    config = report["config"]
    datasets = report["datasets"]
    lines = [
        "# mmgen evaluate",
        "",
        *render_means_statements(report),
        f"mmgen {report['mmgen_version']}, device {report['device']}, {_seeds(report)}; "
        f"models {', '.join(config['models'])}; {config['epochs']} epochs, batch "
        f"{config['batch_size']}, Adam lr {config['lr']}; K = {config['k']}, "
        f"N_w = {config['prior_samples']}, joint-coherence samples {config['joint_samples']}"
        + (f"; first {config['limit']} tuples per split" if config.get("limit") else "")
        + ".",
        "",
        *render_calibration(report),
        *render_verdict(report),
        "## Datasets",
        "",
        "| dataset | kind | modalities | sources | train | test | true z | sha256 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in datasets.items():
        letters = entry["letters"]
        shapes = entry.get("image_shapes", {})  # reports before #10: every modality 1×28×28
        modalities = ", ".join(
            f"{letters[m]} = {m} ({describe(shapes.get(m, DEFAULT_IMAGE_SHAPE))})"
            for m in entry["modalities"]
        )
        sources = ", ".join(f"{letters[m]}: {s}" for m, s in entry["sources"].items())
        lines.append(
            f"| {name} | {entry['kind']} | {modalities} | {sources} | {entry['num_train']} | "
            f"{entry['num_test']} | {'yes' if entry['has_latent'] else 'no'} | "
            f"{entry['sha256'][:12]} |"
        )
    lines += [
        "",
        "## Real-data classifiers (the ceilings)",
        "",
        "| source | test accuracy | cache |",
    ]
    lines.append("|---|---|---|")
    for spec, summary in report["classifiers"].items():
        origin = "loaded" if summary["loaded_from_cache"] else "trained"
        lines.append(f"| {spec} | {summary['test_accuracy']:.4f} | {origin}: {summary['cache']} |")

    def quality(field: str, ceiling: bool) -> Callable[..., dict[str, Any]]:
        def rows(entry: Mapping[str, Any], model: str, letters: Mapping[str, str]) -> dict:
            return {
                f"{letters[m]} ({q['source']}"
                + (f", ceiling {q['ceiling']:.3f})" if ceiling else ")"): q[field]
                for m, q in entry["quality"].items()
            }

        return rows

    sections: Sequence[tuple[str, str, Callable[..., Mapping[str, Any]], int]] = (
        (
            "Test ELBO L_S (nats; encode from S, score all modalities)",
            "",
            lambda e, m, letters: _lettered(e, m, letters, "elbo"),
            2,
        ),
        (
            f"Importance-weighted log p(M) (nats, K = {config['k']})",
            "",
            lambda e, m, letters: {"": _metric(e, m, "log_likelihood")},
            2,
        ),
        (
            f"Conditional log p(m | rest) (nats, K = {config['k']}, N_w = "
            f"{config['prior_samples']})",
            "",
            lambda e, m, letters: _lettered(e, m, letters, "conditional"),
            2,
        ),
        (
            "Cross coherence (class-balanced accuracy of the decoded mean)",
            _ceilings(report) + " " + NO_UNIMODAL,
            lambda e, m, letters: _lettered(e, m, letters, "coherence", "cross"),
            3,
        ),
        (
            f"Joint coherence (all classifiers agree, {config['joint_samples']} prior samples)",
            _ceilings(report),
            lambda e, m, letters: {"": _metric(e, m, "coherence", "joint")},
            3,
        ),
        (
            "Posterior agreement: KL(q(z|S) ‖ q(z|S')) (nats)",
            NO_UNIMODAL,
            lambda e, m, letters: {
                k: v["kl"] for k, v in _lettered(e, m, letters, "posterior", "divergence").items()
            },
            3,
        ),
        (
            "Posterior agreement: Jensen–Shannon divergence (nats, at most ln 2 ≈ 0.693)",
            NO_UNIMODAL + " A Monte-Carlo estimate: values within noise of 0 may be negative.",
            lambda e, m, letters: {
                k: v["jsd"] for k, v in _lettered(e, m, letters, "posterior", "divergence").items()
            },
            3,
        ),
        (
            "Gaussian naive Bayes on test-set posterior means (accuracy)",
            "",
            lambda e, m, letters: _lettered(e, m, letters, "posterior", "naive_bayes"),
            3,
        ),
        (
            "Latent recovery: per-class affine probe (held-out R²)",
            RECOVERY_NOTE,
            _recovery("class_affine"),
            3,
        ),
        (
            "Latent recovery: per-class k-nearest-neighbour probe (held-out R²)",
            "The k of each cell was chosen by leave-one-out error on the train split.",
            _recovery("class_knn"),
            3,
        ),
    )
    lines += ["", "## Quality of the files' own images", ""]
    lines += ["Accuracy of the real-data classifier on each file's test images (intended class):"]
    lines += [""] + _table(report, quality("classifier_accuracy", True), 3, per_model=False)
    lines += ["", "Fréchet distance to the real test images (classifier feature space):", ""]
    lines += _table(report, quality("frechet_distance", False), 2, per_model=False)
    for heading, note, rows, digits in sections:
        lines += ["", f"## {heading}", ""]
        if note:
            lines += [note, ""]
        lines += _table(report, rows, digits)

    lines += ["", "## Figures", ""]
    for model, figure in report.get("figures", {}).items():
        lines.append(f"- {model}, latent means per encoder: ![{model}]({figure})")
    for name, entry in datasets.items():
        for seed, results in entry["seeds"].items():
            for model, result in results.items():
                curves = result["figures"]["curves"]
                lines.append(f"- {model} on {name}, seed {seed}, training curves: {curves}")
    return "\n".join(lines) + "\n"


def _seeds(report: Mapping[str, Any]) -> str:
    seeds = list(report["seeds"])
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): tables show mean ± sd"


def render_verdict(report: Mapping[str, Any]) -> list[str]:
    """The verdict table (docs/method.md), one row per model, comparison and figure."""
    rows = report.get("verdict", [])
    seeds = len(report["seeds"])
    lines = [
        "## Verdict: entangled minus the baselines, paired by seed",
        "",
        f"d_s = f(E, s) − f(other, s) over {seeds} seed(s): the mean, a 95 % Student-t interval "
        "on the paired differences, and the seeds whose d_s lies on the side the figure's "
        "direction expects (higher is better: d_s > 0; lower is better: d_s < 0).",
        "",
    ]
    if not rows:
        return lines + ["No entangled file with a mixed or naive file to compare it with.", ""]
    lines += [
        "| model | E − other | figure | better | mean d | 95 % interval | seeds agreeing |",
        "|---|---|---|---|---|---|---|",
    ]

    # Within a figure, the largest subset first (``ab`` before ``a``), as in the other tables.
    def order(row: Mapping[str, Any]) -> tuple[int, str]:
        letters = report["datasets"][row["entangled"]]["letters"]
        key = letter_key(row["key"], letters)
        return (-len(re.match(r"[a-z]*", key).group()), key)

    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["entangled"], row["other"], row["figure"]), []).append(
            row
        )
    rows = [row for group in groups.values() for row in sorted(group, key=order)]
    for row in rows:
        letters = report["datasets"][row["entangled"]]["letters"]
        figure = row["figure"] + (f" {verdict_key(row['key'], letters)}" if row["key"] else "")
        interval = row["interval"]
        shown = NO_INTERVAL if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"
        cells = [
            row["model"],
            f"{row['entangled']} − {row['other']}",
            figure,
            row["better"],
            _format(row["mean"], 3),
            shown,
            f"{row['agree']}/{row['n']} ({row['expected']})",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines + [""]
