"""MoPoE: Sutter, Daunhawer & Vogt, *Generalized multimodal ELBO* (ICLR 2021), with the
Table-1 networks (docs/method.md, "Today's aggregators").

The posterior of a subset ``S`` is the uniform mixture, over the non-empty subsets ``S'`` of
``S``, of their products of experts with the prior expert (their eq. 6 with PoE subsets)::

    q(z|S) = (1/|P(S)|) Σ_{S' ∈ P(S)} PoE(S'),     P(S) = the non-empty subsets of S.

Objective, their eq. 7 with the mixture's KL bounded by the mean of its components' (eq. 8)::

    L = (1/|P(M)|) Σ_{S ∈ P(M)} [ E_{PoE(S)} log p(M|z) − β KL(PoE(S) ‖ p(z)) ],

one reparameterised draw per subset, every modality ``M`` scored from every subset.

Evaluation: ``q(z|S)`` is a mixture for ``|S| ≥ 2``; ``posterior_components`` hands the
metrics its components, ``encode`` its mean and variance (the Gaussian ``PoE({m})`` for a
single modality).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmgen.models.experts import ExpertsVAE
from mmgen.models.multimodal import MultimodalConfig, Subset, elbo_term_name
from mmgen.objectives import (
    beta_elbo,
    kl_standard_normal,
    mopoe_objective,
    multimodal_log_likelihood,
    nonempty_subsets,
    reparameterize,
)


@dataclass(frozen=True)
class MoPoEConfig(MultimodalConfig):
    """MoPoE: the shared architecture; the mixture of products needs no parameter."""


class MoPoE(ExpertsVAE):
    """Uniform mixture of the products of experts of every non-empty subset."""

    name: ClassVar[str] = "mopoe"
    config_class: ClassVar[type[MultimodalConfig]] = MoPoEConfig

    def mixture_parts(self, subset: Subset) -> list[Subset]:
        """Every non-empty subset of ``S`` (largest first), each fused by ``PoE``."""
        return nonempty_subsets(subset)

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        _, flat = self.encoder_inputs(batch, self.modalities)
        subsets = self.mixture_parts(self.modalities)
        log_likelihoods, kls = [], []
        for subset in subsets:
            mu, logvar = self.product(flat, subset)
            z = reparameterize(mu, logvar, generator)
            log_likelihoods.append(multimodal_log_likelihood(self.decode_logits(z), batch))
            kls.append(kl_standard_normal(mu, logvar))
        objective = mopoe_objective(log_likelihoods, kls, self.config.beta)
        return {
            "objective": objective,
            **{
                elbo_term_name(s): beta_elbo(ll, kl, self.config.beta)
                for s, ll, kl in zip(subsets, log_likelihoods, kls, strict=True)
            },
        }
