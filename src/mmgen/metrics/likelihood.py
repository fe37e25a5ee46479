"""Likelihoods: subset ELBOs, the importance-weighted ``log p(M)`` (Burda et al., eq. 8), the
shared-code estimates of ``log p(a | b)`` (JMVAE, Suzuki et al. §4.1) and a quadrature grid for
``d <= 2``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from mmgen.errors import UsageError
from mmgen.metrics.base import (
    CODES_PER_CHUNK,
    POINTS_PER_CHUNK,
    PRIOR_CHUNK,
    QUADRATURE_POINTS,
    QUADRATURE_RADIUS,
    Images,
    _chunk,
    _components,
    _device,
    _require_encodable,
    _require_positive_samples,
    _size,
    covering_subset,
    draw_mixture_per_point,
    draw_normal,
)
from mmgen.objectives import (
    iw_log_mean_exp,
    log_standard_normal,
    mixture_log_prob,
    multimodal_elbo,
    multimodal_log_likelihood,
)


@torch.no_grad()
def subset_elbo(
    model,
    images: Images,
    subset: Sequence[str],
    generator: torch.Generator,
    num_samples: int = 1,
    analytic_kl: bool = True,
    batch_size: int = 1000,
) -> Tensor:
    """``L_S = E_{q(z|S)}[log p(M|z)] − KL(q(z|S) ‖ p(z))`` per data point, shape ``(N,)``.

    The test ELBO of the M²VAE paper's tables: encode from ``S`` only, score all modalities
    (β = 1); each draw is ``objectives.multimodal_elbo`` with ``T = M``. The expectation is a
    mean over ``num_samples`` draws per point (drawn per point: independent of ``batch_size``).

    Args:
        model: a ``MultimodalVAE``.
        images: every modality of the model, ``(N, C, H, W)`` per modality.
        subset: the modalities the posterior sees.
        generator: source of the draws ``z ~ q(z|S)``.
        num_samples: draws per data point.
        analytic_kl: closed-form KL (lower variance) where ``q(z|S)`` is Gaussian; ``False``,
            and always for a mixture ``q(z|S)``, gives the Monte-Carlo form
            ``log p(M|z) + log p(z) − log q(z|S)``, which equals the IW bound with ``K = 1``.
        batch_size: data points per encoder call.
    """
    _require_positive_samples("num_samples", num_samples)
    subset = _require_encodable(model, subset)
    results = []
    for start in range(0, _size(images), batch_size):
        chunk = _chunk(images, start, start + batch_size)
        mu, logvar = _components(model, {m: chunk[m] for m in subset}, subset)  # (K, B, d)
        draws = draw_mixture_per_point(generator, mu, logvar, num_samples)  # (B, S, d)
        total = torch.zeros(mu.shape[1], device=mu.device)
        for sample in range(num_samples):
            z = draws[:, sample]  # (B, d)
            logits = model.decode_logits(z)
            if analytic_kl and len(mu) == 1:
                total += multimodal_elbo(logits, chunk, mu[0], logvar[0], beta=1.0)
            else:
                log_likelihood = multimodal_log_likelihood(logits, chunk)
                total += log_likelihood + log_standard_normal(z) - mixture_log_prob(z, mu, logvar)
        results.append(total / num_samples)
    return torch.cat(results)


def softplus_sum(logits: Tensor, dim: int) -> Tensor:
    """``Σ softplus(l)`` along ``dim``, computed as ``max(l, 0) + log(1 + exp(−|l|))``.

    The same function as ``F.softplus``, about 5× faster on a CPU: PyTorch's CPU ``softplus``
    and ``log1p`` run at ≈ 85 M elements/s per thread here against ≈ 520 M for ``log``
    (``benchmarks/bench_evaluate.py``, docs/performance.md). With ``e = exp(−|l|) ≤ 1``,
    ``log(1 + e)`` differs from ``log1p(e)`` by under 6·10⁻⁸ per logit (1 + e rounds e away
    when e < 2⁻²⁴), under 10⁻⁵ nats over the 784 pixels of a 28×28 image.
    """
    return (logits.clamp(min=0) + torch.log(1 + torch.exp(-logits.abs()))).sum(dim)


def grouped_log_likelihood(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p(x_b | z_bk)`` for ``K`` codes per target, shape ``(B, K)``.

    ``log p(x|z) = Σ_pixels [x·l − softplus(l)]`` (the Bernoulli of
    ``objectives.bernoulli_log_likelihood`` rewritten): the ``x·l`` part is one batched
    matrix–vector product, so the targets are never copied ``K`` times, and the only
    elementwise work left is one softplus per logit.

    Args:
        logits: ``(B, K, ...)`` decoder logits, ``K`` codes for each of ``B`` targets.
        targets: ``(B, ...)`` grey levels in [0, 1], the same pixel layout.
    """
    flat = logits.flatten(2)  # (B, K, P)
    dot = torch.bmm(flat, targets.flatten(1).unsqueeze(2)).squeeze(2)  # (B, K)
    return dot - softplus_sum(flat, 2)


@torch.no_grad()
def importance_weighted_bound(
    model,
    images: Images,
    k: int,
    generator: torch.Generator,
    scored: Sequence[str] | None = None,
    proposal: Sequence[str] | None = None,
    codes_per_chunk: int = CODES_PER_CHUNK,
) -> Tensor:
    """``log p(T) ≥ log (1/K) Σ_k p(T|z_k) p(z_k) / q(z_k|S)``, ``z_k ~ q(z|S)``, shape ``(N,)``.

    Burda et al. (2016), eq. 8; the bound tightens as ``K`` grows and equals the Monte-Carlo
    ELBO at ``K = 1``. At most ``codes_per_chunk`` codes are decoded at once (several points
    when ``K`` is small, part of one point's ``K`` when it is large), scored by
    ``grouped_log_likelihood``; memory is bounded for any ``N`` and ``K``. Each point's ``K``
    draws are its own call on ``generator``, so the result does not depend on the chunking.

    Args:
        model: a ``MultimodalVAE``.
        images: at least the modalities of ``scored`` and ``proposal``, ``(N, C, H, W)`` each.
        k: importance samples ``K`` per data point (≥ 1).
        generator: source of the draws.
        scored: the modalities ``T`` whose likelihood is bounded (default: all).
        proposal: the subset ``S`` of the proposal ``q(z|S)`` (default: the smallest encodable
            subset holding ``T``).
        codes_per_chunk: codes decoded at once (speed and memory only).
    """
    if k <= 0:
        raise UsageError(
            f"K (importance samples) must be >= 1, got {k}; K = 1 gives the ELBO, the paper "
            "used K = 1000"
        )
    scored = tuple(model.modalities if scored is None else scored)
    proposal = covering_subset(model, scored) if proposal is None else tuple(proposal)
    proposal = _require_encodable(model, proposal)
    points = max(1, codes_per_chunk // k)
    sample_chunk = min(k, codes_per_chunk)
    results = []
    for start in range(0, _size(images), points):
        chunk = _chunk(images, start, start + points)
        # q(z|S) as its mixture components (K, B, d): K = 1 for a Gaussian posterior
        mu, logvar = _components(model, {m: chunk[m] for m in proposal}, proposal)
        _, batch, latent_dim = mu.shape
        draws = draw_mixture_per_point(generator, mu, logvar, k)  # (B, K, d)
        log_w = torch.empty(batch, k, device=mu.device, dtype=mu.dtype)
        for done in range(0, k, sample_chunk):
            z = draws[:, done : done + sample_chunk]  # (B, c, d)
            count = z.shape[1]
            logits = model.decode_logits(z.reshape(batch * count, latent_dim))
            log_likelihood = sum(
                grouped_log_likelihood(logits[m].view(batch, count, -1), chunk[m]) for m in scored
            )
            log_q = mixture_log_prob(z.transpose(0, 1), mu, logvar).transpose(0, 1)  # (B, c)
            log_w[:, done : done + count] = log_likelihood + log_standard_normal(z) - log_q
        results.append(iw_log_mean_exp(log_w, dim=1))
    return torch.cat(results)


def bernoulli_log_likelihood_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p(x_i | z_j)`` for every target ``i`` and decoded code ``j``, shape ``(I, J)``.

    With ``log p(x|z) = Σ_pixels [x·l − softplus(l)]`` (the Bernoulli of
    ``objectives.bernoulli_log_likelihood`` rewritten), all ``I × J`` pairs are one matrix
    product: ``X Lᵀ − 1 softplus(L)ᵀ``. Float32: a sum of 784 terms of a few units each loses
    about 10⁻⁴ nats, far below the Monte-Carlo noise of any estimate built on it.

    Args:
        logits: ``(J, ...)`` decoder logits.
        targets: ``(I, ...)`` grey levels in [0, 1], the same pixel layout.
    """
    flat_logits = logits.flatten(1)  # (J, P)
    return targets.flatten(1) @ flat_logits.T - softplus_sum(flat_logits, 1)


def mixture_log_likelihood(
    model,
    images: Images,
    modalities: Sequence[str],
    codes: Iterable[tuple[Tensor, Tensor]],
    points_per_chunk: int = POINTS_PER_CHUNK,
) -> Tensor:
    """``log Σ_j w_j Π_{m∈S} p(x_m|z_j)`` per data point for codes shared by every point, ``(N,)``.

    Each block of codes is decoded once and scored against every point by
    ``bernoulli_log_likelihood_matrix``; the running log-sum over blocks keeps memory at one
    ``(points_per_chunk, block)`` matrix, whatever ``N`` and the number of codes.

    Args:
        model: a ``MultimodalVAE``.
        images: the modalities of ``modalities``, ``(N, C, H, W)`` per modality.
        modalities: the modalities ``S`` scored.
        codes: blocks ``(z (J, d), log w (J,))`` of codes and their log-weights.
        points_per_chunk: data points per matrix product (speed and memory only).
    """
    size = _size(images)
    total = torch.full((size,), -math.inf, device=_device(images))
    for z, log_weight in codes:
        logits = model.decode_logits(z)
        for start in range(0, size, points_per_chunk):
            stop = start + points_per_chunk
            scores = (
                log_weight
                + sum(  # (n, J)
                    bernoulli_log_likelihood_matrix(logits[m], images[m][start:stop])
                    for m in modalities
                )
            )
            part = total[start:stop]
            part.copy_(torch.logaddexp(part, torch.logsumexp(scores, dim=1)))
    return total


def prior_codes(
    generator: torch.Generator, num_samples: int, latent_dim: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """Blocks of ``PRIOR_CHUNK`` codes ``z_j ~ N(0, I)``, each with log-weight ``−log N_w``.

    The blocks are drawn in order from ``generator`` (as before issue 7, so ``N_w`` prior draws
    are the same numbers whatever the number of data points); for ``mixture_log_likelihood``.
    """
    log_weight = torch.tensor(-math.log(num_samples), device=device)
    for done in range(0, num_samples, PRIOR_CHUNK):
        count = min(PRIOR_CHUNK, num_samples - done)
        yield draw_normal(generator, (count, latent_dim), device), log_weight


@torch.no_grad()
def prior_log_likelihood(
    model,
    images: Images,
    modalities: Sequence[str],
    num_samples: int,
    generator: torch.Generator,
) -> Tensor:
    """``log p̂(S) = log (1/N_w) Σ_j Π_{m∈S} p(x_m|z_j)``, ``z_j ~ N(0, I)``, shape ``(N,)``.

    The JMVAE estimate of the marginal of the conditioning modalities (Suzuki et al., §4.3,
    ``N_w = 5000``). The same ``N_w`` prior draws serve every data point
    (``mixture_log_likelihood``: each decoded once, every point scored by a matrix product).
    """
    _require_positive_samples("prior samples N_w", num_samples)
    codes = prior_codes(generator, num_samples, model.config.latent_dim, _device(images))
    return mixture_log_likelihood(model, images, modalities, codes)


def quadrature_grid(
    latent_dim: int, points: int = QUADRATURE_POINTS, radius: float = QUADRATURE_RADIUS
) -> tuple[Tensor, Tensor]:
    """A grid on ``[−r, r]^d``, ``(G, d)``, and its log-weights ``log p(z_g) + d log h``, ``(G,)``.

    Equal weights ``h^d`` on nodes that include the ends ``±r``: the trapezoidal rule for
    ``∫ f(z) N(z; 0, I) dz`` (the end weights ``h/2`` differ by a term the Gaussian makes
    negligible at ``r``); for a smooth integrand it converges faster than any power of the
    spacing ``h = 2r / (points − 1)``.
    """
    if latent_dim > 2:
        raise UsageError(
            f"quadrature on a grid needs a latent size d <= 2 ({points}^d codes), got "
            f"d = {latent_dim}; use the importance-weighted bound"
        )
    if points < 2 or radius <= 0:
        raise UsageError(
            f"a quadrature grid needs >= 2 points and a radius > 0, got {points} and {radius}"
        )
    axis = torch.linspace(-radius, radius, points, dtype=torch.float64)
    step = 2 * radius / (points - 1)
    grid = torch.cartesian_prod(*[axis] * latent_dim).reshape(-1, latent_dim)  # (G, d)
    log_weight = log_standard_normal(grid) + latent_dim * math.log(step)
    return grid.float(), log_weight.float()


@torch.no_grad()
def quadrature_log_likelihood(
    model,
    images: Images,
    modalities: Sequence[str] | None = None,
    points: int = QUADRATURE_POINTS,
    radius: float = QUADRATURE_RADIUS,
) -> Tensor:
    """``log p(S) ≈ log Σ_g h^d N(z_g; 0, I) Π_{m∈S} p(x_m|z_g)`` on a grid, shape ``(N,)``.

    For ``d ≤ 2`` (the papers' setting) ``log p(S) = log ∫ p(S|z) p(z) dz`` is a low-dimensional
    integral: a grid of codes shared by every data point estimates it deterministically, each
    grid code decoded once and every point scored by a matrix product
    (``mixture_log_likelihood``). Not a bound: accurate while the spacing ``2r/(points − 1)``
    is below about twice the width of the posterior ``p(z|S)``; then tighter than any
    importance-weighted bound, and cheaper (``points^d`` codes in all versus ``K`` per point).

    Args:
        model: a ``MultimodalVAE`` with ``config.latent_dim <= 2``.
        images: the modalities scored, ``(N, C, H, W)`` per modality.
        modalities: the modalities ``S`` (default: all).
        points: grid codes per dimension.
        radius: the grid spans ``[−radius, radius]^d``.
    """
    modalities = tuple(model.modalities if modalities is None else modalities)
    grid, log_weight = quadrature_grid(model.config.latent_dim, points, radius)
    grid, log_weight = grid.to(_device(images)), log_weight.to(_device(images))
    blocks = (
        (grid[start : start + PRIOR_CHUNK], log_weight[start : start + PRIOR_CHUNK])
        for start in range(0, len(grid), PRIOR_CHUNK)
    )
    return mixture_log_likelihood(model, images, modalities, blocks)


def conditional_log_likelihood(
    model,
    images: Images,
    target: Sequence[str],
    given: Sequence[str],
    k: int,
    num_prior_samples: int,
    generator: torch.Generator,
    joint: Tensor | None = None,
) -> Tensor:
    """``log p(T | G) ≈ IW_K(log p(T, G)) − log (1/N_w) Σ_j p(G|z_j)``, shape ``(N,)``.

    Suzuki et al. (JMVAE), §4.3: the importance-weighted bound of the joint minus the
    prior-sampling estimate of the marginal of what is given.

    Args:
        model: a ``MultimodalVAE``.
        images: the modalities of ``target`` and ``given``.
        target: modalities predicted.
        given: modalities conditioned on.
        k: importance samples of the joint bound.
        num_prior_samples: ``N_w``.
        generator: source of all draws.
        joint: the IW bound of ``log p(T, G)`` when already computed (shared with the
            ``log p(M)`` figure when ``T ∪ G = M``).
    """
    target, given = tuple(target), tuple(given)
    if set(target) & set(given) or not target or not given:
        raise ValueError(
            f"target {target} and given {given} must be non-empty and disjoint modality sets"
        )
    if joint is None:
        scored = tuple(m for m in model.modalities if m in target or m in given)
        joint = importance_weighted_bound(model, images, k, generator, scored=scored)
    return joint - prior_log_likelihood(model, images, given, num_prior_samples, generator)
