"""tVAE: Vedantam, Fischer, Huang & Murphy, *Generative models of visually grounded imagination*
(2018), the "triple ELBO", for any number of modalities (docs/method.md).

Objective (the paper's triple ELBO, one uni-modal term per modality):

    L = ELBO_M(M) + Σ_{m∈M} ELBO_m(m),
    ELBO_S(T) = E_{q(z|S)}[Σ_{t∈T} log p(t|z)] − β·KL(q(z|S) ‖ p(z)),

where the uni-modal terms train only the uni-modal encoders ``q(z|m)``, never the shared
decoders. As Korthals et al. did for their comparison (M²VAE paper), training runs in two
stages rather than with stopped gradients in one (``mmgen.train.fit`` runs them in order, one
optimiser each; a saved model reloads in the stage it reached):

1. ``"joint"``: maximise ``ELBO_M(M)``; trains the joint encoder and the decoders.
2. ``"unimodal"``: freeze the decoders and the joint encoder; maximise ``Σ_m ELBO_m(m)``,
   which trains each ``q(z|m)`` against the fixed decoder of its own modality.

The uni-modal encoders see only their own modality's likelihood, so nothing pulls ``q(z|m)``
towards ``q(z|M)`` except the shared decoder (the known weakness M²VAE's KL terms address).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from mmgen.models.multimodal import (
    MultimodalConfig,
    MultimodalVAE,
    elbo_term_name,
    subset_key,
)


@dataclass(frozen=True)
class TVAEConfig(MultimodalConfig):
    """tVAE: the shared architecture; the two stages need no parameter."""


class TVAE(MultimodalVAE):
    """Joint and uni-modal encoders, shared decoders, trained in two stages."""

    name: ClassVar[str] = "tvae"
    config_class: ClassVar[type[MultimodalConfig]] = TVAEConfig
    stages: ClassVar[tuple[str, ...]] = ("joint", "unimodal")

    def stage_parameters(self, stage: str) -> list[nn.Parameter]:
        """``"joint"``: the joint encoder and the decoders; ``"unimodal"``: the ``q(z|m)``."""
        self.check_stage(stage)
        if stage == "joint":
            modules = [self.encoders[subset_key(self.modalities)], self.decoders]
        else:
            modules = [self.encoders[subset_key((m,))] for m in self.modalities]
        return [p for module in modules for p in module.parameters()]

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        if self.stage == "joint":
            terms, bound = self.joint_terms(batch, generator)
            return {"objective": bound.elbo, **terms}
        elbos = {
            elbo_term_name((m,)): self.subset_bound(batch, (m,), generator).elbo
            for m in self.modalities
        }
        return {"objective": sum(elbos.values()), **elbos}
