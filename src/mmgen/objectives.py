"""Pure loss functions shared by every model: Gaussian KLs, the Bernoulli likelihood, ELBOs.

Conventions (docs/method.md, "Notation"): images are grey levels in [0, 1]; ``log p(x|z)`` is minus
the binary cross-entropy against grey-level targets **summed** over pixels; KLs between diagonal
Gaussians are analytic and summed over latent dimensions. Every loss function here returns one
value per example, shape ``(B,)``; callers take the batch mean.

The multi-modal bounds (docs/method.md) are built from one term: for subsets ``S, T`` of the
modalities ``M``,

    ELBO_S(T) = E_{q(z|S)}[Σ_{m∈T} log p(m|z)] − β · KL(q(z|S) ‖ p(z)),   p(z) = N(0, I),

estimated with one reparameterised sample ``z ~ q(z|S)`` (``multimodal_elbo``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LOG_2PI = math.log(2.0 * math.pi)


def bernoulli_log_likelihood(logits: Tensor, target: Tensor) -> Tensor:
    """``log p(x|z) = Σ_pixels [x log σ(l) + (1 − x) log(1 − σ(l))]`` per example.

    Args:
        logits: decoder outputs ``l``, shape ``(B, ...)``.
        target: grey levels ``x`` in [0, 1], same shape.

    Returns:
        Shape ``(B,)``: minus the summed binary cross-entropy (a continuous-Bernoulli-free,
        grey-level BCE, as the authors' code used).
    """
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return -bce.flatten(1).sum(1)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_i (σ_i² + μ_i² − 1 − log σ_i²)``, shape ``(B,)``."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum(-1)


def kl_normal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """``KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²))`` for diagonal Gaussians, summed over dimensions.

    ``½ Σ_i [log σ_p² − log σ_q² + (σ_q² + (μ_q − μ_p)²) / σ_p² − 1]``.
    """
    return 0.5 * (
        logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0
    ).sum(-1)


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Log density of a diagonal Gaussian at ``z``, summed over the last dimension."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """Log density of ``N(0, I)`` at ``z``, summed over the last dimension."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(-1)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator) -> Tensor:
    """Draw ``z = μ + σ·ε`` with ``ε ~ N(0, I)`` from ``generator`` (Kingma & Welling, eq. 10)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def beta_elbo(log_likelihood: Tensor, kl: Tensor, beta: float) -> Tensor:
    """β-VAE bound ``E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z))`` per example (Higgins et al.)."""
    return log_likelihood - beta * kl


def iw_log_mean_exp(log_w: Tensor, dim: int = 0) -> Tensor:
    """``log (1/K) Σ_k exp(log w_k) = logsumexp_k(log w_k) − log K``, stable for any scale.

    The inner quantity of the importance-weighted bound (Burda et al. 2016, the bound L_K):
    ``log p(x) ≥ E[log (1/K) Σ_k p(x, z_k) / q(z_k|x)]`` with ``log_w_k`` the log-weights.

    Args:
        log_w: log-weights with ``K`` samples along ``dim``.
        dim: the sample dimension, reduced away.
    """
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def multimodal_log_likelihood(
    logits: Mapping[str, Tensor], targets: Mapping[str, Tensor]
) -> Tensor:
    """``Σ_{m∈T} log p(m|z)`` per example: the modalities ``T`` scored are the keys of ``logits``.

    Args:
        logits: modality → decoder logits ``(B, ...)``.
        targets: modality → grey levels in [0, 1] of the same shape (extra keys are ignored).

    Returns:
        Shape ``(B,)``.
    """
    if not logits:
        raise ValueError("multimodal_log_likelihood needs at least one modality")
    missing = sorted(set(logits) - set(targets))
    if missing:
        raise ValueError(f"no target images for modality(ies) {missing}; got {sorted(targets)}")
    return sum(
        bernoulli_log_likelihood(logits[m], targets[m].reshape(logits[m].shape)) for m in logits
    )


def multimodal_elbo(
    logits: Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    mu: Tensor,
    logvar: Tensor,
    beta: float,
) -> Tensor:
    """``ELBO_S(T) = Σ_{m∈T} log p(m|z) − β·KL(q(z|S) ‖ N(0, I))`` per example.

    The one-sample estimate of the β-ELBO of Higgins et al. for a subset: ``logits`` decode a
    ``z ~ q(z|S) = N(μ, σ²)`` into the modalities ``T`` (its keys). Suzuki et al.'s JMVAE bound
    is the case ``S = T = M``, ``β = 1``.

    Args:
        logits: modality ``m ∈ T`` → logits of ``p(m|z)``, ``(B, ...)``.
        targets: modality → grey levels in [0, 1] (extra keys are ignored).
        mu: ``(B, d)`` mean of ``q(z|S)``.
        logvar: ``(B, d)`` log-variance of ``q(z|S)``.
        beta: weight of the KL term.
    """
    return beta_elbo(
        multimodal_log_likelihood(logits, targets), kl_standard_normal(mu, logvar), beta
    )


def penalized_elbo(elbo: Tensor, kls: Sequence[Tensor], alpha: float) -> Tensor:
    """``ELBO − α Σ_i KL_i`` per example: JMVAE-kl and the M²VAE ``J`` term.

    JMVAE-kl (Suzuki et al. 2016) takes ``ELBO = ELBO_M(M)`` and
    ``KL_m = KL(q(z|M) ‖ q(z|m))`` for every modality ``m``; the M²VAE ``J(S)`` (Korthals et al.)
    takes ``ELBO = ELBO_S(S)`` and one KL per subset of ``S`` one modality smaller.
    """
    return elbo - alpha * sum(kls, torch.zeros_like(elbo))


def nonempty_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities`` as a tuple in the modalities' order, largest first.

    Example: ``("a", "b")`` → ``[("a", "b"), ("a",), ("b",)]``.
    """
    return [
        subset
        for size in range(len(modalities), 0, -1)
        for subset in itertools.combinations(tuple(modalities), size)
    ]


def m2vae_subset_weights(modalities: Sequence[str]) -> dict[tuple[str, ...], float]:
    """Total weight of every subset's ELBO term in the expanded M²VAE objective.

    The recursion of Korthals et al. (M²VAE; the |M| = 3 form is in their appendix)::

        L(S)   = (1/|S|) · [ J(S) + Σ_{S' ⊂ S, |S'| = |S|−1} L(S') ]        for |S| ≥ 2
        L({m}) = ELBO_m(m)
        J(S)   = ELBO_S(S) − α Σ_{S' ⊂ S, |S'| = |S|−1} KL(q(z|S) ‖ q(z|S'))

    visits every subset once per path from ``M`` down to it. Let ``c(S)`` be the total
    coefficient of ``L(S)`` in ``L(M)``: ``c(M) = 1`` and ``c(S') = Σ_{parents S} c(S)/|S|``.
    The ELBO (and ``J``) of ``S`` then has weight ``c(S)/|S|`` when ``|S| ≥ 2`` and ``c(S)``
    for a single modality. Since each ``L(S)`` hands ``c(S)/|S|`` to each of its ``|S|``
    children, ``Σ_{|S|=k} c(S) = 1`` on every level ``k``.

    Two modalities: ``½`` for each of ``ELBO_ab``, ``ELBO_a``, ``ELBO_b``. Three: ``⅓`` on the
    full set, ``⅙`` on each pair, ``⅓`` on each single modality.

    Args:
        modalities: the full set ``M`` (at least one name).

    Returns:
        Subset (a tuple in the order of ``modalities``) → weight of ``ELBO_S(S)``, every
        non-empty subset, largest first.
    """
    coefficients = _m2vae_coefficients(modalities)
    return {s: c / len(s) if len(s) > 1 else c for s, c in coefficients.items()}


def m2vae_kl_weights(
    modalities: Sequence[str],
) -> dict[tuple[tuple[str, ...], tuple[str, ...]], float]:
    """Weight (before ``α``) of every ``KL(q(z|S) ‖ q(z|S'))`` in the expanded M²VAE objective.

    Each KL sits inside ``J(S)``, so its weight is ``J(S)``'s: ``c(S)/|S|`` (see
    ``m2vae_subset_weights``), for every ``S`` with ``|S| ≥ 2`` and ``S' ⊂ S``,
    ``|S'| = |S| − 1``. Two modalities: ``½`` on ``KL(q_ab ‖ q_a)`` and ``KL(q_ab ‖ q_b)``.

    Returns:
        ``(S, S')`` → weight; ``S'`` keeps the order of ``modalities``.
    """
    weights = m2vae_subset_weights(modalities)
    return {
        (subset, child): weights[subset]
        for subset in weights
        if len(subset) > 1
        for child in itertools.combinations(subset, len(subset) - 1)
    }


def _m2vae_coefficients(modalities: Sequence[str]) -> dict[tuple[str, ...], float]:
    """``c(S)``: the total coefficient of ``L(S)`` in ``L(M)`` (one pass, largest sets first)."""
    modalities = tuple(modalities)
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be non-empty and distinct, got {modalities}")
    coefficients = dict.fromkeys(nonempty_subsets(modalities), 0.0)
    coefficients[modalities] = 1.0
    for subset in coefficients:  # largest first: every parent is final before its children
        if len(subset) > 1:
            for child in itertools.combinations(subset, len(subset) - 1):
                coefficients[child] += coefficients[subset] / len(subset)
    return coefficients


def m2vae_objective(
    elbos: Mapping[tuple[str, ...], Tensor],
    kls: Mapping[tuple[tuple[str, ...], tuple[str, ...]], Tensor],
    modalities: Sequence[str],
    alpha: float,
) -> Tensor:
    """The M²VAE bound ``L(M)`` per example, the recursion expanded with precomputed weights.

    ``L(M) = Σ_S w_S · ELBO_S(S) − α Σ_{(S, S')} w_{S,S'} · KL(q(z|S) ‖ q(z|S'))`` with
    ``w`` from ``m2vae_subset_weights`` and ``m2vae_kl_weights`` (Korthals et al.).
    Two modalities: ``½[ELBO_a(a) + ELBO_b(b) + ELBO_ab(a,b) − α KL(q_ab‖q_a) − α KL(q_ab‖q_b)]``.

    Args:
        elbos: every non-empty subset ``S`` → ``ELBO_S(S)``, shape ``(B,)``.
        kls: every ``(S, S')`` of ``m2vae_kl_weights`` → the KL, shape ``(B,)``.
        modalities: the full set ``M``.
        alpha: weight of the KL terms.
    """
    elbo_weights = m2vae_subset_weights(modalities)
    kl_weights = m2vae_kl_weights(modalities)
    missing = [s for s in elbo_weights if s not in elbos] + [p for p in kl_weights if p not in kls]
    if missing:
        raise ValueError(f"m2vae_objective is missing the terms {missing}")
    total = sum(w * elbos[s] for s, w in elbo_weights.items())
    return total - alpha * sum(w * kls[pair] for pair, w in kl_weights.items())


# ----- Today's aggregators (docs/method.md): products and mixtures of experts ------------------
def product_of_experts(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """``PoE(S)``: the product of the prior expert ``N(0, I)`` and the Gaussian experts of ``S``.

    Wu & Goodman (2018), MVAE, eq. 5 with the prior expert of their §3: for experts
    ``N(μ_m, σ_m²)``, ``m ∈ S``,

        precision  T = 1 + Σ_{m∈S} σ_m⁻²,     mean  μ = (Σ_{m∈S} μ_m σ_m⁻²) / T,

    per latent dimension (the prior contributes precision 1 and mean 0).

    Computed in log-precision: ``log T = logsumexp(0, −log σ_1², …)`` and the weights
    ``σ_m⁻²/T = exp(−log σ_m² − log T)`` lie in [0, 1], so no ``exp(−log σ²)`` overflows
    (float32 does at ``log σ² < −88``, which left a NaN mean) or underflows to a lost expert.

    Args:
        mu: ``(E, B, d)`` means of the ``E`` experts of ``S``.
        logvar: ``(E, B, d)`` their log-variances.

    Returns:
        ``(μ, log σ²)`` of the product, each ``(B, d)``.
    """
    prior = torch.zeros_like(logvar[:1])  # the prior expert's log-precision, log 1
    log_precision = torch.logsumexp(torch.cat([prior, -logvar]), dim=0)  # (B, d): log T
    mean = (mu * torch.exp(-logvar - log_precision)).sum(0)
    return mean, -log_precision


def mixture_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """``log q(z) = log (1/K) Σ_k N(z; μ_k, σ_k²)``: a uniform mixture of diagonal Gaussians.

    The log-mean-exp of the component densities (Shi et al. 2019, MMVAE, eq. 3 and §3's
    ``log q(z|x_{1:M})``); with ``K = 1`` it is exactly ``log_normal``.

    Args:
        z: ``(..., B, d)`` points, any leading sample dimensions.
        mu: ``(K, B, d)`` component means.
        logvar: ``(K, B, d)`` component log-variances.

    Returns:
        ``(..., B)``.
    """
    per_component = log_normal(z.unsqueeze(-3), mu, logvar)  # (..., K, B)
    return iw_log_mean_exp(per_component, dim=-2)


def sample_mixture(mu: Tensor, logvar: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """Draws from the uniform mixture of ``(μ_k, σ_k²)``: ``(count, B, d)``.

    A component is drawn uniformly for each sample, then ``z = μ_k + σ_k·ε``. With ``K = 1`` no
    component is drawn, so the draws equal ``reparameterize`` on the expanded parameters.

    Args:
        mu: ``(K, B, d)`` component means.
        logvar: ``(K, B, d)`` component log-variances.
        count: samples per data point.
        generator: source of the component indices and of ``ε``.
    """
    components, batch, latent_dim = mu.shape
    shape = (count, batch, latent_dim)
    if components == 1:
        return reparameterize(mu[0].expand(shape), logvar[0].expand(shape), generator)
    index = torch.randint(components, (count, batch), generator=generator, device=mu.device)
    rows = torch.arange(batch, device=mu.device).expand(count, batch)
    return reparameterize(mu[index, rows], logvar[index, rows], generator)  # (count, B, d)


def mixture_moments(mu: Tensor, logvar: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and log-variance of the uniform mixture of ``(μ_k, σ_k²)``, each ``(B, d)``.

    ``E[z] = mean_k μ_k``, ``Var[z] = mean_k (σ_k² + μ_k²) − E[z]²`` (law of total variance).
    """
    mean = mu.mean(0)
    variance = (logvar.exp() + mu.pow(2)).mean(0) - mean.pow(2)
    return mean, variance.clamp_min(torch.finfo(variance.dtype).tiny).log()


def mmvae_stratified_elbo(
    log_likelihoods: Sequence[Tensor],
    samples: Sequence[Tensor],
    mu: Tensor,
    logvar: Tensor,
    beta: float,
) -> Tensor:
    """MMVAE's stratified bound with a β on the KL estimate, per example ``(B,)``.

    Shi et al. (2019), eq. 4 (one draw per stratum) with ``q(z|M) = (1/|M|) Σ_m q(z|m)``:

        (1/|M|) Σ_m [ log p(M|z_m) + β (log p(z_m) − log q(z_m|M)) ],   z_m ~ q(z|m),

    with ``log q(z|M)`` the log-mean-exp of the component densities (``mixture_log_prob``).
    ``β = 1`` is the paper's bound.

    Args:
        log_likelihoods: per expert ``m``, ``log p(M|z_m)`` (every modality scored), ``(B,)``.
        samples: per expert ``m``, its draw ``z_m``, ``(B, d)``, in the order of ``mu``.
        mu: ``(|M|, B, d)`` the experts' means.
        logvar: ``(|M|, B, d)`` their log-variances.
        beta: weight of the KL estimate.
    """
    if not len(log_likelihoods) == len(samples) == len(mu):
        raise ValueError(
            f"one log-likelihood and one draw per expert: got {len(log_likelihoods)}, "
            f"{len(samples)} for {len(mu)} experts"
        )
    terms = [
        ll + beta * (log_standard_normal(z) - mixture_log_prob(z, mu, logvar))
        for ll, z in zip(log_likelihoods, samples, strict=True)
    ]
    return torch.stack(terms).mean(0)


def mopoe_objective(
    log_likelihoods: Sequence[Tensor], kls: Sequence[Tensor], beta: float
) -> Tensor:
    """MoPoE's bound per example: the mean over subsets of ``E_{q(z|S)} log p(M|z) − β KL``.

    Sutter, Daunhawer & Vogt (2021), eq. 7 with the KL of the mixture bounded by the mean of
    its components' (their eq. 8): for every non-empty ``S ∈ P(M)``, ``q(z|S) = PoE(S)``,

        (1/|P|) Σ_S [ E_{q(z|S)} log p(M|z) − β KL(q(z|S) ‖ p(z)) ].

    Args:
        log_likelihoods: per subset, ``log p(M|z_S)`` with ``z_S ~ PoE(S)``, ``(B,)``.
        kls: per subset (same order), ``KL(PoE(S) ‖ N(0, I))``, ``(B,)``.
        beta: weight of the KLs.
    """
    if len(log_likelihoods) != len(kls) or not kls:
        raise ValueError(f"one KL per subset: got {len(log_likelihoods)} and {len(kls)} terms")
    return torch.stack(
        [beta_elbo(ll, kl, beta) for ll, kl in zip(log_likelihoods, kls, strict=True)]
    ).mean(0)
