"""Metrics of a trained multi-modal VAE and of a generated dataset (METHOD.md §5).

Every function takes a model with the ``MultimodalVAE`` interface (``modalities``,
``config.latent_dim``, ``encodable_subsets()``, ``encode(images, subset)``,
``decode_logits(z)``), tensors already on the model's device, and an explicit
``torch.Generator`` where it draws. Images are ``{modality: (N, C, H, W)}`` levels in
[0, 1]; every likelihood is the Bernoulli of ``mmgen.objectives`` summed over every channel
and pixel of every modality (``C·H·W`` terms each; 784 at 1×28×28).

Bounds on the marginal likelihood (all with ``β = 1``: they are bounds on ``log p``, whatever β
the model was trained with):

* subset ELBO (the M²VAE paper's tables): ``L_S = E_{q(z|S)} log[p(M|z) p(z) / q(z|S)]`` —
  encode from ``S`` only, score **all** modalities ``M``;
* importance-weighted bound (Burda et al., eq. 8):
  ``log p(M) ≥ E log (1/K) Σ_k p(M|z_k) p(z_k) / q(z_k|M)``, ``z_k ~ q(z|M)``;
* conditional (Suzuki et al., JMVAE, §4.3): ``log p(a|b) ≈ IW(log p(a, b)) −
  log (1/N_w) Σ_j p(b|z_j)``, ``z_j ~ p(z)``;
* quadrature, for ``d ≤ 2``: ``log p(M) ≈ log Σ_g h^d p(z_g) p(M|z_g)`` on a grid of codes
  shared by every point (an estimate, not a bound; tighter than the IW bound when the grid is
  fine enough).

Mixture posteriors: MMVAE's and MoPoE's ``q(z|S)`` is a uniform mixture of Gaussians, not a
Gaussian. Every bound samples from and takes the density of ``q(z|S)`` through its components
(``posterior_mixture``: the model's ``posterior_components`` where it has one, else the
Gaussian of ``encode`` as one component), so the proposal and its density are exact for every
model; ``encode`` (``posterior``) gives the mixture's mean, which the coherence, the probes and
the plots use. KL and JSD involving a mixture are Monte-Carlo estimates.

Coherence and agreement: cross and joint coherence through real-data classifiers (Shi et al.,
MMVAE, §4), KL and Jensen–Shannon divergences between the posteriors of different subsets,
a Gaussian naive-Bayes classifier on latent means (Korthals et al., M²VAE), and the Fréchet
distance (Heusel et al., eq. 6). Latent recovery has its own module, ``mmgen.probes``.

Speed and memory (docs/performance.md): ``log p(x|z) = Σ_pixels [x·l − softplus(l)]``, so the
``x·l`` part is a matrix product (targets are never copied ``K`` times) and one softplus per
logit is the only elementwise work; codes are decoded ``CODES_PER_CHUNK`` at a time, a block
that stays in cache. Peak memory does not grow with the number of data points. Every point
draws its own samples in one call on the generator, in order, so no result depends on a chunk
or batch size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mmgen import rng
from mmgen.errors import UsageError
from mmgen.objectives import (
    iw_log_mean_exp,
    kl_normal,
    log_normal,
    log_standard_normal,
    mixture_log_prob,
    multimodal_elbo,
    multimodal_log_likelihood,
)

Images = Mapping[str, Tensor]
Subset = tuple[str, ...]
Classify = Callable[[Tensor], Tensor]  # images (B, C, H, W) in [0, 1] → class scores (B, K)

CODES_PER_CHUNK = 1024  # codes decoded and scored at once: (1024, 784) fp32 logits ≈ 3 MB stay
# in cache between the decoder's product and the softplus (mmvae decodes 12000 codes at once)
POINTS_PER_CHUNK = 1024  # data points per matrix product of the shared-code estimates
PRIOR_CHUNK = 1_000  # prior draws (and grid codes) decoded at once by the shared-code estimates
QUADRATURE_POINTS = 201  # grid codes per latent dimension of ``quadrature_log_likelihood``
QUADRATURE_RADIUS = 6.0  # the grid spans [−r, r]^d; N(0, 1) puts 2·10⁻⁹ of its mass beyond 6


def subset_name(subset: Sequence[str]) -> str:
    """``("a", "b")`` → ``"a+b"``: how subsets are named in reports (as the models name them)."""
    return "+".join(subset)


def _size(images: Images) -> int:
    return len(next(iter(images.values())))


def _device(images: Images) -> torch.device:
    return next(iter(images.values())).device


def _chunk(images: Images, start: int, stop: int) -> dict[str, Tensor]:
    return {m: x[start:stop] for m, x in images.items()}


def _require_encodable(model, subset: Sequence[str]) -> Subset:
    subset = tuple(subset)
    encodable = [tuple(s) for s in model.encodable_subsets()]
    if subset not in encodable:
        names = ", ".join(subset_name(s) for s in encodable)
        raise ValueError(
            f"{type(model).__name__} cannot encode from {subset_name(subset)}; "
            f"it encodes from: {names}"
        )
    return subset


def _require_positive_samples(name: str, value: int) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be a positive number of samples, got {value}")


def draw_normal(
    generator: torch.Generator, shape: Sequence[int], device: torch.device | str
) -> Tensor:
    """``ε ~ N(0, I)`` of ``shape`` from ``generator``, returned on ``device``.

    The draw happens where the generator lives (a CPU generator with a CUDA model is fine: the
    draws are moved), so a result depends on the stream, never on the model's device.

    Raises:
        TypeError: ``generator`` is not a ``torch.Generator`` (metrics never fall back to the
            global stream; build one with ``mmgen.rng.stream(seed, "metric", name)``).
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"metrics draw from an explicit torch.Generator, got {generator!r}; build one with "
            "mmgen.rng.stream(seed, 'metric', name, device=device)"
        )
    return torch.randn(tuple(shape), generator=generator, device=generator.device).to(device)


def draw_seed(generator: torch.Generator) -> int:
    """One non-negative 62-bit integer from ``generator``: the seed of a derived stream."""
    draw_normal(generator, (0,), "cpu")  # refuses anything but a torch.Generator
    return int(torch.randint(2**62, (1,), generator=generator, device=generator.device))


def draw_per_point(
    generator: torch.Generator, points: int, shape: Sequence[int], device: torch.device | str
) -> Tensor:
    """``(points, *shape)`` normal draws, one call per data point, in order.

    Point ``i`` gets the ``i``-th draw of ``shape`` from the stream whatever the chunking, so
    no estimate depends on how many points are processed at once (STYLE.md, rule 7).
    """
    return torch.stack([draw_normal(generator, shape, device) for _ in range(points)])


def draw_mixture_per_point(
    generator: torch.Generator, mu: Tensor, logvar: Tensor, count: int
) -> Tensor:
    """``count`` draws per point from the uniform mixture of ``(μ_k, σ_k²)``, ``(B, count, d)``.

    Point ``i`` takes its ``ε`` (and, for ``K > 1`` components, then its component indices)
    from the stream in order, as :func:`draw_per_point`, so no draw depends on the chunking.
    With ``K = 1`` the draws are exactly ``μ + σ·ε`` of :func:`draw_per_point`.

    Args:
        generator: the metric's stream.
        mu: ``(K, B, d)`` component means.
        logvar: ``(K, B, d)`` component log-variances.
        count: draws per point.
    """
    components, batch, latent_dim = mu.shape
    if components == 1:
        eps = draw_per_point(generator, batch, (count, latent_dim), mu.device)  # (B, count, d)
        return mu[0].unsqueeze(1) + (0.5 * logvar[0]).exp().unsqueeze(1) * eps
    eps, index = [], []
    for _ in range(batch):
        eps.append(draw_normal(generator, (count, latent_dim), mu.device))
        index.append(torch.randint(components, (count,), generator=generator,
                                   device=generator.device).to(mu.device))  # fmt: skip
    eps, index = torch.stack(eps), torch.stack(index)  # (B, count, d), (B, count)
    rows = torch.arange(batch, device=mu.device).unsqueeze(1)  # (B, 1)
    return mu[index, rows] + (0.5 * logvar[index, rows]).exp() * eps


def covering_subset(model, modalities: Sequence[str]) -> Subset:
    """The smallest encodable subset that holds every one of ``modalities`` (the proposal).

    Any ``q`` gives a valid importance-weighted bound; the one conditioned on exactly the
    scored modalities is the natural choice, the full set the fallback (plain JMVAE).
    """
    wanted = set(modalities)
    candidates = [tuple(s) for s in model.encodable_subsets() if wanted <= set(s)]
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no encoder covering {sorted(wanted)}")
    return min(candidates, key=len)


@torch.no_grad()
def posterior(
    model, images: Images, subset: Sequence[str], batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """``(μ, log σ²)`` of ``q(z|S)`` for every data point, each ``(N, d)``.

    Only the images of ``subset`` are handed to the encoder, so nothing else can leak in.
    """
    subset = _require_encodable(model, subset)
    mus, logvars = [], []
    for start in range(0, _size(images), batch_size):
        chunk = {m: images[m][start : start + batch_size] for m in subset}
        mu, logvar = model.encode(chunk, subset)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)


def _components(model, images: Images, subset: Subset) -> tuple[Tensor, Tensor]:
    """``q(z|S)`` as uniform-mixture components ``(K, B, d)``; ``K = 1`` for a Gaussian."""
    components = getattr(model, "posterior_components", None)
    if components is None:  # a model with the plain interface: its q(z|S) is the Gaussian
        mu, logvar = model.encode(images, subset)
        return mu.unsqueeze(0), logvar.unsqueeze(0)
    return components(images, subset)


@torch.no_grad()
def posterior_mixture(
    model, images: Images, subset: Sequence[str], batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """The components ``(μ, log σ²)`` of ``q(z|S)`` for every data point, each ``(K, N, d)``.

    ``q(z|S) = (1/K) Σ_k N(μ_k, σ_k²)``; ``K = 1`` where the model's posterior is Gaussian.
    """
    subset = _require_encodable(model, subset)
    parts = [
        _components(model, {m: images[m][start : start + batch_size] for m in subset}, subset)
        for start in range(0, _size(images), batch_size)
    ]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


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


def gaussian_frechet_distance(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` (Heusel et al., eq. 6; Dowson–Landau).

    ``Tr (Σ_a Σ_b)^{1/2}`` is computed as ``Σ √λ`` over the eigenvalues of the symmetric
    ``Σ_a^{1/2} Σ_b Σ_a^{1/2}``, which has the same spectrum, so no non-symmetric square root
    is needed.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N_a, F)``, ``(N_b, F)``."""
    a = np.asarray(torch.as_tensor(features_a).double().cpu())
    b = np.asarray(torch.as_tensor(features_b).double().cpu())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"Fréchet distance needs two feature matrices (N, F) with the same F and N >= 2, "
            f"got {a.shape} and {b.shape}"
        )
    return gaussian_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
