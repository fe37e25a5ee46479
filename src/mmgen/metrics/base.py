"""What every metric shares: subset names, chunking, posteriors and the draws of a metric's stream.

Every draw comes from an explicit ``torch.Generator`` (``mmgen.rng.stream(seed, "metric",
name)``), point by point, so no estimate depends on the chunking or on how many points follow
(STYLE.md, rule 7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmgen.errors import UsageError

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
