"""Pure loss functions shared by every model: Gaussian KLs, the Bernoulli likelihood, ELBOs.

Conventions (METHOD.md, "Notation"): images are grey levels in [0, 1]; ``log p(x|z)`` is minus
the binary cross-entropy against grey-level targets **summed** over pixels; KLs between diagonal
Gaussians are analytic and summed over latent dimensions. Every function here returns one value
per example, shape ``(B,)``; callers take the batch mean.
"""

from __future__ import annotations

import math

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


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``z = μ + σ·ε`` with ``ε ~ N(0, I)`` from ``generator`` (Kingma & Welling, eq. 10)."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def beta_elbo(log_likelihood: Tensor, kl: Tensor, beta: float) -> Tensor:
    """β-VAE bound ``E_q[log p(x|z)] − β·KL(q(z|x) ‖ p(z))`` per example (Higgins et al.)."""
    return log_likelihood - beta * kl
