"""Posterior agreement between encoders (the M²VAE authors' analysis): KL (closed form between
Gaussians, Monte Carlo for mixtures), Jensen–Shannon divergence, and naive Bayes on latent
means."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
from torch import Tensor

from mmgen import rng
from mmgen.metrics.base import (
    POINTS_PER_CHUNK,
    Images,
    Subset,
    _components,
    _require_positive_samples,
    draw_mixture_per_point,
    draw_seed,
    posterior_mixture,
    subset_name,
)
from mmgen.metrics.coherence import (
    accuracy,
)
from mmgen.objectives import (
    kl_normal,
    log_normal,
    mixture_log_prob,
)


def gaussian_jsd(
    mu_p: Tensor,
    logvar_p: Tensor,
    mu_q: Tensor,
    logvar_q: Tensor,
    generator: torch.Generator,
    num_samples: int = 64,
    points_per_chunk: int = POINTS_PER_CHUNK,
) -> Tensor:
    """Monte-Carlo Jensen–Shannon divergence between diagonal Gaussians, shape ``(N,)``.

    ``JSD(p, q) = ½ E_p[log p − log m] + ½ E_q[log q − log m]``, ``m = ½(p + q)``; in nats,
    between 0 and ``log 2``: :func:`mixture_jsd` with one component each.
    """
    return mixture_jsd(
        (mu_p.unsqueeze(0), logvar_p.unsqueeze(0)),
        (mu_q.unsqueeze(0), logvar_q.unsqueeze(0)),
        generator,
        num_samples,
        points_per_chunk,
    )


def mixture_kl(
    p: tuple[Tensor, Tensor],
    q: tuple[Tensor, Tensor],
    generator: torch.Generator,
    num_samples: int = 64,
) -> Tensor:
    """Monte-Carlo ``KL(p ‖ q) = E_p[log p − log q]`` between uniform Gaussian mixtures, ``(N,)``.

    ``p`` and ``q`` are components ``(μ, log σ²)``, each ``(K, N, d)`` (``K`` may differ). The
    ``num_samples`` codes of point ``i`` are drawn point by point from ``generator``
    (:func:`draw_mixture_per_point`), so the value of a point does not depend on how many
    points follow it (``--test-limit``).
    """
    _require_positive_samples("KL samples", num_samples)
    z = draw_mixture_per_point(generator, *p, num_samples).transpose(0, 1)  # (S, N, d)
    return (mixture_log_prob(z, *p) - mixture_log_prob(z, *q)).mean(0)


def mixture_jsd(
    p: tuple[Tensor, Tensor],
    q: tuple[Tensor, Tensor],
    generator: torch.Generator,
    num_samples: int = 64,
    points_per_chunk: int = POINTS_PER_CHUNK,
) -> Tensor:
    """Monte-Carlo Jensen–Shannon divergence between uniform Gaussian mixtures, ``(N,)``.

    ``JSD(p, q) = ½ E_p[log p − log m] + ½ E_q[log q − log m]``, ``m = ½(p + q)``, for
    posteriors given as components ``(μ, log σ²)``, each ``(K, N, d)`` (``K = 1``: Gaussians).
    Point by point, ``num_samples`` codes are drawn from ``p`` and then from ``q``
    (:func:`draw_mixture_per_point`), so no value depends on ``points_per_chunk``, which only
    bounds the memory: ``(S, chunk, d)``, not ``(S, N, d)``.
    """
    _require_positive_samples("JSD samples", num_samples)
    results = []
    for start in range(0, p[0].shape[1], points_per_chunk):
        stop = start + points_per_chunk
        chunk_p = (p[0][:, start:stop], p[1][:, start:stop])
        chunk_q = (q[0][:, start:stop], q[1][:, start:stop])
        draws: tuple[list[Tensor], list[Tensor]] = ([], [])
        for point in range(chunk_p[0].shape[1]):
            for side, (mu, logvar) in enumerate((chunk_p, chunk_q)):
                one = (mu[:, point : point + 1], logvar[:, point : point + 1])
                draws[side].append(draw_mixture_per_point(generator, *one, num_samples)[0])
        total = torch.zeros(chunk_p[0].shape[1], dtype=p[0].dtype, device=p[0].device)
        for side, samples in enumerate(draws):
            z = torch.stack(samples, dim=1)  # (S, chunk, d)
            log_p, log_q = mixture_log_prob(z, *chunk_p), mixture_log_prob(z, *chunk_q)
            log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
            total += 0.5 * ((log_q if side else log_p) - log_m).mean(0)
        results.append(total)
    return torch.cat(results)


@torch.no_grad()
def posterior_divergences(
    model,
    images: Images,
    generator: torch.Generator,
    num_samples: int = 64,
    batch_size: int = 1000,
    posteriors: Mapping[Subset, tuple[Tensor, Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """KL and JSD between the posteriors of every pair of encodable subsets, test-set means.

    The M²VAE authors' agreement analysis: for subsets ``S`` before ``S'`` in
    ``encodable_subsets()`` (e.g. ``a+b`` vs ``a``, ``a+b`` vs ``b``, ``a`` vs ``b``),
    ``KL(q(z|S) ‖ q(z|S'))`` (analytic between Gaussians, Monte Carlo with ``num_samples``
    draws where either posterior is a mixture) and ``JSD(q(z|S), q(z|S'))`` (Monte Carlo).

    Args:
        posteriors: the Gaussian ``(μ, log σ²)`` of ``posterior`` when already computed; used
            for the subsets whose ``q(z|S)`` is Gaussian (a mixture's components are computed
            here).

    Returns:
        ``"S||S'"`` → ``{"kl": …, "jsd": …}``.
    """
    subsets = [tuple(s) for s in model.encodable_subsets()]
    components = {}
    for s in subsets:
        first_point = {m: images[m][:1] for m in s}  # tells a Gaussian from a mixture
        if posteriors is not None and len(_components(model, first_point, s)[0]) == 1:
            mu, logvar = posteriors[s]
            components[s] = (mu.unsqueeze(0), logvar.unsqueeze(0))
        else:
            components[s] = posterior_mixture(model, images, s, batch_size)
    # One draw of the given stream seeds a stream per pair (keyed by the pair's names): no pair's
    # draws depend on another pair's, nor on the number of points (each draws point by point).
    root = int(draw_seed(generator))
    result = {}
    for first, second in itertools.combinations(subsets, 2):
        p, q = components[first], components[second]
        pair = rng.stream(root, subset_name(first), subset_name(second), device=generator.device)
        if len(p[0]) == len(q[0]) == 1:  # two Gaussians: the closed-form KL
            (mu_p, logvar_p), (mu_q, logvar_q) = (t[0] for t in p), (t[0] for t in q)
            kl = kl_normal(mu_p, logvar_p, mu_q, logvar_q)
            jsd = gaussian_jsd(mu_p, logvar_p, mu_q, logvar_q, pair, num_samples)
        else:
            kl = mixture_kl(p, q, pair, num_samples)
            jsd = mixture_jsd(p, q, pair, num_samples)
        result[f"{subset_name(first)}||{subset_name(second)}"] = {
            "kl": float(kl.mean()),
            "jsd": float(jsd.mean()),
        }
    return result


def gaussian_naive_bayes_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    var_smoothing: float = 1e-9,
) -> float:
    """Test accuracy of a Gaussian naive-Bayes classifier fitted on the training features.

    Per class ``c``: prior ``π_c`` (class frequency), per-dimension mean ``μ_c`` and variance
    ``σ_c²`` (plus ``var_smoothing`` × the largest feature variance, for stability); predict
    ``argmax_c log π_c + Σ_i log N(x_i; μ_ci, σ_ci²)``.
    """
    train_features = train_features.double()
    test_features = test_features.double()
    classes = torch.unique(train_labels)
    epsilon = var_smoothing * float(train_features.var(0, unbiased=False).max())
    scores = []
    for c in classes.tolist():
        members = train_features[train_labels == c]
        mean = members.mean(0)
        var = members.var(0, unbiased=False) + epsilon
        log_prior = math.log(len(members) / len(train_features))
        scores.append(log_prior + log_normal(test_features, mean, var.log()))
    predicted = classes[torch.stack(scores, dim=1).argmax(1)]
    return accuracy(predicted, test_labels.to(predicted.device))
