"""``mmgen evaluate`` as a library call: train multi-modal VAEs on datasets and measure them.

The evidence that an entangled dataset (MNIST-E, Korthals et al.) is coherent: the same
multi-modal VAEs (any of the eight of ``mmgen.models.registry``; by default the paper's five,
JMVAE, JMVAE-zero, JMVAE-kl, tVAE, M²VAE), trained with the same seed on
MNIST-E, on its mixed twin MNIST-ME and on a naive pairing of real images, and measured side by
side (METHOD.md §5): subset test ELBOs, the importance-weighted ``log p(M)``, conditionals
``log p(m | rest)``, cross and joint coherence through real-data classifiers (with their test
accuracy as the ceiling), posterior agreement (KL, JSD, naive Bayes on latent means), recovery
of the true codes by per-class probes (``mmgen.probes``), and the quality of the file's own
images (classifier accuracy and Fréchet distance to the real test images).

Each (dataset, model, seed) is a job (``mmgen.jobs``), stored in ``out/jobs/`` as it finishes
(model, figures, curves), so that an interrupted run resumes and torchrun's ranks share the work
(``mmgen.distributed``). Outputs in ``out``: ``report.json`` (every per-seed figure, mean and sd
over seeds, the verdict of METHOD.md §5b, the config and seeds), ``report.md`` (the verdict, then
tables) and ``latent-<model>.png`` (the test set through every encoder, datasets side by side,
first seed; the paper's Fig. 1 bottom).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmgen import __version__, jobs, metrics, plots, probes, rng
from mmgen.atomic import folder_lock
from mmgen.checkpoint import file_sha256, run_record
from mmgen.classifiers import (
    ClassifierConfig,
    TrainedClassifier,
    classifier_cache_dir,
    load_or_train_classifier,
)
from mmgen.config import require_positive, save_json, to_dict
from mmgen.data.h5io import SplitData, read_header, read_split
from mmgen.data.header import SourceIdentity, check_seed
from mmgen.data.shapes import ImageShape
from mmgen.data.sources import load_split
from mmgen.device import environment, resolve_device
from mmgen.distributed import World
from mmgen.errors import UsageError
from mmgen.jobs import Job
from mmgen.report import write_report
from mmgen.shared import safe_name
from mmgen.train import TrainConfig, fit
from mmgen.verdict import summarise_seeds, verdict

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("jmvae", "jmvae-zero", "jmvae-kl", "tvae", "m2vae")
NO_TRUE_Z = "file has no true z"  # the note of a latent_recovery of None
TaskCallback = Callable[[int, int, str], None]  # (tasks done, total, next task's description)
StepCallback = Callable[[dict[str, float]], None]
# EvaluateConfig fields that do not change a job's figures: the job set (models, seeds), the
# device setting (the job key holds the device type it resolved to) and a batch size that only
# trades memory for speed. Every other field, including any added later, is in the key.
JOB_INDEPENDENT_FIELDS = frozenset({"models", "seeds", "device", "eval_batch_size"})


def _distinct(flag: str, noun: str, values: Sequence[Any], example: str) -> tuple[Any, ...]:
    """``values`` as a tuple, refusing an empty list or a repeated entry (one line each)."""
    values = tuple(values)
    if not values:
        raise UsageError(f"{flag} names no {noun}; give e.g. {example}")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise UsageError(f"{flag} lists {repeated} more than once; name each {noun} once")
    return values


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``mmgen evaluate`` trains and measures (saved in ``report.json``)."""

    models: tuple[str, ...] = DEFAULT_MODELS  # keys of mmgen.models.registry.MODELS
    epochs: int = 100  # training epochs of every model (tVAE: each of its two stages)
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    k: int = 1000  # importance samples K of log p(M) and the conditionals (JMVAE code: 1000)
    prior_samples: int = 5000  # N_w prior draws estimating p(given) in log p(a|b) (JMVAE: 5000)
    joint_samples: int = 10_000  # prior draws of the joint coherence
    elbo_samples: int = 10  # draws z ~ q(z|S) averaged per test point in the subset ELBOs
    jsd_samples: int = 64  # Monte-Carlo draws per test point and side of the JSD
    limit: int | None = None  # use only the first N train and test tuples of every file
    # Measure on the first N test tuples only (overrides limit for the test split): the IW bound
    # and the conditionals decode N·K and N·N_w codes, the bulk of evaluate's time on a CPU.
    test_limit: int | None = None
    # One job per (dataset, model, seed): the seed keys the model's initialisation, the shuffles
    # and every metric draw, and is the same on every dataset (the pairing of METHOD.md §5b).
    seeds: tuple[int, ...] = (0,)
    device: str = "auto"  # auto, cpu or cuda
    classifier_epochs: int = 3  # epochs of each real-data classifier (cached by its config)
    eval_batch_size: int = 1000  # encoder/decoder batch in the metrics; no effect on results

    def __post_init__(self) -> None:
        models = _distinct("--models", "model", self.models, "--models jmvae,m2vae")
        if self.k <= 0:
            raise UsageError(
                f"--k must be >= 1 importance samples, got {self.k}; the paper used --k 1000 "
                "(--k 1 gives the plain ELBO)"
            )
        for name in ("limit", "test_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive number of tuples, got {value}")
        for name in (
            "epochs",
            "batch_size",
            "lr",
            "prior_samples",
            "joint_samples",
            "elbo_samples",
            "jsd_samples",
            "classifier_epochs",
            "eval_batch_size",
        ):
            require_positive(name.replace("_", "-"), getattr(self, name))
        object.__setattr__(self, "models", models)
        seeds = _distinct("--seeds", "seed", self.seeds, "--seeds 0 1 2")
        for seed in seeds:
            check_seed(seed)
        # Sorted: the same set of seeds is the same evaluation, whatever order it was typed in.
        object.__setattr__(self, "seeds", tuple(sorted(int(s) for s in seeds)))

    @property
    def seed(self) -> int:
        """The seed of a one-seed config (a job's: ``for_seed``)."""
        if len(self.seeds) != 1:
            raise ValueError(
                f"a config of seeds {list(self.seeds)} has no single seed; use for_seed"
            )
        return self.seeds[0]

    def for_seed(self, seed: int) -> EvaluateConfig:
        """This config restricted to one seed: what one job trains and measures with."""
        return dataclasses.replace(self, seeds=(seed,))

    def job_settings(self) -> dict[str, Any]:
        """Every field that affects a job's result (the job key's settings, by field name)."""
        return {k: v for k, v in to_dict(self).items() if k not in JOB_INDEPENDENT_FIELDS}

    def train_config(self) -> TrainConfig:
        """The optimisation settings shared by every model (Adam, METHOD.md §4)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer="adam",
            seed=self.seed,
            eval_batch_size=self.eval_batch_size,
        )


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


def model_registry() -> tuple[Mapping[str, Any], Callable[..., Any]]:
    """``(MODELS, build_model)`` of the multi-modal VAEs (imported on first use)."""
    registry = importlib.import_module("mmgen.models.registry")
    return registry.MODELS, registry.build_model


def check_models(models: Sequence[str], registry: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming every unknown model and the valid choices."""
    unknown = [m for m in models if m not in registry]
    if unknown:
        raise UsageError(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(registry)} "
            "(comma-separated, e.g. --models jmvae,m2vae)"
        )


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
        batch[m] = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    batch["labels"] = torch.from_numpy(data.labels).to(device)
    return batch


def metric_generator(seed: int, name: str, device: torch.device) -> torch.Generator:
    """The generator of one metric on ``device``: the stream ``(seed, "metric", name)``.

    Keyed by name (``mmgen.rng``), so it is independent of the evaluation order and of every
    training stream.
    """
    return rng.stream(seed, "metric", name, device=device)


def data_quality(
    images: Mapping[str, Tensor],
    labels: Tensor,
    classifiers: Mapping[str, TrainedClassifier],
    real_features: Mapping[str, Tensor],
    batch_size: int = 1000,
) -> dict[str, dict[str, Any]]:
    """Per modality: the real-data classifier's accuracy on the file's images against the
    intended class, its ceiling, and the Fréchet distance to the real test images in the
    classifier's penultimate feature space."""
    result = {}
    for modality, classifier in classifiers.items():
        predicted = metrics.predict(classifier.classify, images[modality], batch_size)
        features = classifier.features(images[modality], batch_size)
        result[modality] = {
            "source": classifier.identity.label,
            "classifier_accuracy": metrics.accuracy(predicted, labels),
            "ceiling": classifier.test_accuracy,
            "frechet_distance": metrics.frechet_distance(
                features, real_features[classifier.identity.label]
            ),
        }
    return result


def evaluate_model(
    model,
    train: Mapping[str, Tensor],
    test: Mapping[str, Tensor],
    classifiers: Mapping[str, TrainedClassifier],
    config: EvaluateConfig,
    codes: Mapping[str, tuple[Tensor, Tensor]] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every METHOD.md §5 metric of one trained model on one dataset.

    Args:
        model: a trained ``MultimodalVAE`` (eval mode, on the tensors' device).
        train: the training split (for the naive-Bayes fit and the latent-recovery probes).
        test: the test split, where everything is measured.
        classifiers: modality → its real-data classifier.
        config: sample counts and the seed.
        codes: the true codes of ``probes.read_codes`` (``z``; in a mixed file also the
            permuted modality's own ``z[m]``), ``(train, test)`` each, else ``None``.

    Returns:
        The JSON-ready figures and the test-set posterior means per encoder (for the plots).
    """
    modalities = tuple(model.modalities)
    device = test["labels"].device
    batch = config.eval_batch_size
    train_images = {m: train[m] for m in modalities}
    test_images = {m: test[m] for m in modalities}
    subsets = [tuple(s) for s in model.encodable_subsets()]
    name = metrics.subset_name

    def generator(stream: str) -> torch.Generator:
        return metric_generator(config.seed, stream, device)

    elbo_generator = generator("elbo")
    elbo = {
        name(s): float(
            metrics.subset_elbo(
                model, test_images, s, elbo_generator, config.elbo_samples, batch_size=batch
            ).mean()
        )
        for s in subsets
    }
    joint = metrics.importance_weighted_bound(model, test_images, config.k, generator("iw"))
    conditional_generator = generator("conditional")
    conditional = {}
    for target in modalities:
        given = tuple(m for m in modalities if m != target)
        value = metrics.conditional_log_likelihood(
            model,
            test_images,
            (target,),
            given,
            config.k,
            config.prior_samples,
            conditional_generator,
            joint=joint,
        )
        conditional[f"{target}|{name(given)}"] = float(value.mean())

    classify = {m: classifiers[m].classify for m in modalities}
    cross = {
        f"{name(s)}->{target}": metrics.cross_coherence(
            model, test_images, test["labels"], s, target, classify[target], batch
        )
        for s in subsets
        if len(s) == 1
        for target in modalities
        if target not in s
    }
    joint_coherence = metrics.joint_coherence(
        model, classify, config.joint_samples, generator("joint_coherence"), batch, device
    )

    test_posteriors = {s: metrics.posterior(model, test_images, s, batch) for s in subsets}
    train_means = {s: metrics.posterior(model, train_images, s, batch)[0] for s in subsets}
    divergences = metrics.posterior_divergences(
        model, test_images, generator("jsd"), config.jsd_samples, batch, test_posteriors
    )
    naive_bayes = {
        name(s): metrics.gaussian_naive_bayes_accuracy(
            train_means[s], train["labels"], test_posteriors[s][0], test["labels"]
        )
        for s in subsets
    }
    recovery: dict[str, Any] | None = None
    notes: dict[str, str] = {}  # figure → why it is None
    if codes is None:
        notes["latent_recovery"] = NO_TRUE_Z
    else:
        recovery = probes.latent_recovery(
            {name(s): train_means[s] for s in subsets},
            train["labels"],
            {name(s): test_posteriors[s][0] for s in subsets},
            test["labels"],
            codes,
        )
    # d <= 2: the grid estimate of log p(M) beside the IW bound (tighter, deterministic).
    quadrature = {}
    if model.config.latent_dim <= 2:
        estimate = metrics.quadrature_log_likelihood(model, test_images)
        quadrature["log_likelihood_quadrature"] = float(estimate.mean())
    figures = {
        "elbo": elbo,
        "log_likelihood": float(joint.mean()),
        **quadrature,
        "conditional": conditional,
        "coherence": {"cross": cross, "joint": joint_coherence},
        "posterior": {"divergence": divergences, "naive_bayes": naive_bayes},
        "latent_recovery": recovery,
        "encodable_subsets": [name(s) for s in subsets],
        "notes": notes,
    }
    means = {name(s): test_posteriors[s][0].cpu().numpy() for s in subsets}
    return figures, means


@dataclass
class _Loaded:
    """One dataset's tensors on this rank's device (the last one used is kept)."""

    info: DatasetInfo
    train: dict[str, Tensor]
    test: dict[str, Tensor]
    test_labels: np.ndarray
    codes: dict[str, tuple[Tensor, Tensor]] | None  # the probes' targets (probes.read_codes)


def load_dataset(info: DatasetInfo, config: EvaluateConfig, device: torch.device) -> _Loaded:
    """Read the splits evaluate uses (``limit``, ``test_limit``) as tensors on ``device``."""
    train_split = read_split(info.path, "train", config.limit)
    test_limit = config.limit if config.test_limit is None else config.test_limit
    test_split = read_split(info.path, "test", test_limit)
    return _Loaded(
        info=info,
        train=split_tensors(train_split, info.modalities, device),
        test=split_tensors(test_split, info.modalities, device),
        test_labels=test_split.labels,
        codes=probes.read_codes(info.path, len(train_split), len(test_split)),
    )


def plan_jobs(
    datasets: Sequence[DatasetInfo],
    config: EvaluateConfig,
    settings: Mapping[str, Any],
    classifier_keys: Mapping[str, str],
) -> list[Job]:
    """Every (dataset, model, seed) job of ``config``, sorted, each with its key.

    A job's key holds the settings and the cache keys of the classifiers of its dataset's
    sources (the coherence figures depend on them).
    """
    registry, _ = model_registry()
    planned = []
    for info in datasets:
        job_settings = {
            **settings,
            "classifiers": {m: classifier_keys[s.label] for m, s in info.sources.items()},
        }
        for model in config.models:
            config_class = registry[model][0]
            model_config = to_dict(
                config_class(modalities=tuple(info.modalities), image_shapes=info.image_shapes)
            )
            for seed in config.seeds:
                key = jobs.job_key(info.sha256, model, model_config, seed, job_settings)
                planned.append(Job(info.name, model, seed, info.sha256, key))
    return sorted(planned)


def run_job(
    job: Job,
    data: _Loaded,
    classifiers: Mapping[str, TrainedClassifier],
    config: EvaluateConfig,
    out: Path,
    device: torch.device,
    on_stage: Callable[[str], None],
    on_step: StepCallback | None = None,
) -> None:
    """Train and measure one job with its seed, and store it (``mmgen.jobs.write_job``)."""
    registry = importlib.import_module("mmgen.models.registry")
    job_config = config.for_seed(job.seed)
    on_stage("train")
    started = time.perf_counter()
    # The same initialisation on every dataset: the seed's stream, not the job's position.
    model = registry.build_model(
        job.model, data.info.modalities, seed=job.seed, image_shapes=data.info.image_shapes
    ).to(device)
    history = fit(model, data.train, data.test, job_config.train_config(), on_step=on_step)
    model.eval()
    on_stage("measure")
    trained = time.perf_counter()
    figures, means = evaluate_model(
        model, data.train, data.test, classifiers, job_config, data.codes
    )
    # Wall-clock seconds, kept beside the job and out of report.json (which must not depend on
    # when or how fast a job ran): what docs/performance.md quotes for a whole evaluate.
    timing = {"train_s": trained - started, "measure_s": time.perf_counter() - trained}
    record = {
        "figures": figures,
        "model_config": to_dict(model.config),
        "history": history,
        "settings": job_config.job_settings(),
    }

    def write_files(folder: Path) -> None:
        run = run_record(device, dataset=str(data.info.path), seed=job.seed, epochs=config.epochs)
        registry.save_model(folder / jobs.MODEL_DIR, model, run)
        save_json(folder / jobs.TIMING_FILE, {**timing, "device": str(device)})
        plots.training_curves(
            history, folder / jobs.CURVES_FILE, f"{job.model} on {job.dataset}, seed {job.seed}"
        )

    jobs.write_job(out, job, record, means, write_files)


class _Progress:
    """One count over all jobs (finished by any rank), reported to the caller's callback."""

    def __init__(self, out: Path, plan: Sequence[Job], callback: TaskCallback | None) -> None:
        self.out, self.plan, self.callback = out, plan, callback

    def done(self) -> int:
        return sum(jobs.is_done(self.out, job) for job in self.plan)

    def show(self, description: str) -> None:
        log.info("%s", description)
        if self.callback is not None:
            self.callback(self.done(), len(self.plan), description)


def evaluate_datasets(
    paths: Sequence[Path | str],
    out: Path | str,
    config: EvaluateConfig | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    on_task: TaskCallback | None = None,
    on_step: StepCallback | None = None,
    overwrite: bool = False,
    world: World | None = None,
    poll_seconds: float = 1.0,
) -> dict[str, Any] | None:
    """Train every model of ``config`` on every dataset with every seed, measure, report.

    Each (dataset, model, seed) is a job (``mmgen.jobs``) stored in ``out/jobs/`` as soon as it
    finishes; a rerun of the same command after a kill redoes only the unfinished jobs and
    writes the same ``report.json``. Under torchrun (``world``), the pending jobs are shared
    round robin over the ranks and rank 0 writes the report once every job is stored.

    ``out`` is claimed (locked against a second writer, checked writable, compared with the
    settings of the jobs it holds) before anything is trained. ``report.json`` is written last:
    a folder without it is an unfinished evaluation that the same command completes.

    Args:
        paths: mmgen HDF5 files with the same number of modalities (e.g. MNIST-E, MNIST-ME and
            the naive pairing), reported side by side.
        out: folder for ``report.json``, ``report.md``, the figures and ``jobs/``.
        config: models, seeds, training and sample counts, device.
        data_dir: where the real sources are (for the classifiers); else the usual search.
        cache_dir: classifier cache (default ``$XDG_CACHE_HOME/mmgen/classifiers``).
        on_task: progress callback ``(jobs done, jobs in all, current job)``; rank 0 only.
        on_step: progress callback after every training step (``{"batch": size}``).
        overwrite: replace the jobs of a folder evaluated with other settings (jobs whose key
            still matches are reused) and remove the jobs this command does not ask for.
        world: this process's place among torchrun's processes (default: one process).
        poll_seconds: how often rank 0 looks for the other ranks' finished jobs.

    Returns:
        The report (as written to ``report.json``) on rank 0; ``None`` on the other ranks.

    Raises:
        FileNotFoundError: a dataset or a real source is missing.
        ValueError: an unknown model, a file that is not an mmgen dataset, files that disagree
            on the modality count, a bad setting, or ``out`` holds jobs of other settings and
            ``overwrite`` is false (the message lists the settings that differ).
    """
    config = config or EvaluateConfig()
    world = world or World()
    registry, _ = model_registry()
    check_models(config.models, registry)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the report")
    datasets = inspect_datasets(paths)
    # One writer per report folder (rank 0 under torchrun; the others write only their jobs),
    # claimed before any work: a second evaluate into the same --out fails at once.
    with folder_lock(out) if world.is_main else contextlib.nullcontext():
        device = world.device(resolve_device(config.device))
        # The device type, not this rank's GPU index: rank 0 under torchrun writes what one
        # process does.
        device_type = torch.device(device.type)
        settings = {**config.job_settings(), "device": device.type}
        if world.is_main:
            current = jobs.manifest(settings, {d.name: d.sha256 for d in datasets})
            jobs.prepare_folder(out, current, overwrite)

        identities = list(dict.fromkeys(s for d in datasets for s in d.sources.values()))
        classifier_config = ClassifierConfig(epochs=config.classifier_epochs)

        def load_classifiers() -> dict[str, TrainedClassifier]:
            loaded = {
                source.label: load_or_train_classifier(
                    source.spec,
                    data_dir,
                    cache_dir,
                    classifier_config,
                    device,
                    on_step,
                    classes=source.classes,
                )
                for source in identities
            }
            check_class_counts(datasets, loaded)
            return loaded

        # Rank 0 trains the missing classifiers into the cache; the other ranks then load them.
        by_source = load_classifiers() if world.is_main else {}
        if world.is_main:
            jobs.first_classifier_summaries(out, {s: c.summary() for s, c in by_source.items()})
        world.barrier()
        if not world.is_main:
            by_source = load_classifiers()
        plan = plan_jobs(
            datasets, config, settings, {s: c.info["key"] for s, c in by_source.items()}
        )
        pending = None
        if world.is_main:
            if overwrite:
                for folder in jobs.prune(out, plan):
                    log.info("removed %s (not a job of this command)", folder)
            pending = [job for job in plan if not jobs.is_done(out, job)]
        # Every rank shares rank 0's list: a job another rank finishes meanwhile must not move the
        # round robin's assignment.
        pending = world.broadcast(pending)
        progress = _Progress(out, plan, on_task if world.is_main else None)
        by_name = {info.name: info for info in datasets}
        loaded: _Loaded | None = None
        for index, job in enumerate(pending):
            if not world.owns(index):
                continue
            if loaded is None or loaded.info.name != job.dataset:
                loaded = None  # free the previous dataset's tensors before reading the next
                loaded = load_dataset(by_name[job.dataset], config, device)
            classifiers = {
                m: by_source[loaded.info.sources[m].label] for m in loaded.info.modalities
            }
            run_job(
                job,
                loaded,
                classifiers,
                config,
                out,
                device,
                lambda stage, job=job: progress.show(f"{job.describe()}: {stage}"),
                on_step,
            )
        loaded = None
        if not world.is_main:
            return None
        while (missing := len(plan) - progress.done()) > 0:
            if not world.distributed:
                raise RuntimeError(f"{missing} job(s) of {out} were not stored")  # a bug
            progress.show(f"waiting for {missing} job(s) of the other ranks")
            time.sleep(poll_seconds)
        progress.show("report")
        clear_report(out, config.models)
        report = assemble_report(
            datasets, plan, config, out, by_source, device, device_type, data_dir, cache_dir
        )
        write_report(out, report)
        if on_task is not None:
            on_task(len(plan), len(plan), "done")
        return report


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
    config: EvaluateConfig,
    out: Path,
    by_source: Mapping[str, TrainedClassifier],
    device: torch.device,
    device_type: torch.device,
    data_dir: Path | str | None,
    cache_dir: Path | str | None,
) -> dict[str, Any]:
    """The report from the stored jobs: per-seed figures, mean and sd, the verdict, plots.

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
    report: dict[str, Any] = {
        "mmgen_version": __version__,
        "config": to_dict(config),
        "seeds": list(config.seeds),
        "device": str(device_type),
        "environment": environment(device_type),  # device name, torch / CUDA, determinism
        "data_dir": None if data_dir is None else str(data_dir),
        "classifier_cache": str(classifier_cache_dir(cache_dir)),
        "classifiers": jobs.first_classifier_summaries(
            out, {spec: c.summary() for spec, c in by_source.items()}
        ),  # recorded when the folder's first run began (below): the same on a resumed run
        "datasets": {},
    }
    by_job = {(job.dataset, job.model, job.seed): job for job in plan}
    per_seed: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    latents: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in config.models}
    test_labels: dict[str, np.ndarray] = {}
    first_seed = config.seeds[0]
    for info in datasets:
        data = load_dataset(info, config, device)
        test_labels[info.name] = data.test_labels
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
                config.eval_batch_size,
            ),
            "models": {},
            "sd": {},
            "seeds": {str(seed): {} for seed in config.seeds},
        }
        per_seed[info.name] = {}
        for model in config.models:
            per_seed[info.name][model] = {}
            for seed in config.seeds:
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
            mean, sd = summarise_seeds([per_seed[info.name][model][s] for s in config.seeds])
            first = entry["seeds"][str(first_seed)][model]
            entry["models"][model] = {**mean, "model_config": first["model_config"]}
            entry["sd"][model] = sd
        report["datasets"][info.name] = entry

    report["verdict"] = verdict(
        per_seed, {info.name: info.kind for info in datasets}, config.models, config.seeds
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

