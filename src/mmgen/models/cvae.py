"""The class-conditional β-CVAE of Korthals et al., Table 2 (docs/method.md).

One CVAE is trained per uni-modal source. Its decoder ``p(x | z, C)`` later turns a shared
latent code ``z`` and a class ``C`` into one modality of an entangled tuple (MNIST-E).

Per-sample objective (a β-VAE bound, Higgins et al., conditioned on the label as in Sohn et al.):

    L(x, C) = Σ_pixels BCE(x, σ(decoder(z, C))) + β · KL(q(z | x, C) ‖ N(0, I)),  z ~ q(z | x, C)

with targets x/255 and the BCE summed over every channel and pixel.

Image shapes (issue #10): the layout of Table 2 is kept for any ``C × H × W`` with even ``H`` and
``W``: the first two convolutions read the source's ``C`` channels (Table 2: ``C = 1``), the
stride-2 convolution halves the image to a ``H/2 × W/2`` grid, and the decoder's stride-2
transposed convolution (``H/2 → H + 1``) and 2×2 valid convolution return ``C × H × W``. For
1×28×28 this is exactly Table 2: the same parameters, in the same order, drawn from the same
stream. Odd sizes are refused (one line naming the shape): Keras' "same" stride-2 convolution
would round up to ``⌈H/2⌉`` and the decoder would then return ``H + 1``; padding the images
instead would change what the Bernoulli likelihood scores, so that is left to the user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from mmgen.config import from_dict, require_positive
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, check_image_shape, describe, num_pixels
from mmgen.errors import UsageError
from mmgen.nn import GaussianHead, build, glorot_uniform_init, initialize, one_hot
from mmgen.objectives import (
    bernoulli_log_likelihood,
    beta_elbo,
    kl_standard_normal,
    reparameterize,
)

FEATURES = 64  # channels of every hidden convolution (Table 2)
HIDDEN = 128  # width of the fully connected layer on both sides


def default_beta(image_shape: tuple[int, int, int]) -> float:
    """β = 4 per 784 pixel values: ``4·C·H·W/784`` (exactly 4 for MNIST's 1×28×28).

    The released MNIST-E's β = 4 weighs the KL against a BCE summed over 784 pixels. Keeping
    the ratio per pixel value (β_norm = β·d/D constant, Higgins et al.) keeps that balance for
    other sizes; an unscaled β = 4 on 8×8 digits (64 values) collapses the posterior to the
    prior (KL 0.00 after 100 epochs, measured), and the decoded images then ignore z.
    """
    return 4.0 * num_pixels(image_shape) / 784


@dataclass(frozen=True)
class CVAEConfig:
    """Architecture and objective of one β-CVAE (defaults: the released MNIST-E)."""

    latent_dim: int = 2  # d: size of z, shared by every CVAE of one dataset
    num_classes: int = 10  # C: size of the one-hot label concatenated in encoder and decoder
    # Weight of the KL term; None (the default): default_beta(image_shape), set by resolved()
    # when the model is built, so the library and train-cvae agree (4 for 1×28×28).
    beta: float | None = None
    batch_norm_mu: bool = False  # BatchNorm on μ: a variant of the authors' notebooks
    # (C, H, W) of the source's images; train-cvae takes it from the data. H and W even.
    image_shape: tuple[int, int, int] = DEFAULT_IMAGE_SHAPE

    def __post_init__(self) -> None:
        require_positive("latent_dim", self.latent_dim)
        require_positive("num_classes", self.num_classes)
        if self.beta is not None and not (self.beta >= 0 and math.isfinite(self.beta)):
            raise UsageError(f"beta must be >= 0 and finite, got {self.beta}")
        shape = check_image_shape(self.image_shape, "image_shape")
        if shape[1] % 2 or shape[2] % 2:
            raise UsageError(
                f"the Table 2 CVAE halves height and width with a stride-2 convolution, so both "
                f"must be even; the images are {describe(shape)}: crop or pad them"
            )
        object.__setattr__(self, "image_shape", shape)

    def resolved(self) -> CVAEConfig:
        """This config with β set: the one given, else ``default_beta(image_shape)``.

        The one place the default is resolved (the model, ``train-cvae`` and its resume check
        call it), after the image shape is known.
        """
        if self.beta is not None:
            return self
        return replace(self, beta=default_beta(self.image_shape))

    @property
    def grid(self) -> tuple[int, int]:
        """``(H/2, W/2)``: the spatial size after the stride-2 convolution (Table 2: 14×14)."""
        return self.image_shape[1] // 2, self.image_shape[2] // 2

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CVAEConfig:
        """Rebuild a saved config; configs before #10 hold ``image_size: 28`` (1×28×28 images)."""
        data = dict(data)
        legacy_size = data.pop("image_size", None)
        if legacy_size is not None and "image_shape" not in data:
            data["image_shape"] = (1, legacy_size, legacy_size)
        return from_dict(cls, data)


class CVAEEncoder(nn.Module):
    """q(z | x, C): four convolutions, the label concatenated before the dense layer."""

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        channels = config.image_shape[0]
        grid_height, grid_width = config.grid
        self.features = nn.Sequential(
            nn.ZeroPad2d((0, 1, 0, 1)),  # Keras "same" for a 2×2 kernel pads right and bottom
            nn.Conv2d(channels, channels, 2),
            nn.ReLU(),
            nn.Conv2d(channels, FEATURES, 2, stride=2),  # H → H/2 ("same" needs no padding: H even)
            nn.ReLU(),
            nn.Conv2d(FEATURES, FEATURES, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(FEATURES, FEATURES, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),  # (B, 64·H/2·W/2), 12544 at 28×28
        )
        self.dense = nn.Sequential(
            nn.Linear(FEATURES * grid_height * grid_width + config.num_classes, HIDDEN), nn.ReLU()
        )
        self.head = GaussianHead(HIDDEN, config.latent_dim, config.batch_norm_mu)

    def forward(self, x: Tensor, label_one_hot: Tensor) -> tuple[Tensor, Tensor]:
        features = self.features(x)  # (B, 64·H/2·W/2)
        return self.head(self.dense(torch.cat([features, label_one_hot], dim=1)))


class CVAEDecoder(nn.Module):
    """p(x | z, C): two dense layers, three transposed convolutions, a 2×2 valid convolution.

    Built for fast decoding (``mmgen generate`` calls this forward; docs/performance.md):
    in-place ReLUs (no fresh buffer for the largest activation, whose page faults otherwise
    cost as much as the convolution) and, without autograd, the convolutions run on a
    channels-last input (oneDNN's fast path for transposed convolutions; NCHW is far slower on a
    CPU). Both give the same numbers; ``train-cvae`` trains channels-last too
    (``mmgen.cvae_training``).
    """

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.dense = nn.Sequential(
            nn.Linear(config.latent_dim + config.num_classes, HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(HIDDEN, FEATURES * self.grid[0] * self.grid[1]),
            nn.ReLU(inplace=True),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(FEATURES, FEATURES, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(FEATURES, FEATURES, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(FEATURES, FEATURES, 3, stride=2),  # H/2 → H + 1 ("valid")
            nn.ReLU(inplace=True),
            nn.Conv2d(FEATURES, config.image_shape[0], 2),  # H + 1 → H ("valid")
        )

    def forward(self, z: Tensor, label_one_hot: Tensor) -> Tensor:
        hidden = self.dense(torch.cat([z, label_one_hot], dim=1))
        hidden = hidden.view(-1, FEATURES, *self.grid)  # (B, 64, H/2, W/2)
        if not torch.is_grad_enabled():
            hidden = hidden.contiguous(memory_format=torch.channels_last)
        return self.deconv(hidden)  # (B, C, H, W) logits


class CVAE(nn.Module):
    """Class-conditional β-CVAE; ``loss`` returns named terms so one trainer serves all models.

    The constructor lays out the layers only (with PyTorch's placeholder weights, to be
    overwritten by ``load_state_dict``); a model to train comes from ``build_cvae``.
    """

    def __init__(self, config: CVAEConfig) -> None:
        super().__init__()
        config = config.resolved()
        self.config = config
        self.encoder = CVAEEncoder(config)
        self.decoder = CVAEDecoder(config)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Keras' initialisation, as in the authors' code: Glorot-uniform weights, zero biases.

        The first layer is a single 2×2 filter followed by a ReLU: every pixel of the image
        passes through it. Initialised with mixed signs it often starts (and stays) dead, the
        encoder sees nothing and the posterior collapses onto the prior (KL → 0). Its weights
        therefore start non-negative: a local average that the ReLU lets through.

        Args:
            generator: the source of every weight, e.g. ``mmgen.rng.stream(seed, "init")``.
        """
        initialize(self, generator, glorot_uniform_init)
        first = self.encoder.features[1]
        with torch.no_grad():
            first.weight.abs_()

    def _one_hot(self, labels: Tensor, like: Tensor) -> Tensor:
        return one_hot(labels, self.config.num_classes, like.dtype)

    def encode(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``(B, C, H, W)`` in [0, 1], labels ``(B,)`` → ``(μ, log σ²)``, each (B, d)."""
        return self.encoder(x, self._one_hot(labels, x))

    def decode_logits(self, z: Tensor, labels: Tensor) -> Tensor:
        """Codes ``(B, d)`` and labels ``(B,)`` → logits ``(B, C, H, W)``."""
        return self.decoder(z, self._one_hot(labels, z))

    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Codes and labels → images ``σ(logits)`` in [0, 1], shape ``(B, C, H, W)``."""
        return torch.sigmoid(self.decode_logits(z, labels))

    def loss(self, x: Tensor, labels: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Batch means of the negative β-ELBO (``loss``), the reconstruction NLL and the KL."""
        mu, logvar = self.encode(x, labels)
        z = reparameterize(mu, logvar, generator)
        log_likelihood = bernoulli_log_likelihood(self.decode_logits(z, labels), x)
        kl = kl_standard_normal(mu, logvar)
        return {
            "loss": -beta_elbo(log_likelihood, kl, self.config.beta).mean(),
            "reconstruction": -log_likelihood.mean(),
            "kl": kl.mean(),
        }

    def loss_on(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """The trainer's entry point: ``batch`` holds ``"images"`` and ``"labels"``."""
        return self.loss(batch["images"], batch["labels"], generator)


def build_cvae(config: CVAEConfig, generator: torch.Generator) -> CVAE:
    """A fresh CVAE on the CPU, every weight drawn from ``generator`` (``CVAE.reset_parameters``).

    Example:
        >>> model = build_cvae(CVAEConfig(), mmgen.rng.stream(seed, "init"))
    """
    return build(lambda: CVAE(config), generator, CVAE.reset_parameters)
