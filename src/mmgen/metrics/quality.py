"""Image quality: the Fréchet distance between two feature sets (Heusel et al. 2017, eq. 6)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


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
