"""The shared base of the multi-modal VAEs: config, MLP encoders and decoders, the interface.

Networks follow Korthals et al. (M²VAE), Table 1, e-MNIST rows (docs/method.md):

    uni-modal encoder q(z|m):  fc D_m-128-64 → (μ, log σ²)
    subset encoder    q(z|S):  one fc D_m-128-64 branch per modality m of S, concat,
                               fc 64 → (μ, log σ²)
    decoder           p(m|z):  fc d-64-128-D_m → Bernoulli logits (B, C, H, W); one per
                               modality, shared by every encoder

with ``D_m = C·H·W`` the size of modality m's images (784 for the paper's 1×28×28; issue #10:
every modality has its own shape, ``MultimodalConfig.image_shapes``).

Every model (JMVAE and its variants, tVAE, M²VAE) is a ``MultimodalVAE`` that differs only in
which subsets get an encoder (``encoder_subsets``), which subsets it can infer from
(``encodable_subsets``) and its objective (``objective``). Models return their loss terms by
name (``loss_on``), so ``mmgen.train.fit`` trains all of them.

β: the paper states a normalised ``β_norm = β·d/D = 0.01`` with ``d`` the latent size and ``D``
the input size of one modality (784), so ``β = β_norm·D/d = 0.01·784/2 = 3.92 ≈ 4``
(``beta_from_normalized``); we keep ``β = 4``, the value of the MNIST-E CVAEs, as the default.
With modalities of different sizes, ``D`` is the mean size of one modality, ``Σ_m D_m / |M|``
(``MultimodalConfig.mean_input_dim``): the reconstruction term sums ``Σ_m D_m`` pixels and the
paper normalises by one modality's share of them, which is 784 when every modality is 1×28×28.
The default β stays 4 whatever the shapes (an explicit ``beta`` is never rescaled).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from mmgen.config import require_positive
from mmgen.data.names import check_modality_names
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, ImageShape, check_image_shape, num_pixels
from mmgen.errors import UsageError
from mmgen.nn import ACTIVATIONS, GaussianHead, initialize, mlp
from mmgen.objectives import (
    beta_elbo,
    kl_standard_normal,
    multimodal_log_likelihood,
    reparameterize,
)

IMAGE_SHAPE = DEFAULT_IMAGE_SHAPE  # (C, H, W) of a modality whose shape is not given
INPUT_DIM = num_pixels(IMAGE_SHAPE)  # D = 784: pixels of one 1×28×28 modality
Subset = tuple[str, ...]


def beta_from_normalized(beta_norm: float, latent_dim: int, input_dim: float = INPUT_DIM) -> float:
    """``β = β_norm · D / d``: the KL weight from the paper's normalised ``β_norm = β·d/D``.

    Korthals et al. report ``β_norm = 0.01`` with ``d = 2``, ``D = 784``, i.e. ``β = 3.92``.
    For modalities of different sizes pass ``D = MultimodalConfig.mean_input_dim``.
    """
    require_positive("latent_dim", latent_dim)
    require_positive("input_dim", input_dim)
    return beta_norm * input_dim / latent_dim


class SubsetBound(NamedTuple):
    """One-sample ``ELBO_S(S)`` and its parts, each ``(B,)`` (``mu``/``logvar``: ``(B, d)``)."""

    elbo: Tensor
    log_likelihood: Tensor  # Σ_{m∈S} log p(m|z), z ~ q(z|S)
    kl: Tensor  # KL(q(z|S) ‖ N(0, I))
    mu: Tensor
    logvar: Tensor


def subset_key(subset: Subset) -> str:
    """The module name of a subset's encoder, e.g. ``("a", "b")`` → ``"a+b"``."""
    return "+".join(subset)


def elbo_term_name(subset: Subset) -> str:
    """Logged name of ``ELBO_S(S)``, e.g. ``elbo_a+b``."""
    return f"elbo_{subset_key(subset)}"


def kl_term_name(subset: Subset, smaller: Subset) -> str:
    """Logged name of ``KL(q(z|S) ‖ q(z|S'))``, e.g. ``kl_a+b_a``."""
    return f"kl_{subset_key(subset)}_{subset_key(smaller)}"


@dataclass(frozen=True)
class MultimodalConfig:
    """Architecture and objective shared by every multi-modal VAE (defaults: paper's Table 1)."""

    modalities: tuple[str, ...]  # names of the modalities M, in the dataset's order (≥ 2)
    latent_dim: int = 2  # d
    beta: float = 4.0  # KL weight; β_norm = β·d/D = 0.01 in the paper gives 3.92 ≈ 4
    encoder_widths: tuple[int, ...] = (128, 64)  # hidden widths of every encoder branch
    fusion_width: int = 64  # fc layer after concatenating the branches of a subset encoder
    decoder_widths: tuple[int, ...] = (64, 128)  # hidden widths of every decoder, z first
    encoder_activation: str = "relu"  # our choice: Table 1 names an activation for decoders only
    decoder_activation: str = "tanh"  # the paper's Table 1 lists tanh for the decoders
    # (C, H, W) of every modality, in the order of `modalities` (a {modality: shape} mapping is
    # accepted and put in that order). Empty means 1×28×28 each, and all-1×28×28 is stored
    # empty: configs (model folders, evaluate's job keys) of such models read as before #10.
    image_shapes: tuple[ImageShape, ...] = ()

    def __post_init__(self) -> None:
        modalities = tuple(self.modalities)
        if len(modalities) < 2:
            raise UsageError(f"a multi-modal VAE needs at least 2 modalities, got {modalities}")
        check_modality_names(modalities)  # the same rule as dataset files (mmgen.data.names)
        require_positive("latent_dim", self.latent_dim)
        require_positive("fusion_width", self.fusion_width)
        for width in (*self.encoder_widths, *self.decoder_widths):
            require_positive("layer width", width)
        if not self.encoder_widths:
            raise UsageError("encoder_widths needs at least one hidden layer")
        if self.beta < 0:
            raise UsageError(f"beta must be >= 0, got {self.beta}")
        for field in ("encoder_activation", "decoder_activation"):
            if getattr(self, field) not in ACTIVATIONS:
                raise UsageError(
                    f"unknown {field} {getattr(self, field)!r}; choose one of {sorted(ACTIVATIONS)}"
                )
        object.__setattr__(self, "modalities", modalities)
        object.__setattr__(self, "image_shapes", _ordered_shapes(self.image_shapes, modalities))

    @property
    def shapes(self) -> dict[str, ImageShape]:
        """Modality → ``(C, H, W)`` of its images."""
        shapes = self.image_shapes or (IMAGE_SHAPE,) * len(self.modalities)
        return dict(zip(self.modalities, shapes, strict=True))

    def input_dim(self, modality: str) -> int:
        """``D_m = C·H·W``: the size of one flattened image of ``modality``."""
        return num_pixels(self.shapes[modality])

    @property
    def mean_input_dim(self) -> float:
        """``D = Σ_m D_m / |M|``: the ``D`` of ``β_norm = β·d/D`` (784 for 1×28×28 modalities)."""
        return sum(map(self.input_dim, self.modalities)) / len(self.modalities)


def _ordered_shapes(
    shapes: Mapping[str, Sequence[int]] | Sequence[Sequence[int]], modalities: Subset
) -> tuple[ImageShape, ...]:
    """The shapes of ``modalities`` in their order, checked; ``()`` when all are 1×28×28."""
    if isinstance(shapes, Mapping):
        if set(shapes) != set(modalities):
            raise UsageError(
                f"image shapes are given for {sorted(shapes)}, but the modalities are "
                f"{list(modalities)}"
            )
        shapes = [shapes[m] for m in modalities]
    elif len(shapes) == 0:
        shapes = [IMAGE_SHAPE] * len(modalities)
    if len(shapes) != len(modalities):
        raise UsageError(
            f"{len(shapes)} image shapes for the {len(modalities)} modalities {list(modalities)}"
        )
    checked = tuple(
        check_image_shape(shape, f"the image shape of modality {m!r}")
        for m, shape in zip(modalities, shapes, strict=True)
    )
    return () if all(shape == IMAGE_SHAPE for shape in checked) else checked


class SubsetEncoder(nn.Module):
    """q(z|S): one MLP branch per modality of ``S``; for ``|S| > 1`` concat and a fusion layer."""

    def __init__(self, subset: Subset, config: MultimodalConfig) -> None:
        super().__init__()
        self.subset = subset
        self.branches = nn.ModuleDict(
            {
                m: mlp((config.input_dim(m), *config.encoder_widths), config.encoder_activation)
                for m in subset
            }
        )
        width = config.encoder_widths[-1]
        if len(subset) > 1:
            self.fusion = mlp([width * len(subset), config.fusion_width], config.encoder_activation)
            width = config.fusion_width
        else:
            self.fusion = nn.Identity()  # the uni-modal encoder of Table 1 has no fusion layer
        self.head = GaussianHead(width, config.latent_dim)

    def forward(self, inputs: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Flat images ``{m: (B, D_m)}`` → ``(μ, log σ²)``, each ``(B, d)``."""
        features = torch.cat([self.branches[m](inputs[m]) for m in self.subset], dim=1)
        return self.head(self.fusion(features))


class ImageDecoder(nn.Module):
    """p(m|z): fc d-64-128-D_m → Bernoulli logits ``(B, C, H, W)``."""

    def __init__(self, config: MultimodalConfig, image_shape: ImageShape = IMAGE_SHAPE) -> None:
        super().__init__()
        self.image_shape = image_shape
        sizes = (config.latent_dim, *config.decoder_widths, num_pixels(image_shape))
        self.net = mlp(sizes, config.decoder_activation, final_activation=False)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(-1, *self.image_shape)  # (B, C·H·W) → (B, C, H, W)


class MultimodalVAE(nn.Module):
    """Base of every multi-modal VAE: encoders per subset, one decoder per modality.

    Subclasses set ``name`` and ``config_class``, and override ``encoder_subsets`` (which
    subsets own an encoder) and ``objective`` (the bound to maximise); a few also override
    ``encodable_subsets`` / ``_encode`` (JMVAE-zero) or ``stages`` / ``stage_parameters`` (tVAE).
    The constructor lays out the layers only; a model to train comes from
    ``mmgen.models.registry.build_model``, which draws every weight from a seeded stream.
    """

    name: ClassVar[str] = "multimodal"
    config_class: ClassVar[type[MultimodalConfig]] = MultimodalConfig
    stages: ClassVar[tuple[str, ...]] = ("joint",)  # training stages, run in order by fit

    def __init__(self, config: MultimodalConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, "
                f"got {type(config).__name__}"
            )
        self.config = config
        self.modalities: tuple[str, ...] = config.modalities
        self.encoders = nn.ModuleDict(
            {subset_key(s): SubsetEncoder(s, config) for s in self.encoder_subsets()}
        )
        self.decoders = nn.ModuleDict(
            {m: ImageDecoder(config, shape) for m, shape in config.shapes.items()}
        )
        self.stage = self.stages[0]  # nothing is frozen here: mmgen.train.fit runs the stages

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Re-draw every weight from ``generator`` with PyTorch's default scheme."""
        initialize(self, generator)

    # ----- which subsets -------------------------------------------------------------------
    def encoder_subsets(self) -> list[Subset]:
        """Subsets that own an encoder network (full set first). Default: full set + singles."""
        return [self.modalities, *((m,) for m in self.modalities)]

    def encodable_subsets(self) -> list[Subset]:
        """Subsets this model can infer ``q(z|S)`` from, full set first."""
        return self.encoder_subsets()

    def canonical_subset(self, subset: Sequence[str]) -> Subset:
        """``subset`` in the order of ``self.modalities``; ValueError for unknown or repeats."""
        unknown = sorted(set(subset) - set(self.modalities))
        if unknown or not subset or len(set(subset)) != len(subset):
            raise ValueError(
                f"invalid subset {tuple(subset)}: give distinct names from {self.modalities}"
            )
        return tuple(m for m in self.modalities if m in subset)

    # ----- the interface -------------------------------------------------------------------
    def encode(self, images: Mapping[str, Tensor], subset: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``q(z|S)`` of the images of ``subset``.

        Args:
            images: modality → ``(B, C, H, W)`` or ``(B, C·H·W)`` levels in [0, 1]; needs
                the modalities of ``subset`` (others are ignored).
            subset: modality names, any order.

        Returns:
            ``(μ, log σ²)``, each ``(B, d)``.

        Raises:
            ValueError: the model has no posterior for ``subset``, or an image is missing.
        """
        subset, flat = self.encoder_inputs(images, subset)
        return self._encode(flat, subset)

    def encoder_inputs(
        self, images: Mapping[str, Tensor], subset: Sequence[str]
    ) -> tuple[Subset, dict[str, Tensor]]:
        """``subset`` checked and put in canonical order, and its images flat ``(B, D_m)``."""
        subset = self.canonical_subset(subset)
        if subset not in self.encodable_subsets():
            raise ValueError(
                f"{self.name} cannot encode from {subset}; it encodes from "
                f"{self.encodable_subsets()}"
            )
        missing = [m for m in subset if m not in images]
        if missing:
            raise ValueError(f"encode from {subset} needs images of {missing}")
        return subset, {m: images[m].flatten(1) for m in subset}  # (B, D_m) each

    def _encode(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        """Run the encoder of ``subset`` on flat images (``subset`` already validated)."""
        return self.encoders[subset_key(subset)](flat)

    def posterior_components(
        self, images: Mapping[str, Tensor], subset: Sequence[str]
    ) -> tuple[Tensor, Tensor]:
        """``q(z|S)`` as a uniform mixture of ``K`` Gaussians: ``(μ, log σ²)``, each ``(K, B, d)``.

        What the metrics sample from and take densities of (``mmgen.objectives.sample_mixture``,
        ``mixture_log_prob``). Here ``K = 1``, the Gaussian of ``encode``; MMVAE and MoPoE,
        whose ``q(z|S)`` is a mixture, override it (``encode`` then gives its mean and variance).
        """
        mu, logvar = self.encode(images, subset)
        return mu.unsqueeze(0), logvar.unsqueeze(0)

    def decode_logits(self, z: Tensor) -> dict[str, Tensor]:
        """Codes ``(B, d)`` → logits ``(B, C_m, H_m, W_m)`` of every modality m."""
        return {m: decoder(z) for m, decoder in self.decoders.items()}

    def decode(self, z: Tensor) -> dict[str, Tensor]:
        """Codes ``(B, d)`` → mean images ``σ(logits)`` in [0, 1] of every modality."""
        return {m: torch.sigmoid(logits) for m, logits in self.decode_logits(z).items()}

    def loss_on(self, batch: Mapping[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """The trainer's entry point: batch means of the negative objective (``loss``) and terms.

        Args:
            batch: modality → images ``(B, C, H, W)`` in [0, 1]; ``labels`` / ``z`` ignored.
            generator: source of the reparameterisation noise.
        """
        missing = [m for m in self.modalities if m not in batch]
        if missing:
            raise ValueError(
                f"batch lacks modality(ies) {missing}; it has {sorted(batch)}, the model needs "
                f"{list(self.modalities)}"
            )
        terms = self.objective(batch, generator)
        objective = terms.pop("objective")
        return {"loss": -objective.mean(), **{name: v.mean() for name, v in terms.items()}}

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        """Per-example ``"objective"`` (the bound to maximise) and named terms, each ``(B,)``."""
        raise NotImplementedError

    # ----- training stages (mmgen.train.Staged) ----------------------------------------------
    def set_stage(self, stage: str) -> None:
        """Select the training stage: which objective ``loss_on`` returns.

        ``mmgen.train.fit`` calls it before each stage, and a reloaded model comes back in the
        stage it was saved in (``get_extra_state``).
        """
        self.check_stage(stage)
        self.stage = stage

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """The parameters ``stage`` trains (``fit`` freezes the others). Default: all."""
        self.check_stage(stage)
        return list(self.parameters())

    def check_stage(self, stage: str) -> None:
        """ValueError unless ``stage`` is one of ``self.stages``."""
        if stage not in self.stages:
            raise ValueError(f"{self.name} has stages {self.stages}, not {stage!r}")

    def get_extra_state(self) -> Tensor:
        """The current stage as its index in ``stages``, saved in ``state_dict()``.

        A tensor, not a name, so that every writer that treats the state as tensors
        (``.detach().cpu()``) carries it and ``torch.load(weights_only=True)`` reads it.
        """
        return torch.tensor(self.stages.index(self.stage))

    def set_extra_state(self, state: Tensor) -> None:
        index = int(state)
        if not 0 <= index < len(self.stages):
            raise ValueError(f"{self.name} has stages {self.stages}; saved stage index {index}")
        self.set_stage(self.stages[index])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Folders saved before the stage was part of the state hold no extra state; they were
        # written after training, i.e. in the last stage.
        state_dict.setdefault(prefix + "_extra_state", torch.tensor(len(self.stages) - 1))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----- building blocks of the objectives ------------------------------------------------
    def subset_bound(
        self,
        batch: Mapping[str, Tensor],
        subset: Subset,
        generator: torch.Generator,
    ) -> SubsetBound:
        """``ELBO_S(S)`` and its parts, with one reparameterised sample ``z ~ q(z|S)``."""
        mu, logvar = self.encode(batch, subset)
        z = reparameterize(mu, logvar, generator)
        log_likelihood = multimodal_log_likelihood({m: self.decoders[m](z) for m in subset}, batch)
        kl = kl_standard_normal(mu, logvar)
        elbo = beta_elbo(log_likelihood, kl, self.config.beta)
        return SubsetBound(elbo, log_likelihood, kl, mu, logvar)

    def joint_terms(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> tuple[dict[str, Tensor], SubsetBound]:
        """``ELBO_M(M)`` as logged terms (elbo, reconstruction NLL, KL), and the bound itself."""
        bound = self.subset_bound(batch, self.modalities, generator)
        terms = {
            elbo_term_name(self.modalities): bound.elbo,
            "reconstruction": -bound.log_likelihood,
            "kl": bound.kl,
        }
        return terms, bound
