"""Building blocks shared by every model: MLPs and Gaussian encoder heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def mlp(
    sizes: Sequence[int], activation: str = "relu", final_activation: bool = True
) -> nn.Sequential:
    """Fully connected stack ``sizes[0] → sizes[1] → … → sizes[-1]``.

    Args:
        sizes: layer widths, input first.
        activation: a key of ``ACTIVATIONS``.
        final_activation: apply the activation after the last layer too.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if final_activation or i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """Two linear maps from features to the mean and log-variance of a diagonal Gaussian."""

    def __init__(self, in_features: int, latent_dim: int, batch_norm_mu: bool = False) -> None:
        super().__init__()
        self.mu = nn.Linear(in_features, latent_dim)
        self.logvar = nn.Linear(in_features, latent_dim)
        # The authors' notebooks tried a BatchNorm on μ; off by default (METHOD.md §1).
        self.mu_norm = nn.BatchNorm1d(latent_dim) if batch_norm_mu else nn.Identity()

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu_norm(self.mu(features)), self.logvar(features)


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Labels ``(B,)`` → one-hot rows ``(B, num_classes)`` in ``dtype``."""
    return nn.functional.one_hot(labels.long(), num_classes).to(dtype)
