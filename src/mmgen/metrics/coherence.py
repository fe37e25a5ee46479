"""Coherence through real-data classifiers (Shi et al. 2019, MMVAE §4): cross coherence of
conditional generations and joint coherence of prior samples, with the plain accuracies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mmgen.metrics.base import (
    PRIOR_CHUNK,
    Classify,
    Images,
    _require_positive_samples,
    draw_normal,
    posterior,
)


@torch.no_grad()
def predict(classify: Classify, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted classes ``(N,)``: the arg-max of ``classify`` over batches of ``images``."""
    return torch.cat(
        [
            classify(images[start : start + batch_size]).argmax(1)
            for start in range(0, len(images), batch_size)
        ]
    )


def accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Fraction of ``predicted`` equal to ``labels``."""
    return float((predicted == labels).float().mean())


def balanced_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels`` of the per-class recall."""
    recalls = [(predicted[labels == c] == c).float().mean() for c in torch.unique(labels).tolist()]
    return float(torch.stack(recalls).mean())


@torch.no_grad()
def cross_coherence(
    model,
    images: Images,
    labels: Tensor,
    source: Sequence[str],
    target: str,
    classify: Classify,
    batch_size: int = 1000,
) -> float:
    """Class-balanced accuracy of ``classify`` on ``target`` decoded from ``q(z|source)``.

    Shi et al. (MMVAE), §4: encode from ``source`` only, decode the posterior mean into
    ``target`` (the mean image ``σ(logits)``), classify it, compare with the tuple's label.
    """
    mu, _ = posterior(model, images, source, batch_size)
    decoded = torch.cat(
        [
            torch.sigmoid(model.decode_logits(mu[start : start + batch_size])[target])
            for start in range(0, len(mu), batch_size)
        ]
    )
    return balanced_accuracy(predict(classify, decoded, batch_size), labels)


@torch.no_grad()
def joint_coherence(
    model,
    classifiers: Mapping[str, Classify],
    num_samples: int,
    generator: torch.Generator,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Fraction of prior samples whose decoded modalities all get the same class.

    Shi et al. (MMVAE), §4: ``z ~ N(0, I)``, decode every modality (mean image), classify each
    with its own real-data classifier, count the samples on which every classifier agrees.
    The codes are drawn in blocks of ``PRIOR_CHUNK``, so ``batch_size`` does not change them.
    """
    _require_positive_samples("joint-coherence samples", num_samples)
    latent_dim = model.config.latent_dim
    z = torch.cat(
        [
            draw_normal(generator, (min(PRIOR_CHUNK, num_samples - done), latent_dim), device)
            for done in range(0, num_samples, PRIOR_CHUNK)
        ]
    )  # (num_samples, d)
    agree = 0
    for start in range(0, num_samples, batch_size):
        logits = model.decode_logits(z[start : start + batch_size])
        predictions = torch.stack(
            [classify(torch.sigmoid(logits[m])).argmax(1) for m, classify in classifiers.items()]
        )  # (|M|, batch)
        agree += int((predictions == predictions[0]).all(0).sum())
    return agree / num_samples
