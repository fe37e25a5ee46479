"""``mmgen evaluate``'s runner: the datasets, the plan of jobs, one job, the world loop.

Each (dataset, model, seed) is a job (``mmgen.jobs``), stored in ``out/jobs/`` as it finishes
(model, figures, curves), so that an interrupted run resumes and torchrun's ranks share the work
(``mmgen.distributed``): the pending jobs are dealt round robin over the ranks, and rank 0 waits
for the others' before the report (``mmgen.report``) is assembled. A job trains with
``mmgen.train.fit`` and is measured by ``mmgen.measure``, both with the job's own seed.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmgen import jobs, plots, probes
from mmgen.checkpoint import run_record
from mmgen.classifiers import TrainedClassifier
from mmgen.config import save_json, to_dict
from mmgen.data.h5io import SplitData, read_header, read_split
from mmgen.data.header import DatasetHeader, SourceIdentity
from mmgen.data.shapes import ImageShape
from mmgen.distributed import World
from mmgen.errors import UsageError
from mmgen.jobs import Job
from mmgen.measure import MeasureSettings, evaluate_model
from mmgen.models.registry import MODELS, build_model, save_model
from mmgen.shared import file_sha256, safe_name, to_unit
from mmgen.subsets import marginal_keeping_rows
from mmgen.train import TrainConfig, fit

log = logging.getLogger(__name__)

TaskCallback = Callable[[int, int, str], None]  # (tasks done, total, next task's description)
StepCallback = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class DatasetInfo:
    """What evaluate needs to know about one mmgen file before reading its arrays."""

    name: str  # the file's stem, made unique among the files evaluated together
    path: Path
    kind: str  # entangled, mixed or naive
    modalities: tuple[str, ...]
    # modality → its source and class selection: the classifier that judges it
    sources: dict[str, SourceIdentity]
    image_shapes: dict[str, ImageShape]  # modality → (C, H, W): what the models are built for
    has_latent: bool
    class_names: tuple[str, ...]
    sha256: str
    # How a generated file's images were decoded ("mean" or "sample"; a mixed file: its
    # parent's), None for a naive file or one that does not record it.
    decode: str | None = None
    parent_sha256: str | None = None  # a mixed file: the SHA-256 of its entangled file

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "kind": self.kind,
            "modalities": list(self.modalities),
            "sources": {m: source.label for m, source in self.sources.items()},
            "image_shapes": {m: list(self.image_shapes[m]) for m in self.modalities},
            "has_latent": self.has_latent,
            "letters": modality_letters(self.modalities),
        }


def modality_letters(modalities: Sequence[str]) -> dict[str, str]:
    """Modality → ``a``, ``b``, ``c``…: the positional names the tables use across datasets."""
    return {m: chr(ord("a") + i) for i, m in enumerate(modalities)}


def inspect_datasets(paths: Sequence[Path | str]) -> list[DatasetInfo]:
    """Read and check the attributes of every file; they must agree on the modality count.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file is not an mmgen dataset, or the files differ in modality count.
    """
    if not paths:
        raise UsageError("no dataset given; pass one or more mmgen HDF5 files")
    infos: list[DatasetInfo] = []
    names: set[str] = set()
    for path in map(Path, paths):
        header = read_header(path)  # validated: no attribute is guessed
        modalities = header.modalities
        name = safe_name(path.stem)
        while name in names:
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        infos.append(
            DatasetInfo(
                name=name,
                path=path,
                kind=header.kind,
                modalities=modalities,
                sources={m: header.sources[m].identity for m in modalities},
                image_shapes=header.image_shapes,
                has_latent=header.has_latent,
                class_names=header.class_names,
                sha256=file_sha256(path),
                decode=file_decode(header),
                parent_sha256=(header.parent or {}).get("sha256"),
            )
        )
    counts = {len(info.modalities) for info in infos}
    if len(counts) > 1:
        listing = "; ".join(f"{i.path} has {len(i.modalities)} {list(i.modalities)}" for i in infos)
        raise UsageError(
            f"the datasets disagree on the number of modalities ({listing}); evaluate files "
            "with the same number of modalities together"
        )
    return infos


def file_decode(header: DatasetHeader) -> str | None:
    """``"mean"`` or ``"sample"``: how a generated file's images were decoded (a mixed file
    keeps its parent's images, so its parent's ``generate`` config says); ``None`` otherwise."""
    generation = (
        header.config if header.kind == "entangled" else (header.parent or {}).get("config")
    )
    decode = generation.get("decode") if isinstance(generation, Mapping) else None
    return decode if isinstance(decode, str) else None


def twin_groups(datasets: Sequence[DatasetInfo]) -> list[tuple[DatasetInfo, list[DatasetInfo]]]:
    """Every entangled file of the run with its mixed twins of the run (mixed files whose
    recorded parent is that file, by SHA-256), in the order given; files without twins too."""
    return [
        (info, [t for t in datasets if t.kind == "mixed" and t.parent_sha256 == info.sha256])
        for info in datasets
        if info.kind == "entangled"
    ]


def check_subsets(
    datasets: Sequence[DatasetInfo], limit: int | None, test_limit: int | None
) -> None:
    """Refuse leading-row subsets on which an entangled file and its mixed twins do not share
    their images (issue 17, item 3; ``mmgen.subsets``): with fewer rows than a split, E and its
    twins must hold the same images per unmixed modality and the same multiset per mixed one.

    Raises:
        UsageError: one line naming the nearest valid counts below and above.
    """
    asked = {"train": limit, "test": limit if test_limit is None else test_limit}
    for entangled, twins in twin_groups(datasets):
        if not twins:
            continue
        paths = [entangled.path, *(t.path for t in twins)]
        for split, n in asked.items():
            if n is not None:
                marginal_keeping_rows(paths, n, split)


def check_class_counts(
    datasets: Sequence[DatasetInfo], classifiers: Mapping[str, TrainedClassifier]
) -> None:
    """Refuse a file whose class count is not its classifiers': label k would be judged as
    another class (e.g. a 3-class ``--classes`` file read as the source's 10 classes)."""
    for info in datasets:
        for modality, source in info.sources.items():
            classifier = classifiers[source.label]
            if classifier.num_classes != info.num_classes:
                raise UsageError(
                    f"{info.path} has {info.num_classes} classes, but its modality {modality!r} "
                    f"records source {source.label} of {classifier.num_classes} classes; the "
                    "header does not say which classes the file uses (--classes): regenerate "
                    "the file with this mmgen"
                )


def split_tensors(data: SplitData, modalities: Sequence[str], device: torch.device) -> dict:
    """A split as the models' batch: ``{m: (N, C, H, W) float in [0, 1], "labels": (N,)}``.

    The stored images (uint8 ×255 or float32) cross to the device as they are and are converted
    there, once: a quarter of the bytes of a host-side float copy for uint8 files.
    """
    batch = {}
    for m in modalities:
        images = torch.from_numpy(data.images[m]).to(device)  # (N, C, H, W)
        batch[m] = to_unit(images)
    batch["labels"] = torch.from_numpy(data.labels).to(device)
    return batch


@dataclass(frozen=True)
class RunSettings:
    """What every job of one evaluation trains and measures with; ``for_seed`` sets a job's
    seed in both."""

    train: TrainConfig  # the optimisation of every model (its seed: the job's)
    measure: MeasureSettings  # the sample counts of every metric (its seed: the job's)
    limit: int | None = None  # first N train and test tuples of every file
    test_limit: int | None = None  # first N test tuples (overrides limit for the test split)
    latent_dim: int = 2  # d of every multi-modal VAE
    record: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # stored with each job

    def for_seed(self, seed: int) -> tuple[TrainConfig, MeasureSettings]:
        return (
            dataclasses.replace(self.train, seed=seed),
            dataclasses.replace(self.measure, seed=seed),
        )

@dataclass
class LoadedDataset:
    """One dataset's tensors on this rank's device (the last one used is kept)."""

    info: DatasetInfo
    train: dict[str, Tensor]
    test: dict[str, Tensor]
    test_labels: np.ndarray
    codes: dict[str, tuple[Tensor, Tensor]] | None  # the probes' targets (probes.read_codes)


def load_dataset(
    info: DatasetInfo, limit: int | None, test_limit: int | None, device: torch.device
) -> LoadedDataset:
    """Read the splits evaluate uses (``limit``, ``test_limit``) as tensors on ``device``."""
    train_split = read_split(info.path, "train", limit)
    test_limit = limit if test_limit is None else test_limit
    test_split = read_split(info.path, "test", test_limit)
    return LoadedDataset(
        info=info,
        train=split_tensors(train_split, info.modalities, device),
        test=split_tensors(test_split, info.modalities, device),
        test_labels=test_split.labels,
        codes=probes.read_codes(info.path, len(train_split), len(test_split)),
    )


def plan_jobs(
    datasets: Sequence[DatasetInfo],
    models: Sequence[str],
    seeds: Sequence[int],
    settings: Mapping[str, Any],
    classifier_keys: Mapping[str, str],
    latent_dim: int = 2,
) -> list[Job]:
    """Every (dataset, model, seed) job, sorted, each with its key.

    A job's key holds the settings and the cache keys of the classifiers of its dataset's
    sources (the coherence figures depend on them).
    """
    planned = []
    for info in datasets:
        job_settings = {
            **settings,
            "classifiers": {m: classifier_keys[s.label] for m, s in info.sources.items()},
        }
        for model in models:
            config_class = MODELS[model][0]
            model_config = to_dict(
                config_class(
                    modalities=tuple(info.modalities),
                    image_shapes=info.image_shapes,
                    latent_dim=latent_dim,
                )
            )
            for seed in seeds:
                key = jobs.job_key(info.sha256, model, model_config, seed, job_settings)
                planned.append(Job(info.name, model, seed, info.sha256, key))
    return sorted(planned)


def run_job(
    job: Job,
    data: LoadedDataset,
    classifiers: Mapping[str, TrainedClassifier],
    settings: RunSettings,
    out: Path,
    device: torch.device,
    on_stage: Callable[[str], None],
    on_step: StepCallback | None = None,
) -> None:
    """Train and measure one job with its seed, and store it (``mmgen.jobs.write_job``)."""
    train_config, measure_settings = settings.for_seed(job.seed)
    on_stage("train")
    started = time.perf_counter()
    # The same initialisation on every dataset: the seed's stream, not the job's position.
    model = build_model(
        job.model,
        data.info.modalities,
        seed=job.seed,
        image_shapes=data.info.image_shapes,
        latent_dim=settings.latent_dim,
    ).to(device)
    history = fit(model, data.train, data.test, train_config, on_step=on_step)
    model.eval()
    on_stage("measure")
    trained = time.perf_counter()
    figures, means = evaluate_model(
        model, data.train, data.test, classifiers, measure_settings, data.codes
    )
    # Wall-clock seconds, kept beside the job and out of report.json (which must not depend on
    # when or how fast a job ran): what docs/performance.md quotes for a whole evaluate.
    timing = {"train_s": trained - started, "measure_s": time.perf_counter() - trained}
    record = {
        "figures": figures,
        "model_config": to_dict(model.config),
        "history": history,
        "settings": dict(settings.record),
    }

    def write_files(folder: Path) -> None:
        run = run_record(
            device, dataset=str(data.info.path), seed=job.seed, epochs=train_config.epochs
        )
        save_model(folder / jobs.MODEL_DIR, model, run)
        save_json(folder / jobs.TIMING_FILE, {**timing, "device": str(device)})
        plots.training_curves(
            history, folder / jobs.CURVES_FILE, f"{job.model} on {job.dataset}, seed {job.seed}"
        )

    jobs.write_job(out, job, record, means, write_files)


class Progress:
    """One count over all jobs (finished by any rank), reported to the caller's callback."""

    def __init__(self, out: Path, plan: Sequence[Job], callback: TaskCallback | None) -> None:
        self.out, self.plan, self.callback = out, plan, callback

    def done(self) -> int:
        return sum(jobs.is_done(self.out, job) for job in self.plan)

    def show(self, description: str) -> None:
        log.info("%s", description)
        if self.callback is not None:
            self.callback(self.done(), len(self.plan), description)


def run_jobs(
    plan: Sequence[Job],
    pending: Sequence[Job],
    datasets: Sequence[DatasetInfo],
    by_source: Mapping[str, TrainedClassifier],
    settings: RunSettings,
    out: Path,
    device: torch.device,
    world: World,
    progress: Progress,
    on_step: StepCallback | None = None,
    poll_seconds: float = 1.0,
) -> None:
    """Run this rank's share of ``pending`` (round robin); on rank 0, then wait until every job
    of ``plan`` is stored (the other ranks' too).

    Raises:
        RuntimeError: a job of a single process was not stored (a bug).
    """
    by_name = {info.name: info for info in datasets}
    loaded: LoadedDataset | None = None
    for index, job in enumerate(pending):
        if not world.owns(index):
            continue
        if loaded is None or loaded.info.name != job.dataset:
            loaded = None  # free the previous dataset's tensors before reading the next
            loaded = load_dataset(
                by_name[job.dataset], settings.limit, settings.test_limit, device
            )
        classifiers = {m: by_source[loaded.info.sources[m].label] for m in loaded.info.modalities}
        run_job(
            job,
            loaded,
            classifiers,
            settings,
            out,
            device,
            lambda stage, job=job: progress.show(f"{job.describe()}: {stage}"),
            on_step,
        )
    loaded = None
    if not world.is_main:
        return
    while (missing := len(plan) - progress.done()) > 0:
        if not world.distributed:
            raise RuntimeError(f"{missing} job(s) of {out} were not stored")  # a bug
        progress.show(f"waiting for {missing} job(s) of the other ranks")
        time.sleep(poll_seconds)
