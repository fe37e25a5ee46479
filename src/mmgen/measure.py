"""One trained multi-modal VAE measured on one dataset: every figure of docs/method.md.

Subset test ELBOs, the importance-weighted ``log p(M)`` (Burda et al.), conditionals
``log p(m | rest)``, cross and joint coherence through real-data classifiers (Shi et al., §4),
posterior agreement (KL, JSD, naive Bayes on latent means), recovery of the true codes by
per-class probes (``mmgen.probes``), and the quality of a file's own images (classifier accuracy,
Fréchet distance). The estimators are :mod:`mmgen.metrics`; this module picks their streams
(``(seed, "metric", name)``) and sample counts and gathers the JSON-ready figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmgen import metrics, probes, rng
from mmgen.classifiers import TrainedClassifier

NO_TRUE_Z = "file has no true z"  # the note of a latent_recovery of None


@dataclass(frozen=True)
class MeasureSettings:
    """The seed and sample counts of one job's measurement (fields of ``EvaluateConfig``)."""

    seed: int  # keys every metric's stream
    k: int = 1000  # importance samples of log p(M) and the conditionals
    prior_samples: int = 5000  # N_w prior draws of p(given) in log p(a|b)
    joint_samples: int = 10_000  # prior draws of the joint coherence
    elbo_samples: int = 10  # draws z ~ q(z|S) per test point in the subset ELBOs
    jsd_samples: int = 64  # Monte-Carlo draws per test point and side of the JSD
    batch_size: int = 1000  # encoder/decoder batch; no effect on results


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
    settings: MeasureSettings,
    codes: Mapping[str, tuple[Tensor, Tensor]] | None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every docs/method.md metric of one trained model on one dataset.

    Args:
        model: a trained ``MultimodalVAE`` (eval mode, on the tensors' device).
        train: the training split (for the naive-Bayes fit and the latent-recovery probes).
        test: the test split, where everything is measured.
        classifiers: modality → its real-data classifier.
        settings: the seed and the sample counts.
        codes: the true codes of ``probes.read_codes`` (``z``; in a mixed file also the
            permuted modality's own ``z[m]``), ``(train, test)`` each, else ``None``.

    Returns:
        The JSON-ready figures and the test-set posterior means per encoder (for the plots).
    """
    modalities = tuple(model.modalities)
    device = test["labels"].device
    batch = settings.batch_size
    train_images = {m: train[m] for m in modalities}
    test_images = {m: test[m] for m in modalities}
    subsets = [tuple(s) for s in model.encodable_subsets()]
    name = metrics.subset_name

    def generator(stream: str) -> torch.Generator:
        return metric_generator(settings.seed, stream, device)

    elbo_generator = generator("elbo")
    elbo = {
        name(s): float(
            metrics.subset_elbo(
                model, test_images, s, elbo_generator, settings.elbo_samples, batch_size=batch
            ).mean()
        )
        for s in subsets
    }
    joint = metrics.importance_weighted_bound(model, test_images, settings.k, generator("iw"))
    conditional_generator = generator("conditional")
    conditional = {}
    for target in modalities:
        given = tuple(m for m in modalities if m != target)
        value = metrics.conditional_log_likelihood(
            model,
            test_images,
            (target,),
            given,
            settings.k,
            settings.prior_samples,
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
        model, classify, settings.joint_samples, generator("joint_coherence"), batch, device
    )

    test_posteriors = {s: metrics.posterior(model, test_images, s, batch) for s in subsets}
    train_means = {s: metrics.posterior(model, train_images, s, batch)[0] for s in subsets}
    divergences = metrics.posterior_divergences(
        model, test_images, generator("jsd"), settings.jsd_samples, batch, test_posteriors
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
