"""Building blocks shared by every model: MLPs, Gaussian encoder heads, seeded initialisation.

Weights are drawn from an explicit ``torch.Generator`` (``mmgen.rng.stream(seed, "init")``),
never from PyTorch's global generator: ``build`` constructs a model on the ``meta`` device (no
draws at all), materialises it on the CPU and re-draws every weight with ``initialize``. The CPU
draw makes a seed give the same weights whatever device the model then moves to.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}

ModuleT = TypeVar("ModuleT", bound=nn.Module)
WeightedLayer = nn.Linear | nn.modules.conv._ConvNd  # Linear, Conv*d and ConvTranspose*d
LayerInit = Callable[[WeightedLayer, torch.Generator], None]


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
        # The authors' notebooks tried a BatchNorm on μ; off by default (docs/method.md).
        self.mu_norm = nn.BatchNorm1d(latent_dim) if batch_norm_mu else nn.Identity()

    def forward(self, features: Tensor) -> tuple[Tensor, Tensor]:
        return self.mu_norm(self.mu(features)), self.logvar(features)


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Labels ``(B,)`` → one-hot rows ``(B, num_classes)`` in ``dtype``."""
    return nn.functional.one_hot(labels.long(), num_classes).to(dtype)


# ----- seeded initialisation ---------------------------------------------------------------
def pytorch_default_init(layer: WeightedLayer, generator: torch.Generator) -> None:
    """PyTorch's own ``reset_parameters`` of ``Linear`` / ``Conv``, drawn from ``generator``.

    Kaiming-uniform weights with ``a = √5``, i.e. ``U(±1/√fan_in)``, and biases
    ``U(±1/√fan_in)`` (He et al. 2015; the bound PyTorch keeps for compatibility with Lua Torch).
    The multi-modal VAEs and the classifiers use it.
    """
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        nn.init.uniform_(layer.bias, -bound, bound, generator=generator)


def glorot_uniform_init(layer: WeightedLayer, generator: torch.Generator) -> None:
    """Keras' default: Glorot-uniform weights ``U(±√(6 / (fan_in + fan_out)))``, zero biases.

    Glorot & Bengio (2010), eq. 16; the authors' Keras code initialised the CVAEs this way.
    """
    nn.init.xavier_uniform_(layer.weight, generator=generator)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def initialize(
    module: nn.Module, generator: torch.Generator, scheme: LayerInit = pytorch_default_init
) -> None:
    """Re-draw every weight of ``module`` in place, in ``modules()`` order, from ``generator``.

    ``Linear`` and convolution layers follow ``scheme``; batch norms reset to ``γ = 1, β = 0``
    and fresh running statistics (nothing random). Any other layer that owns parameters or
    buffers is an error: it would keep weights the generator did not draw.

    Raises:
        TypeError: ``module`` holds a layer with tensors this function does not know.
    """
    for layer in module.modules():
        if isinstance(layer, WeightedLayer):
            scheme(layer, generator)
        elif isinstance(layer, nn.modules.batchnorm._NormBase):
            layer.reset_parameters()
        elif (
            next(layer.parameters(recurse=False), None) is not None
            or next(layer.buffers(recurse=False), None) is not None
        ):
            raise TypeError(
                f"initialize cannot draw the tensors of a {type(layer).__name__}; "
                "add its scheme to mmgen.nn.initialize"
            )


def build(
    factory: Callable[[], ModuleT],
    generator: torch.Generator,
    init: Callable[[ModuleT, torch.Generator], None] = initialize,
) -> ModuleT:
    """A fresh model whose every weight comes from ``generator``, on the CPU.

    ``factory()`` runs on the ``meta`` device, so constructing the layers draws nothing from
    PyTorch's global generator; ``init(module, generator)`` then fills every tensor.

    Args:
        factory: builds the model, e.g. ``lambda: CVAE(config)``.
        generator: a CPU generator, e.g. ``mmgen.rng.stream(seed, "init")``.
        init: fills the weights; ``initialize`` (PyTorch's default scheme) unless the model
            has its own (the CVAE: Keras' Glorot-uniform).

    Example:
        >>> model = build(lambda: nn.Linear(3, 2), rng.stream(0, "init"))
    """
    with torch.device("meta"):
        module = factory()
    module = module.to_empty(device="cpu")
    init(module, generator)
    return module
