"""``mmgen.truth.integrate``'s float32 scoring against a float64 loop over tuples and codes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mmgen.truth import integrate

MODALITIES, PIXELS, TUPLES, CLASSES = 3, 96, 37, 2
BLOCKS = (64, 64, 23)  # codes per block: the running log-sum-exp crosses blocks


def decoders() -> list[integrate.Decoder]:
    """Per modality ``l = 9·tanh(z A_m + b_{m,c})``: sharp pixels, scores of −100 … −700 nats."""
    generator = torch.Generator().manual_seed(3)
    tables = [
        (
            torch.randn(2, PIXELS, generator=generator),
            torch.randn(CLASSES, PIXELS, generator=generator),
        )
        for _ in range(MODALITIES)
    ]
    return [(lambda z, labels, a=a, b=b: 9.0 * torch.tanh(z @ a + b[labels])) for a, b in tables]


def codes(spread: float) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Blocks of codes and float64 log-weights spread over ``[−spread, 0] − 3`` at random."""
    generator = torch.Generator().manual_seed(5)
    z = [2 * torch.randn(size, 2, generator=generator) for size in BLOCKS]
    log_w = [
        -3.0 - spread * torch.rand(size, generator=generator, dtype=torch.float64)
        for size in BLOCKS
    ]
    return z, log_w


def reference(
    images: list[torch.Tensor], z: list[torch.Tensor], log_w: list[torch.Tensor]
) -> tuple[dict, dict]:
    """``log Σ_j w_j Π_{m∈S} p(x_im | z_j, c)`` (and with ``w² p²``) one tuple, class and subset
    at a time, in float64, from the decoders' own float32 logits."""
    zs, weights = torch.cat(z), torch.cat(log_w).numpy()
    scores = np.zeros((MODALITIES, TUPLES, CLASSES, len(zs)))  # log p(x_im | z_j, c)
    for c in range(CLASSES):
        labels = torch.full((len(zs),), c)
        for m, decode in enumerate(decoders()):
            logits = decode(zs, labels).double().numpy()  # (G, P)
            x = images[m].double().numpy()
            for i in range(TUPLES):
                for j in range(len(zs)):
                    terms = x[i] * logits[j] - np.logaddexp(0.0, logits[j])
                    scores[m, i, c, j] = math.fsum(terms)
    subsets = subsets_all()
    means = {s: np.zeros((TUPLES, CLASSES)) for s in subsets}
    squares = {s: np.zeros((TUPLES, CLASSES)) for s in subsets}
    for s in subsets:
        for i in range(TUPLES):
            for c in range(CLASSES):
                for power, out in ((1, means), (2, squares)):
                    terms = [
                        power * (weights[j] + sum(scores[m, i, c, j] for m in s))
                        for j in range(len(zs))
                    ]
                    top = max(terms)
                    out[s][i, c] = top + math.log(math.fsum(math.exp(t - top) for t in terms))
    return means, squares


def subsets_all() -> list[tuple[int, ...]]:
    everything = range(MODALITIES)
    return [s for k in (1, 2, 3) for s in itertools.combinations(everything, k)]


@pytest.mark.parametrize("spread", [12.0, 120.0])  # float32 weights factor out / enter exp
def test_scoring_matches_a_float64_loop(spread: float) -> None:
    generator = torch.Generator().manual_seed(7)
    images = [(torch.rand(TUPLES, PIXELS, generator=generator) < 0.4).float() for _ in range(3)]
    z, log_w = codes(spread)
    assert integrate._Weights.of(torch.cat(log_w) - torch.cat(log_w).max(), True).wide == (
        spread > integrate.WEIGHT_SPREAD / 2
    )
    result = integrate.integrate(
        decoders(),
        images,
        CLASSES,
        lambda: zip(z, log_w, strict=True),
        subsets_all(),
        tuple_chunk=16,
    )
    means, squares = reference(images, z, log_w)
    assert min(v.min() for v in means.values()) < -500  # large negative log-likelihoods
    for s in subsets_all():
        # float32 products of ~100 terms of up to 9 nats: ~10⁻⁵ nats; the rest is far smaller
        np.testing.assert_allclose(result.log_mean[s].numpy(), means[s], atol=2e-4, rtol=0)
        np.testing.assert_allclose(result.log_mean_square[s].numpy(), squares[s], atol=4e-4, rtol=0)
