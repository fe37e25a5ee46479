"""JMVAE, JMVAE-zero and JMVAE-kl(α): Suzuki, Nakayama & Matsuo, *Joint multimodal learning
with deep generative models* (2016), for any number of modalities (docs/method.md).

All three learn one joint encoder ``q(z|M)`` and a decoder ``p(m|z)`` per modality by
maximising the joint bound (the paper's, with a β on the KL as in the M²VAE experiments)

    ELBO_M(M) = E_{q(z|M)}[Σ_{m∈M} log p(m|z)] − β·KL(q(z|M) ‖ p(z)).

They differ in how they infer from a strict subset ``S ⊂ M``:

- **JMVAE**: not at all; only the full set is encodable.
- **JMVAE-zero**: the same training; ``q(z|S) := q(z|S, M∖S = 0)``, the missing images
  zero-filled in the joint encoder (the naive treatment of a missing modality that the paper
  argues against, and the M²VAE paper's baseline).
- **JMVAE-kl(α)**: adds one uni-modal encoder ``q(z|m)`` per modality, trained with the joint
  model to sit close to the joint posterior (α = 0.1 in the paper)::

      L = ELBO_M(M) − α Σ_{m∈M} KL(q(z|M) ‖ q(z|m)).

  Known limit: a strict subset of two or more modalities (possible when |M| ≥ 3) has no encoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmgen.errors import UsageError
from mmgen.models.multimodal import (
    MultimodalConfig,
    MultimodalVAE,
    Subset,
    kl_term_name,
    subset_key,
)
from mmgen.objectives import kl_normal, nonempty_subsets, penalized_elbo


@dataclass(frozen=True)
class JMVAEConfig(MultimodalConfig):
    """JMVAE: the shared architecture, nothing else."""


@dataclass(frozen=True)
class JMVAEZeroConfig(MultimodalConfig):
    """JMVAE-zero: the shared architecture; zero-filling needs no parameter."""


@dataclass(frozen=True)
class JMVAEKLConfig(MultimodalConfig):
    """JMVAE-kl(α)."""

    alpha: float = 0.1  # weight of Σ_m KL(q(z|M) ‖ q(z|m)); the JMVAE paper's value

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise UsageError(f"alpha must be >= 0, got {self.alpha}")


class JMVAE(MultimodalVAE):
    """Joint encoder only; maximises ``ELBO_M(M)``."""

    name: ClassVar[str] = "jmvae"
    config_class: ClassVar[type[MultimodalConfig]] = JMVAEConfig

    def encoder_subsets(self) -> list[Subset]:
        return [self.modalities]

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        terms, bound = self.joint_terms(batch, generator)
        return {"objective": bound.elbo, **terms}


class JMVAEZero(JMVAE):
    """JMVAE whose joint encoder infers from any subset, the missing images set to zero."""

    name: ClassVar[str] = "jmvae-zero"
    config_class: ClassVar[type[MultimodalConfig]] = JMVAEZeroConfig

    def encodable_subsets(self) -> list[Subset]:
        return nonempty_subsets(self.modalities)

    def _encode(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        present = next(iter(flat.values()))  # (B, D_m) of a modality of the subset
        filled = {
            m: flat[m] if m in flat else present.new_zeros(len(present), self.config.input_dim(m))
            for m in self.modalities
        }  # missing modalities: zeros (B, D_m) of their own size
        return self.encoders[subset_key(self.modalities)](filled)


class JMVAEKL(MultimodalVAE):
    """JMVAE plus uni-modal encoders pulled towards the joint posterior by ``α·KL``."""

    name: ClassVar[str] = "jmvae-kl"
    config_class: ClassVar[type[MultimodalConfig]] = JMVAEKLConfig

    # The base's encoder_subsets: the full set and every single modality.

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        terms, bound = self.joint_terms(batch, generator)
        kls = {
            kl_term_name(self.modalities, (m,)): kl_normal(
                bound.mu, bound.logvar, *self.encode(batch, (m,))
            )
            for m in self.modalities
        }
        objective = penalized_elbo(bound.elbo, list(kls.values()), self.config.alpha)
        return {"objective": objective, **terms, **kls}
