"""Run the ranking study: its jobs phase by phase, each a finished unit, resumable.

The study folder holds ``recipe.json`` and ``jobs/<phase>/<key[:12]>-…/``, one folder per job
(``mmgen.ranking.plan``). A job's outputs are written whole (``mmgen.atomic``) and its marker
``study-job.json`` last (``mmgen.study.run``'s), so a rerun after a kill does only the
unfinished jobs; the CVAE jobs are ``mmgen study``'s own (same keys, same code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mmgen import polymnist, probes
from mmgen.atomic import atomic_folder, folder_lock
from mmgen.checkpoint import holds_model
from mmgen.config import load_json, save_json
from mmgen.data import h5io
from mmgen.device import fixed_threads
from mmgen.export import export
from mmgen.metrics import subset_name
from mmgen.pixel_baseline import fusion_gain, pixel_baseline
from mmgen.ranking import multivae_steps as mv
from mmgen.ranking.plan import (
    EXPORT_DIR,
    NAIVE,
    PHASES,
    RankingPlan,
    plan_ranking,
)
from mmgen.ranking.recipe import MODALITIES, RankingRecipe
from mmgen.study import steps
from mmgen.study.plan import StudyJob
from mmgen.study.run import (
    JOBS_DIR,
    RECIPE_FILE,
    TRUTH_FILE,
    is_done,
    job_path,
    mark_done,
    truth_job,
)

log = logging.getLogger(__name__)

CLASSIFIER_FILE = "classifier-{m}.pt"
BASELINE_FILE = "pixel-baseline.json"  # per variant: mmgen.pixel_baseline's figures
PROBE_FILE = "latent-recovery.json"  # a fit's probes (mmgen.probes) and fusion gains
ACCURACY_FILE = "accuracy.json"  # each classifier's accuracy on each variant's test split
COHERENCE_FILE = "coherence.json"
MODEL_DIR = "model"
TaskCallback = Callable[[int, int, str], None]  # (jobs done, jobs in all, what runs now)


def run_ranking(
    recipe: RankingRecipe,
    out: Path | str,
    data_dir: Path | str | None = None,
    device: str = "auto",
    on_task: TaskCallback | None = None,
) -> RankingPlan:
    """Run every unfinished job of ``recipe`` into the study folder ``out``.

    Returns:
        The plan that ran (every job finished).
    """
    out = Path(out)
    plan = plan_ranking(recipe)
    everything = list(plan.jobs.values())
    out.mkdir(parents=True, exist_ok=True)
    with fixed_threads(recipe.multivae["threads"]), folder_lock(out):
        save_json(out / RECIPE_FILE, recipe.as_dict())
        for phase in PHASES:
            for job in plan.by_phase(phase):
                if is_done(out, job):
                    continue
                if on_task is not None:
                    done = sum(is_done(out, j) for j in everything)
                    on_task(done, len(everything), job.describe())
                log.info("%s", job.describe())
                _run_one(job, plan, out, data_dir, device)
        if on_task is not None:
            on_task(len(everything), len(everything), "done")
    return plan


def _path(out: Path, relative: str) -> Path:
    return out / JOBS_DIR / relative


def _run_one(
    job: StudyJob, plan: RankingPlan, out: Path, data_dir: Path | str | None, device: str
) -> None:
    """One job, in this process; marked finished at the end."""
    folder = job_path(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    spec = job.spec
    started = time.perf_counter()
    if job.kind == "cvae":
        resume = holds_model(folder)  # a killed run's epoch checkpoint: continue it
        steps.train_cvae_step(
            folder, spec["source"], {"cvae": spec["cvae"]}, spec["seed"], data_dir, device, resume
        )
    elif job.kind == "polymnist":
        config = steps.generate_config({"generate": spec["generate"]}, spec["seed"])
        polymnist.generate_polymnist(
            [_path(out, spec["cvae"])] * MODALITIES,
            folder / spec["file"],
            config,
            backgrounds=spec["backgrounds"],
            device=device,
            overwrite=True,
            allow_collapsed=spec["allow_collapsed"],
        )
    elif job.kind == "mix":
        steps.mix_step(
            _path(out, spec["parent"]), folder / spec["file"], spec["modality"], 1.0,
            spec["seed"], 0,
        )  # fmt: skip
    elif job.kind == "naive":
        polymnist.pair_polymnist(
            folder / spec["file"],
            modalities=MODALITIES,
            backgrounds=spec["backgrounds"],
            source=spec["source"],
            seed=spec["seed"],
            data_dir=data_dir,
            limit=spec["limit"],
            overwrite=True,
        )
    elif job.kind == "export":
        export(_path(out, spec["file"]), "polymnist", folder / spec["out"], overwrite=True)
    elif job.kind == "classifiers":
        _classifiers(job, out, folder)
    elif job.kind == "fit":
        _fit(job, out, folder, device)
    elif job.kind == "truth":
        truth_job(out, spec, folder, device)  # mmgen study's own
    elif job.kind == "baseline":
        _baseline(job, out, folder)
    elif job.kind == "probe":
        _probe(job, out, folder)
    else:
        raise ValueError(f"unknown job kind {job.kind!r}")
    save_json(folder / "timing.json", {"seconds": time.perf_counter() - started})
    mark_done(out, job)


def _export_folder(out: Path, job_folder: str) -> Path:
    return _path(out, job_folder) / EXPORT_DIR


def _classifiers(job: StudyJob, out: Path, folder: Path) -> None:
    """Train one classifier per modality on the naive train split; their test accuracies."""
    spec = job.spec
    rows = spec["rows"]
    train = mv.load_split(_export_folder(out, spec["train"]), "train", rows["train"])
    tests = {
        variant: mv.load_split(_export_folder(out, path), "test", rows["test"])
        for variant, path in spec["test"].items()
    }
    accuracies: dict[str, dict[str, float]] = {variant: {} for variant in tests}
    with atomic_folder(folder / "classifiers") as tmp:
        for m, images in train.data.items():
            classifier = mv.train_classifier(
                images, train.labels, spec["classifier"], _modality_seed(spec["seed"], m)
            )
            torch.save(classifier.state_dict(), tmp / CLASSIFIER_FILE.format(m=m))
            for variant, test in tests.items():
                accuracies[variant][m] = mv.accuracy(classifier, test.data[m], test.labels)
        save_json(tmp / ACCURACY_FILE, accuracies)


def _modality_seed(seed: int, modality: str) -> int:
    from mmgen import rng

    return rng.key_entropy(seed, "modality", modality)


def load_classifiers(folder: Path, modalities: list[str]) -> dict[str, torch.nn.Module]:
    """The classifiers of a finished classifiers job, by modality."""
    from multivae.metrics.classifiers.mmnist import ClassifierPolyMNIST

    found = {}
    for m in modalities:
        classifier = ClassifierPolyMNIST()
        state = torch.load(folder / "classifiers" / CLASSIFIER_FILE.format(m=m), weights_only=True)
        classifier.load_state_dict(state)
        found[m] = classifier.eval()
    return found


def _fit(job: StudyJob, out: Path, folder: Path, device: str) -> None:
    """Train one model on one variant's train split, then its coherences on the test split."""
    spec = job.spec
    data = _export_folder(out, spec["data"])
    train = mv.load_split(data, "train", spec["rows"]["train"])
    test = mv.load_split(data, "test", spec["rows"]["test"])
    started = time.perf_counter()
    model = mv.train_model(spec["model"], spec["multivae"], train, spec["seed"], device)
    trained = time.perf_counter()
    classifiers = load_classifiers(_path(out, spec["classifiers"]), list(train.data))
    values = mv.coherences(model, classifiers, test, spec["coherence"], spec["seed"])
    measured = time.perf_counter()
    with atomic_folder(folder / "result") as tmp:
        model.save(str(tmp / MODEL_DIR))
        save_json(
            tmp / COHERENCE_FILE,
            {
                "coherence": values,
                "seconds": {"train": trained - started, "coherence": measured - trained},
            },
        )


def _baseline(job: StudyJob, out: Path, folder: Path) -> None:
    """The pixel baseline (``mmgen.pixel_baseline``) of each file: raw composites → z."""
    spec = job.spec
    result = {}
    for variant, path in spec["files"].items():
        train, test = (
            h5io.read_split(_path(out, path), split, limit=spec["rows"][split])
            for split in ("train", "test")
        )
        result[variant] = pixel_baseline(train, test)
    save_json(folder / BASELINE_FILE, result)


def _probe(job: StudyJob, out: Path, folder: Path) -> None:
    """mmgen's latent recovery of a fit: probes from its posterior means to the true codes."""
    spec = job.spec
    data, rows = _export_folder(out, spec["data"]), spec["rows"]
    train = mv.load_split(data, "train", rows["train"])
    test = mv.load_split(data, "test", rows["test"])
    model = mv.load_model(_path(out, spec["fit"]) / "result" / MODEL_DIR)
    train_means, test_means = mv.posterior_means(model, train), mv.posterior_means(model, test)
    codes = probes.read_codes(_path(out, spec["file"]), rows["train"], rows["test"])
    if codes is None:
        raise ValueError(f"{spec['file']} stores no true code z: no probe")
    recovery = probes.latent_recovery(train_means, train.labels, test_means, test.labels, codes)
    joint = subset_name(list(train.data))
    gains = fusion_gains(recovery, list(train.data))
    save_json(folder / PROBE_FILE, {"recovery": recovery, "fusion_gain": gains, "joint": joint})


def fusion_gains(recovery: dict[str, Any], modalities: list[str]) -> dict[str, float]:
    """Per probe, ``R²(joint → z) − max_m R²(m → z)`` of a ``latent_recovery`` result."""
    joint = subset_name(modalities)
    return {
        probe: fusion_gain(
            recovery[joint]["z"][probe]["r2"], [recovery[m]["z"][probe]["r2"] for m in modalities]
        )
        for probe in probes.PROBES
    }


def fit_result(out: Path, plan: RankingPlan, key: str) -> dict[str, Any]:
    """A finished fit job's ``{"coherence": {metric: value}, "seconds": ...}``."""
    return load_json(job_path(out, plan.jobs[key]) / "result" / COHERENCE_FILE)


def job_result(out: Path, plan: RankingPlan, key: str, name: str) -> dict[str, Any]:
    """The JSON ``name`` (``TRUTH_FILE``, ``BASELINE_FILE``, ``PROBE_FILE``) of a finished job."""
    return load_json(job_path(out, plan.jobs[key]) / name)


def classifier_accuracy(out: Path, plan: RankingPlan, replicate: int) -> dict[str, Any]:
    """A replicate's classifier accuracies: ``{variant: {modality: accuracy}}``."""
    job = plan.jobs[plan.classifiers[replicate]]
    return load_json(job_path(out, job) / "classifiers" / ACCURACY_FILE)


__all__ = [
    "BASELINE_FILE",
    "NAIVE",
    "PROBE_FILE",
    "TRUTH_FILE",
    "classifier_accuracy",
    "fit_result",
    "job_result",
    "load_classifiers",
    "run_ranking",
]
