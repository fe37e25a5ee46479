"""Run a study: its jobs phase by phase, each stored as a unit, resumable, over torchrun ranks.

The study folder ``DIR`` holds ``recipe.json`` (the validated recipe the jobs were planned
from) and ``jobs/<phase>/<key[:12]>-…/`` one folder per job. A job folder is finished when it
holds ``study-job.json`` (its spec and key), written last; the pipeline's own outputs inside it
are written whole (``mmgen.atomic``; a CVAE keeps its epoch checkpoints and resumes from them,
an evaluation keeps its finished (file, model, seed) jobs). A rerun after a kill does only the
unfinished jobs; a rerun with a changed recipe does only the jobs whose keys changed.

Under torchrun the CVAE, generate, pair and mix jobs of a phase are shared round robin over the
ranks (each runs whole in one process), and every evaluation runs on all ranks together,
``evaluate`` sharing its own jobs among them. Rank 0 writes ``recipe.json`` and the markers of
the evaluations.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmgen.atomic import folder_lock
from mmgen.checkpoint import holds_model
from mmgen.classifiers import classifier_cache_dir
from mmgen.config import load_json, save_json
from mmgen.device import fixed_threads
from mmgen.distributed import World
from mmgen.evaluate import REPORT_BYTES
from mmgen.resources import MIB, require_output_space
from mmgen.study import steps
from mmgen.study.plan import ENTANGLED, NAIVE, PHASES, Plan, StudyJob, plan_study
from mmgen.study.recipe import DEFAULT_THREADS, Recipe

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
EXTRAS_FILE = "study-extras.json"  # an evaluation's subset and pixel baseline
TRUTH_FILE = "truth-summaries.json"  # a truth job's summary of every file
RECIPE_FILE = "recipe.json"
# Rough disk figures of the checks before work (check_output_places): a 28×28 CVAE folder being
# replaced, and a classifier's (mmgen.resources.checkpoint_bytes: about 57 MB and 9 MB).
CVAE_BYTES = 64 * MIB
CLASSIFIER_BYTES = 16 * MIB
MARKER_FILE = "study-job.json"
TaskCallback = Callable[[int, int, str], None]  # (jobs done, jobs in all, what runs now)


def job_path(out: Path, job: StudyJob) -> Path:
    return out / JOBS_DIR / job.folder


def is_done(out: Path, job: StudyJob) -> bool:
    """Whether ``job``'s marker is there and names it (an evaluation: with all its seeds)."""
    marker = job_path(out, job) / MARKER_FILE
    if not marker.is_file():
        return False
    recorded = load_json(marker)
    return recorded.get("key") == job.key and recorded.get("spec") == job.spec


def mark_done(out: Path, job: StudyJob) -> None:
    save_json(
        job_path(out, job) / MARKER_FILE, {"key": job.key, "kind": job.kind, "spec": job.spec}
    )


def run_study(
    recipe: Recipe,
    out: Path | str,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    device: str = "auto",
    world: World | None = None,
    on_task: TaskCallback | None = None,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> Plan:
    """Run every unfinished job of ``recipe`` into the study folder ``out``.

    Args:
        recipe: a validated recipe (``mmgen.study.recipe.load_recipe``).
        out: the study folder (created; reused by a rerun).
        data_dir: where the real sources are; else the usual search.
        cache_dir: the classifier cache of ``evaluate``.
        device: ``auto``, ``cpu`` or ``cuda``.
        world: this process's place among torchrun's (default: one process).
        on_task: progress ``(jobs done, jobs in all, current job)``; rank 0 only.
        on_step: called after every training step of any job (``{"batch": size}``).

    Returns:
        The plan that ran (every job finished).
    """
    world = world or World()
    out = Path(out)
    plan = plan_study(recipe)
    everything = list(plan.jobs.values())
    with folder_lock(out) if world.is_main else contextlib.nullcontext():
        if world.is_main:
            check_output_places(out, cache_dir, [j for j in everything if not is_done(out, j)])
            save_json(out / RECIPE_FILE, recipe.as_dict())
        world.barrier()

        def show(description: str) -> None:
            log.info("%s", description)
            if on_task is not None and world.is_main:
                done = sum(is_done(out, job) for job in everything)
                on_task(done, len(everything), description)

        for phase in PHASES:
            pending = None
            if world.is_main:
                pending = [j.key for j in plan.by_phase(phase) if not is_done(out, j)]
            pending = world.broadcast(pending)
            for index, key in enumerate(pending):
                job = plan.jobs[key]
                if phase == "evaluate":
                    show(job.describe())
                    _evaluate(job, out, data_dir, cache_dir, device, world, on_step)
                elif world.owns(index):
                    show(job.describe())
                    _run_one(job, plan, out, data_dir, device, on_step)
            world.barrier()
        show("done")
    return plan


def check_output_places(out: Path, cache_dir: Path | str | None, pending: list[StudyJob]) -> None:
    """Refuse a full or read-only ``--out``, or ``--cache-dir`` while evaluations are to run,
    before the first job: not when a CVAE is saved or a classifier is cached, minutes later.

    Rough figures: a CVAE checkpoint for every CVAE job still to train, and two classifiers
    (the cache check of ``evaluate`` repeats with exact figures before each classifier trains).
    """
    cvaes = sum(job.kind == "cvae" for job in pending)
    require_output_space(out, "--out", REPORT_BYTES + cvaes * CVAE_BYTES, "the study's jobs")
    if any(job.kind == "evaluate" for job in pending):
        require_output_space(
            classifier_cache_dir(cache_dir), "--cache-dir", 2 * CLASSIFIER_BYTES, "classifiers"
        )


def _run_one(
    job: StudyJob,
    plan: Plan,
    out: Path,
    data_dir: Path | str | None,
    device: str,
    on_step: Callable[[dict[str, float]], None] | None,
) -> None:
    """One CVAE, generate, pair or mix job, in this process; marked finished at the end."""
    folder = job_path(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    with fixed_threads(job.spec.get("threads", DEFAULT_THREADS)):
        _dispatch(job, plan, out, folder, data_dir, device, on_step)
    mark_done(out, job)


def _dispatch(
    job: StudyJob,
    plan: Plan,
    out: Path,
    folder: Path,
    data_dir: Path | str | None,
    device: str,
    on_step: Callable[[dict[str, float]], None] | None,
) -> None:
    """Run ``job``'s step into ``folder``."""
    spec = job.spec
    if job.kind == "cvae":
        tables = {"cvae": spec["cvae"]}
        resume = holds_model(folder)  # a killed run's epoch checkpoint: continue it
        steps.train_cvae_step(
            folder, spec["source"], tables, spec["seed"], data_dir, device, resume, on_step
        )
    elif job.kind == "generate":
        cvaes = [out / JOBS_DIR / name for name in spec["cvaes"]]
        steps.generate_step(
            cvaes, folder / spec["file"], {"generate": spec["generate"]}, spec["seed"], device
        )
    elif job.kind == "mix":
        parent = plan.jobs[job.needs[0]]
        steps.mix_step(
            job_path(out, parent) / parent.spec["file"],
            folder / spec["file"],
            spec["modality"],
            spec["fraction"],
            spec["seed"],
            spec["block_codes"],
        )
    elif job.kind == "truth":
        truth_job(out, spec, folder, device)
    elif job.kind == "pair":
        tables = {"sources": spec["sources"], "twins": {"naive_limit": spec["limit"]}}
        steps.pair_step(folder / spec["file"], tables, spec["seed"], data_dir)
    else:
        raise ValueError(f"unknown job kind {job.kind!r}")


def _evaluate(
    job: StudyJob,
    out: Path,
    data_dir: Path | str | None,
    cache_dir: Path | str | None,
    device: str,
    world: World,
    on_step: Callable[[dict[str, float]], None] | None,
) -> None:
    """One evaluation on every rank together; rank 0 marks it finished.

    Fewer rows than a split are moved to counts that keep the marginals of E and its twins
    (``steps.subset_rows``); rank 0 then adds the model-free pixel baseline of E on the same
    rows (``study-extras.json``, written before the marker).
    """
    spec = job.spec
    paths = {name: out / JOBS_DIR / path for name, path in spec["files"].items()}
    generated = [path for name, path in paths.items() if name != NAIVE]
    evaluate, subset = steps.subset_rows(
        generated, {"evaluate": spec["evaluate"], "twins": {"subset": spec["subset"]}}
    )
    tables = {"evaluate": {**evaluate, "models": spec["models"]}}
    steps.evaluate_step(
        list(paths.values()),
        job_path(out, job),
        tables,
        spec["seeds"],
        data_dir,
        cache_dir,
        device,
        world,
        on_step,
    )
    if world.is_main:
        baseline = steps.pixel_baseline_step(
            paths[ENTANGLED], evaluate["limit"], evaluate["test_limit"]
        )
        save_json(job_path(out, job) / EXTRAS_FILE, {"subset": subset, "pixel_baseline": baseline})
        mark_done(out, job)


def evaluation_report(out: Path, job: StudyJob) -> dict[str, Any]:
    """The report of a finished evaluation job."""
    return load_json(steps.report_path(job_path(out, job)))


def truth_job(out: Path, spec: dict[str, Any], folder: Path, device: str) -> None:
    """A truth job (``spec``: ``files`` by name, ``truth``, ``decode``): every file's truth,
    stored beside it, and their summaries in ``TRUTH_FILE``."""
    paths = [out / JOBS_DIR / path for path in spec["files"].values()]
    tables = {"truth": spec["truth"], "generate": {"decode": spec["decode"]}}
    summaries = steps.truth_step(paths, tables, device)
    save_json(folder / TRUTH_FILE, dict(zip(spec["files"], summaries, strict=True)))


def truth_summaries(out: Path, job: StudyJob) -> dict[str, Any]:
    """A finished truth job's summaries, by dataset name (``e``, ``me``, ``me-f0.5``…)."""
    return load_json(job_path(out, job) / TRUTH_FILE)


def evaluation_extras(out: Path, job: StudyJob) -> dict[str, Any]:
    """A finished evaluation's rows (``subset``) and E's pixel baseline (``pixel_baseline``)."""
    return load_json(job_path(out, job) / EXTRAS_FILE)
