"""``mmgen evaluate`` as a library call: train multi-modal VAEs on datasets and measure them.

The evidence that an entangled dataset (MNIST-E, Korthals et al.) is coherent: the same
multi-modal VAEs (JMVAE, JMVAE-zero, JMVAE-kl, tVAE, M²VAE), trained with the same seed on
MNIST-E, on its mixed twin MNIST-ME and on a naive pairing of real images, and measured side by
side (METHOD.md §5): subset test ELBOs, the importance-weighted ``log p(M)``, conditionals
``log p(m | rest)``, cross and joint coherence through real-data classifiers (with their test
accuracy as the ceiling), posterior agreement (KL, JSD, naive Bayes on latent means), recovery
of the true codes by per-class probes (``mmgen.probes``), and the quality of the file's own
images (classifier accuracy and Fréchet distance to the real test images).

Outputs in ``out``: ``report.json`` (every figure, the config and seeds), ``report.md`` (tables),
``latent-<model>.png`` (the test set through every encoder, datasets side by side; the paper's
Fig. 1 bottom) and ``curves-<dataset>-<model>.png``.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmgen import __version__, metrics, plots, probes, rng
from mmgen.atomic import new_folder
from mmgen.checkpoint import file_sha256
from mmgen.classifiers import (
    ClassifierConfig,
    TrainedClassifier,
    classifier_cache_dir,
    load_or_train_classifier,
)
from mmgen.config import require_positive, to_dict
from mmgen.data.h5io import SplitData, read_header, read_split
from mmgen.data.sources import load_split
from mmgen.device import environment, resolve_device
from mmgen.errors import UsageError
from mmgen.report import write_report
from mmgen.train import TrainConfig, fit

log = logging.getLogger(__name__)

DEFAULT_MODELS = ("jmvae", "jmvae-zero", "jmvae-kl", "tvae", "m2vae")
NO_TRUE_Z = "n/a: file has no true z"
TaskCallback = Callable[[int, int, str], None]  # (tasks done, total, next task's description)
StepCallback = Callable[[dict[str, float]], None]


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
    seed: int = 0  # model initialisation, shuffles and every metric draw; same for every dataset
    device: str = "auto"  # auto, cpu or cuda
    classifier_epochs: int = 3  # epochs of each real-data classifier (cached by its config)
    eval_batch_size: int = 1000  # encoder/decoder batch in the metrics; no effect on results

    def __post_init__(self) -> None:
        models = tuple(self.models)
        if not models:
            raise UsageError("--models names no model; give e.g. --models jmvae,m2vae")
        duplicates = sorted({m for m in models if models.count(m) > 1})
        if duplicates:
            raise UsageError(f"--models lists {duplicates} more than once; name each model once")
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
    sources: dict[str, str]  # modality → source spec of mmgen.data.sources (the classifier to use)
    has_latent: bool
    class_names: tuple[str, ...]
    sha256: str

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "kind": self.kind,
            "modalities": list(self.modalities),
            "sources": dict(self.sources),
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
        name = _safe_name(path.stem)
        while name in names:
            name = f"{name}-{len(names) + 1}"
        names.add(name)
        infos.append(
            DatasetInfo(
                name=name,
                path=path,
                kind=header.kind,
                modalities=modalities,
                sources={m: header.sources[m].name for m in modalities},
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


def split_tensors(data: SplitData, modalities: Sequence[str], device: torch.device) -> dict:
    """A split as the models' batch: ``{m: (N, 1, 28, 28) float in [0, 1], "labels": (N,)}``.

    The stored images (uint8 ×255 or float32) cross to the device as they are and are converted
    there, once: a quarter of the bytes of a host-side float copy for uint8 files.
    """
    batch = {}
    for m in modalities:
        images = torch.from_numpy(data.images[m]).to(device).unsqueeze(1)  # (N, 1, 28, 28)
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
            "source": classifier.source,
            "classifier_accuracy": metrics.accuracy(predicted, labels),
            "ceiling": classifier.test_accuracy,
            "frechet_distance": metrics.frechet_distance(
                features, real_features[classifier.source]
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
    recovery: dict[str, Any] | str = NO_TRUE_Z
    if codes is not None:
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
    }
    means = {name(s): test_posteriors[s][0].cpu().numpy() for s in subsets}
    return figures, means


class _Tasks:
    """Counts the units of work and reports each start to the caller's callback."""

    def __init__(self, total: int, callback: TaskCallback | None) -> None:
        self.total, self.done, self.callback = total, 0, callback

    def start(self, description: str) -> None:
        log.info("%s", description)
        if self.callback is not None:
            self.callback(self.done, self.total, description)
        self.done += 1

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.total, self.total, "done")


def evaluate_datasets(
    paths: Sequence[Path | str],
    out: Path | str,
    config: EvaluateConfig | None = None,
    data_dir: Path | str | None = None,
    cache_dir: Path | str | None = None,
    on_task: TaskCallback | None = None,
    on_step: StepCallback | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every model of ``config`` on every dataset, measure them, write the report.

    The report folder appears as one unit (``mmgen.atomic.new_folder``): ``out`` is claimed
    (locked, checked writable and new unless ``overwrite``) before anything is trained, the
    figures and reports are written into a staging folder, and that folder replaces ``out`` at
    the end. A run that is stopped leaves ``out`` as it was.

    Args:
        paths: mmgen HDF5 files with the same number of modalities (e.g. MNIST-E, MNIST-ME and
            the naive pairing), reported side by side.
        out: folder for ``report.json``, ``report.md`` and the figures.
        config: models, training and sample counts, seed, device.
        data_dir: where the real sources are (for the classifiers); else the usual search.
        cache_dir: classifier cache (default ``$XDG_CACHE_HOME/mmgen/classifiers``).
        on_task: progress callback ``(tasks done, total, description)`` before each task.
        on_step: progress callback after every training step (``{"batch": size}``).
        overwrite: replace an existing ``out`` as a whole.

    Returns:
        The report (as written to ``report.json``).

    Raises:
        FileNotFoundError: a dataset or a real source is missing.
        ValueError: an unknown model, a file that is not an mmgen dataset, files that disagree
            on the modality count, a bad setting, or ``out`` exists without ``overwrite``.
        OSError: ``out`` cannot be written (checked before any work).
    """
    config = config or EvaluateConfig()
    check_models(config.models, model_registry()[0])
    datasets = inspect_datasets(paths)
    with new_folder(out, overwrite) as staging:
        return _evaluate_into(staging, datasets, config, data_dir, cache_dir, on_task, on_step)


def _evaluate_into(
    out: Path,
    datasets: list[DatasetInfo],
    config: EvaluateConfig,
    data_dir: Path | str | None,
    cache_dir: Path | str | None,
    on_task: TaskCallback | None,
    on_step: StepCallback | None,
) -> dict[str, Any]:
    """The work of :func:`evaluate_datasets`, writing figures and reports into folder ``out``."""
    build_model = model_registry()[1]
    device = resolve_device(config.device)
    specs = list(dict.fromkeys(s for d in datasets for s in d.sources.values()))
    tasks = _Tasks(len(specs) + len(datasets) * (1 + 2 * len(config.models)), on_task)
    classifier_config = ClassifierConfig(epochs=config.classifier_epochs)

    by_source: dict[str, TrainedClassifier] = {}
    real_features: dict[str, Tensor] = {}
    for spec in specs:
        tasks.start(f"classifier {spec}")
        by_source[spec] = load_or_train_classifier(
            spec, data_dir, cache_dir, classifier_config, device, on_step
        )
        real_test = load_split(spec, "test", data_dir=data_dir).as_tensors(device)
        real_features[spec] = by_source[spec].features(real_test["images"])

    report: dict[str, Any] = {
        "mmgen_version": __version__,
        "config": to_dict(config),
        "seed": config.seed,
        "device": str(device),
        "environment": environment(device),  # device name, torch / CUDA versions, determinism
        "data_dir": None if data_dir is None else str(data_dir),
        "classifier_cache": str(classifier_cache_dir(cache_dir)),
        "classifiers": {spec: c.summary() for spec, c in by_source.items()},
        "datasets": {},
    }
    latents: dict[str, dict[str, dict[str, np.ndarray]]] = {m: {} for m in config.models}
    test_labels: dict[str, np.ndarray] = {}
    for info in datasets:
        tasks.start(f"{info.name}: data quality")
        train_split = read_split(info.path, "train", config.limit)
        test_split = read_split(
            info.path, "test", config.limit if config.test_limit is None else config.test_limit
        )
        train = split_tensors(train_split, info.modalities, device)
        test = split_tensors(test_split, info.modalities, device)
        test_labels[info.name] = test_split.labels
        classifiers = {m: by_source[info.sources[m]] for m in info.modalities}
        entry = {
            **info.summary(),
            "num_train": len(train_split),
            "num_test": len(test_split),
            "quality": data_quality(
                {m: test[m] for m in info.modalities},
                test["labels"],
                classifiers,
                real_features,
                config.eval_batch_size,
            ),
            "models": {},
        }
        codes = probes.read_codes(info.path, len(train_split), len(test_split))
        for model_name in config.models:
            tasks.start(f"{info.name}: train {model_name}")
            # The same initialisation on every dataset.
            model = build_model(model_name, info.modalities, seed=config.seed).to(device)
            history = fit(model, train, test, config.train_config(), on_step=on_step)
            model.eval()
            tasks.start(f"{info.name}: measure {model_name}")
            figures, means = evaluate_model(model, train, test, classifiers, config, codes)
            latents[model_name][info.name] = means
            curves = f"curves-{info.name}-{model_name}.png"
            plots.training_curves(history, out / curves, f"{model_name} on {info.name}")
            entry["models"][model_name] = {
                **figures,
                "model_config": to_dict(model.config),
                "history": history,
                "figures": {"curves": curves},
            }
        report["datasets"][info.name] = entry

    report["figures"] = {}
    for model_name, panels in latents.items():
        figure = f"latent-{model_name}.png"
        plots.latent_grid(
            panels,
            test_labels,
            datasets[0].class_names,
            out / figure,
            f"{model_name}: test-set posterior means by encoder",
        )
        report["figures"][model_name] = figure
    write_report(out, report)
    tasks.finish()
    return report


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "dataset"
