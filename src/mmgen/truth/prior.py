"""The truncated prior p_T of a generated file, as quadrature codes or importance draws.

docs/truth.md §1: ``p_T(z) = N(z; 0, I)·1[z ∈ T] / P(T)`` with ``P(T)`` the χ²_d CDF at r²
(radial) or ``(2Φ(r) − 1)^d`` (box), exactly as ``mmgen generate`` draws codes (rejection,
``generate.TRUNCATIONS``). Two ways to integrate ``∫ p_T(z) f(z) dz``:

* ``grid_codes`` (d ≤ 2): the midpoint rule on ``points^d`` cells tiling ``[−r, r]^d``, cells
  whose centre lies outside T dropped, weights ``N(z_g) h^d`` normalised to sum to 1 (the grid
  integrates p_T to 1 exactly, so a z-independent integrand integrates to itself exactly);
  ``grid_mass`` returns the unnormalised sum, which tends to ``P(T)``.
* ``importance_codes`` (any d): ``K`` exact draws from p_T (``generate.sample_truncated_normal``)
  keyed by ``mmgen.rng``, each of weight ``1/K``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from mmgen import rng
from mmgen.errors import UsageError
from mmgen.generate import TRUNCATIONS, sample_truncated_normal

CODE_BLOCK = 2048  # codes decoded at a time (memory only)


def prior_mass(latent_dim: int, truncation: str, radius: float) -> float:
    """``P(T)`` under ``N(0, I_d)``: the exact normaliser of the truncated prior."""
    if truncation not in TRUNCATIONS:
        raise UsageError(f"unknown truncation {truncation!r}; choose one of {list(TRUNCATIONS)}")
    return TRUNCATIONS[truncation].acceptance(latent_dim, radius)


def _grid(latent_dim: int, truncation: str, radius: float, points: int) -> tuple[Tensor, Tensor]:
    """Cell centres inside T, ``(G, d)`` float64, and their unnormalised log-weights ``(G,)``."""
    if latent_dim > 2:
        raise UsageError(
            f"a quadrature grid needs a latent size d <= 2, got d = {latent_dim}; "
            "use --method importance"
        )
    if points < 2:
        raise UsageError(f"a quadrature grid needs >= 2 points per axis, got {points}")
    step = 2 * radius / points
    axis = -radius + step * (torch.arange(points, dtype=torch.float64) + 0.5)
    grid = torch.cartesian_prod(*[axis] * latent_dim).reshape(-1, latent_dim)
    grid = grid[TRUNCATIONS[truncation].keep(grid, radius)]
    log_weight = (
        -0.5 * grid.square().sum(1) - 0.5 * latent_dim * math.log(2 * math.pi)
    ) + latent_dim * math.log(step)
    return grid, log_weight


def grid_mass(latent_dim: int, truncation: str, radius: float, points: int) -> float:
    """``Σ_g N(z_g) h^d`` over the grid's cells in T: the grid's estimate of ``P(T)``."""
    _, log_weight = _grid(latent_dim, truncation, radius, points)
    return float(torch.logsumexp(log_weight, 0).exp())


def grid_codes(
    latent_dim: int, truncation: str, radius: float, points: int, block: int = CODE_BLOCK
) -> Iterator[tuple[Tensor, Tensor]]:
    """Blocks ``(z (G_b, d) float32, log w (G_b,) float64)`` of the grid, ``Σ_g w_g = 1``."""
    grid, log_weight = _grid(latent_dim, truncation, radius, points)
    log_weight = log_weight - torch.logsumexp(log_weight, 0)  # integrates p_T to 1
    for start in range(0, len(grid), block):
        yield grid[start : start + block].float(), log_weight[start : start + block]


def importance_codes(
    latent_dim: int,
    truncation: str,
    radius: float,
    samples: int,
    seed: int,
    block: int = CODE_BLOCK,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Blocks of ``samples`` exact draws from p_T, each of log-weight ``−log K``.

    Block ``b`` comes from the stream ``(seed, "truth", "importance", b)``.
    """
    if samples < 2:
        raise UsageError(f"importance sampling needs >= 2 samples, got {samples}")
    log_weight = -math.log(samples)
    for index, start in enumerate(range(0, samples, block)):
        count = min(block, samples - start)
        generator = rng.stream(seed, "truth", "importance", index)
        z = sample_truncated_normal(count, latent_dim, truncation, radius, generator)
        yield z, torch.full((count,), log_weight, dtype=torch.float64)
