"""Report assembly: ``report.json`` of an evaluation from its stored jobs (``mmgen.jobs``).

Everything is read from the job folders in sorted order, so the report is the same whatever
order (or rank) the jobs finished in: per-seed figures, their mean and sd over seeds, the
calibration against each file's stored ground truth (:mod:`.calibration`), the verdict
of docs/method.md (``mmgen.verdict``), the quality of each file's own images
(``mmgen.measure.data_quality``) and the latent figures (``mmgen.plots``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen import __version__, jobs, plots
from mmgen.classifiers import TrainedClassifier, classifier_cache_dir
from mmgen.data.sources import load_split
from mmgen.device import environment
from mmgen.jobs import Job
from mmgen.measure import data_quality
from mmgen.report.calibration import calibrate, file_truth
from mmgen.runner import DatasetInfo, load_dataset
from mmgen.verdict import summarise_seeds, verdict


def clear_report(out: Path, models: Sequence[str]) -> None:
    """Remove the previous report before writing the new one: ``report.json`` first (it is
    written last, so a folder without it is an unfinished evaluation that the same command
    completes), and the latent figures of models this command does not report."""
    (out / "report.json").unlink(missing_ok=True)
    keep = {f"latent-{model}.png" for model in models}
    for figure in out.glob("latent-*.png"):
        if figure.name not in keep:
            figure.unlink()


def assemble_report(
    datasets: Sequence[DatasetInfo],
    plan: Sequence[Job],
    config: Mapping[str, Any],
    out: Path,
    by_source: Mapping[str, TrainedClassifier],
    device: torch.device,
    device_type: torch.device,
    data_dir: Path | str | None,
    cache_dir: Path | str | None,
) -> dict[str, Any]:
    """The report from the stored jobs: per-seed figures, mean and sd, the verdict, plots.

    ``config`` is the evaluation's config record (``to_dict(EvaluateConfig)``): written into the
    report, and its ``models``, ``seeds``, ``limit``, ``test_limit`` and ``eval_batch_size`` are
    the fields read here.

    Everything is read from the job folders in sorted order, so the report is the same
    whatever order (or rank) the jobs finished in.
    """
    real_features = {
        label: classifier.features(
            load_split(
                classifier.source, "test", data_dir=data_dir, classes=classifier.classes
            ).as_tensors(device)["images"]
        )
        for label, classifier in by_source.items()
    }
    models, seeds = list(config["models"]), list(config["seeds"])
    report: dict[str, Any] = {
        "mmgen_version": __version__,
        "config": dict(config),
        "seeds": seeds,
        "device": str(device_type),
        # device name, torch / CUDA, determinism, and the CPU threads every job ran with
        "environment": {**environment(device_type), "threads": torch.get_num_threads()},
        "data_dir": None if data_dir is None else str(data_dir),
        "classifier_cache": str(classifier_cache_dir(cache_dir)),
        "classifiers": jobs.first_classifier_summaries(
            out, {spec: c.summary() for spec, c in by_source.items()}
        ),  # recorded when the folder's first run began (below): the same on a resumed run
        "datasets": {},
    }
    by_job = {(job.dataset, job.model, job.seed): job for job in plan}
    per_seed: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    latents: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in models}
    test_labels: dict[str, np.ndarray] = {}
    truths: dict[str, dict[str, Any]] = {}  # file → its truth on the evaluated test rows
    first_seed = seeds[0]
    for info in datasets:
        data = load_dataset(info, config["limit"], config["test_limit"], device)
        test_labels[info.name] = data.test_labels
        truths[info.name] = file_truth(info, data.test, len(data.test["labels"]))
        classifiers = {m: by_source[info.sources[m].label] for m in info.modalities}
        entry: dict[str, Any] = {
            **info.summary(),
            "num_train": len(data.train["labels"]),
            "num_test": len(data.test["labels"]),
            "quality": data_quality(
                {m: data.test[m] for m in info.modalities},
                data.test["labels"],
                classifiers,
                real_features,
                config["eval_batch_size"],
            ),
            "models": {},
            "sd": {},
            "seeds": {str(seed): {} for seed in seeds},
        }
        per_seed[info.name] = {}
        for model in models:
            per_seed[info.name][model] = {}
            for seed in seeds:
                job = by_job[info.name, model, seed]
                record, means = jobs.read_job(out, job)
                folder = f"{jobs.JOBS_DIR}/{job.folder_name}"
                per_seed[info.name][model][seed] = record["figures"]
                entry["seeds"][str(seed)][model] = {
                    **record["figures"],
                    "model_config": record["model_config"],
                    "history": record["history"],
                    "job": folder,
                    "figures": {"curves": f"{folder}/{jobs.CURVES_FILE}"},
                }
                if seed == first_seed:
                    latents[model][info.name] = means
            mean, sd = summarise_seeds([per_seed[info.name][model][s] for s in seeds])
            first = entry["seeds"][str(first_seed)][model]
            entry["models"][model] = {**mean, "model_config": first["model_config"]}
            entry["sd"][model] = sd
        report["datasets"][info.name] = entry

    report["calibration"] = calibrate(datasets, truths, per_seed, models, seeds)
    report["verdict"] = verdict(
        per_seed, {info.name: info.kind for info in datasets}, models, seeds
    )
    report["figures"] = {}
    for model_name, panels in latents.items():
        figure = f"latent-{model_name}.png"
        plots.latent_grid(
            panels,
            test_labels,
            datasets[0].class_names,
            out / figure,
            f"{model_name}: test-set posterior means by encoder (seed {first_seed})",
        )
        report["figures"][model_name] = figure
    return report
