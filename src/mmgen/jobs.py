"""Evaluation jobs: one (dataset, model, seed) trained and measured, stored as soon as it ends.

An evaluation of several seeds × models × datasets is long; each of its units is a *job* whose
result is written into the report folder the moment it finishes, so that a kill loses at most the
jobs under way and a rerun of the same command redoes only those (docs/evaluate.md, "Jobs").

A job is named by its *key*: the SHA-256 of the canonical JSON of everything that determines its
result, namely the dataset's checksum, the model's name and config, the seed and the settings
(every ``EvaluateConfig`` field that affects a job, the device type and the classifiers' cache
keys). Its folder ``jobs/<dataset sha256[:12]>-<model>-s<seed>-<key[:12]>/`` holds:

    model/          the trained model (a model folder of mmgen.checkpoint, docs/checkpoints.md)
    means.npz       the test-set posterior means per encoder (the latent plots)
    curves.png      the training curves
    figures.json    {"job": ..., "settings": ..., "figures": ..., "model_config", "history"}

written as one unit (``mmgen.atomic.atomic_folder``), ``figures.json`` last: a folder with it is
a finished job. ``jobs/settings.json`` (the manifest) records the settings the folder's jobs were
computed with, so that a rerun with other settings says which differ instead of mixing results;
``jobs/classifiers.json`` the classifiers' report records as the folder's first run saw them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmgen.atomic import atomic_folder
from mmgen.config import load_json, save_json
from mmgen.errors import UsageError

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
MANIFEST_FILE = "settings.json"
CLASSIFIERS_FILE = "classifiers.json"
FIGURES_FILE = "figures.json"
MEANS_FILE = "means.npz"
MODEL_DIR = "model"
CURVES_FILE = "curves.png"
TIMING_FILE = "timing.json"  # wall-clock seconds of training and measuring; not in the report
MANIFEST_FORMAT = "mmgen-evaluate-jobs"
MANIFEST_VERSION = 1


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value``: sorted keys, no spaces (what a key hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def job_key(
    dataset_sha256: str,
    model: str,
    model_config: Mapping[str, Any],
    seed: int,
    settings: Mapping[str, Any],
) -> str:
    """The hex SHA-256 naming a job: equal exactly when everything that determines it is."""
    identity = {
        "dataset_sha256": dataset_sha256,
        "model": model,
        "model_config": dict(model_config),
        "seed": int(seed),
        "settings": dict(settings),
    }
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


@dataclass(frozen=True, order=True)
class Job:
    """One (dataset, model, seed) of an evaluation; ordered by dataset, model, seed."""

    dataset: str  # the dataset's name in the report
    model: str  # a key of mmgen.models.registry.MODELS
    seed: int
    dataset_sha256: str
    key: str  # job_key(...)

    @property
    def folder_name(self) -> str:
        """``<dataset sha256[:12]>-<model>-s<seed>-<key[:12]>``."""
        return f"{self.dataset_sha256[:12]}-{self.model}-s{self.seed}-{self.key[:12]}"

    def describe(self) -> str:
        """How progress bars and logs name the job."""
        return f"{self.dataset} {self.model} seed {self.seed}"

    def identity(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dataset_sha256": self.dataset_sha256,
            "model": self.model,
            "seed": self.seed,
            "key": self.key,
        }


def jobs_root(out: Path | str) -> Path:
    """The folder of the jobs of report folder ``out``."""
    return Path(out) / JOBS_DIR


def job_folder(out: Path | str, job: Job) -> Path:
    return jobs_root(out) / job.folder_name


def is_done(out: Path | str, job: Job) -> bool:
    """Whether ``job``'s folder is complete (``figures.json`` is written last)."""
    return (job_folder(out, job) / FIGURES_FILE).is_file()


def write_job(
    out: Path | str,
    job: Job,
    record: Mapping[str, Any],
    means: Mapping[str, np.ndarray],
    write_files: Callable[[Path], None],
) -> Path:
    """Store a finished job as one unit.

    Args:
        out: the report folder.
        job: the job.
        record: its JSON-ready result (figures, model config, history); ``"job"`` is added.
        means: encoder name → test-set posterior means ``(N, d)``.
        write_files: writes the model folder and plots into the folder being built.

    Returns:
        The job's folder.
    """
    folder = job_folder(out, job)
    with atomic_folder(folder) as tmp:
        write_files(tmp)
        # np.savez names its members: keys such as "mnist+fashion" are valid member names.
        with open(tmp / MEANS_FILE, "wb") as handle:
            np.savez(handle, **{name: np.asarray(value) for name, value in means.items()})
        save_json(tmp / FIGURES_FILE, {**record, "job": job.identity()})
    _commit_manifest(out)
    return folder


def read_job(out: Path | str, job: Job) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(record, means)`` of a finished job.

    Raises:
        UsageError: the job's record names another job (a damaged or hand-edited folder).
    """
    folder = job_folder(out, job)
    record = load_json(folder / FIGURES_FILE)
    if record.get("job", {}).get("key") != job.key:
        raise UsageError(
            f"{folder / FIGURES_FILE} does not hold job {job.describe()} (key {job.key[:12]}); "
            f"remove {folder} and run the command again to redo it"
        )
    with np.load(folder / MEANS_FILE) as archive:
        means = {name: archive[name] for name in archive.files}
    return record, means


def manifest(settings: Mapping[str, Any], datasets: Mapping[str, str]) -> dict[str, Any]:
    """The manifest of a report folder: the settings and each dataset's checksum by name."""
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "settings": dict(settings),
        "datasets": dict(datasets),
    }


def manifest_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two manifests, one phrase per difference (empty: compatible).

    Seeds, models and added or dropped datasets are not differences: they add or leave out
    jobs. A setting that changed, or a dataset of the same name with other contents, is.
    """
    differences = []
    old_settings, new_settings = old.get("settings", {}), new.get("settings", {})
    for name in sorted(set(old_settings) | set(new_settings)):
        before, after = old_settings.get(name), new_settings.get(name)
        if canonical_json(before) != canonical_json(after):
            differences.append(f"{name} was {canonical_json(before)}, now {canonical_json(after)}")
    old_data, new_data = old.get("datasets", {}), new.get("datasets", {})
    for name in sorted(set(old_data) & set(new_data)):
        if old_data[name] != new_data[name]:
            differences.append(
                f"dataset {name} has other contents (sha256 {old_data[name][:12]}, now "
                f"{new_data[name][:12]})"
            )
    return differences


def has_finished_jobs(out: Path | str) -> bool:
    """Whether report folder ``out`` holds at least one finished job."""
    root = jobs_root(out)
    return root.is_dir() and any(
        (entry / FIGURES_FILE).is_file()
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _pending_manifest(out: Path | str) -> Path:
    """Where ``prepare_folder`` leaves the manifest that the first finished job commits."""
    return jobs_root(out) / f".{MANIFEST_FILE}.pending"


def prepare_folder(out: Path | str, current: Mapping[str, Any], overwrite: bool) -> list[str]:
    """Check the report folder against ``current`` (a ``manifest``); record it.

    A folder whose finished jobs were computed with other settings is refused unless
    ``overwrite``; with it, the manifest is replaced and the jobs of other settings are removed
    (those whose key still matches are kept and reused). A folder without finished jobs (a run
    that failed or was stopped before its first job) binds nothing and is reused freely: its
    manifest is committed only with the first finished job (``write_job``).

    Returns:
        The differences found (empty when the folder is new or compatible).

    Raises:
        UsageError: the settings differ and ``overwrite`` is false, or the folder holds a
            report without a manifest (from an mmgen without jobs).
    """
    out = Path(out)
    path = jobs_root(out) / MANIFEST_FILE
    finished = has_finished_jobs(out)
    differences: list[str] = []
    if path.is_file() and finished:
        differences = manifest_differences(load_json(path), current)
    elif (out / "report.json").is_file() and not path.is_file():
        differences = ["the folder holds a report.json without jobs/settings.json"]
    if differences and not overwrite:
        raise UsageError(
            f"{out} holds results of other settings: {'; '.join(differences)}. Pass "
            "--overwrite to replace them (jobs whose settings still match are reused) or "
            "choose another --out"
        )
    if finished:
        if differences or not path.is_file():
            save_json(path, dict(current))
    else:
        path.unlink(missing_ok=True)  # an unfinished run's record binds nothing
        save_json(_pending_manifest(out), dict(current))
    return differences


def _commit_manifest(out: Path | str) -> None:
    """Make the manifest ``prepare_folder`` left pending the folder's (first finished job)."""
    with contextlib.suppress(FileNotFoundError):  # another rank committed it first
        os.replace(_pending_manifest(out), jobs_root(out) / MANIFEST_FILE)


def first_classifier_summaries(
    out: Path | str, summaries: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The classifiers' report records as the folder's first run saw them.

    Whether a classifier came from the cache is a fact about one invocation: a rerun after a
    kill finds in the cache what the killed run trained. Recording the first run's records in
    ``jobs/classifiers.json`` (replaced for a source whose classifier changed) keeps the
    report of a resumed run equal to an uninterrupted one.
    """
    path = jobs_root(out) / CLASSIFIERS_FILE
    recorded = load_json(path) if path.is_file() else {}
    result = {}
    for spec, summary in summaries.items():
        first = recorded.get(spec)
        same = isinstance(first, Mapping) and _without_origin(first) == _without_origin(summary)
        result[spec] = dict(first) if same else dict(summary)
    if any(recorded.get(spec) != summary for spec, summary in result.items()):
        save_json(path, {**recorded, **result})
    return result


def _without_origin(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "loaded_from_cache"}


def prune(out: Path | str, keep: Sequence[Job]) -> list[Path]:
    """Remove the job folders of ``out`` that are not ``keep``'s; returns the removed ones."""
    root = jobs_root(out)
    names = {job.folder_name for job in keep}
    removed = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in names:
                shutil.rmtree(entry)
                removed.append(entry)
    return removed
