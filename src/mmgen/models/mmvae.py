"""MMVAE: Shi, Siddharth, Paige & Torr, *Variational mixture-of-experts autoencoders for
multi-modal deep generative models* (NeurIPS 2019), with the Table-1 networks (docs/method.md).

The joint posterior is the uniform mixture of the uni-modal experts (their eq. 2); for any
subset ``S``, the same mixture over the experts of ``S``::

    q(z|S) = (1/|S|) Σ_{m∈S} q(z|m).

Objective, their stratified ELBO (eq. 4, one draw per stratum), with a β on the KL estimate
as every model here has (β = 1 is the paper's)::

    L = (1/|M|) Σ_m E_{z~q(z|m)} [ log p(M|z) + β (log p(z) − log q(z|M)) ],

``log q(z|M)`` the log-mean-exp of the component densities (``mixture_log_prob``). Their
IWAE/DReG variants are not implemented; the prior here is ``N(0, I)``, not their Laplace.

Evaluation: ``q(z|S)`` is a mixture, not a Gaussian; ``posterior_components`` hands the metrics
its components (exact sampling and density), ``encode`` its mean and variance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmgen.models.experts import ExpertsVAE
from mmgen.models.multimodal import MultimodalConfig, Subset
from mmgen.objectives import (
    log_standard_normal,
    mixture_log_prob,
    mmvae_stratified_elbo,
    multimodal_log_likelihood,
    reparameterize,
)


@dataclass(frozen=True)
class MMVAEConfig(MultimodalConfig):
    """MMVAE: the shared architecture; the mixture needs no parameter."""


class MMVAE(ExpertsVAE):
    """Uniform mixture of the uni-modal experts; the stratified ELBO."""

    name: ClassVar[str] = "mmvae"
    config_class: ClassVar[type[MultimodalConfig]] = MMVAEConfig

    def mixture_parts(self, subset: Subset) -> list[Subset]:
        """One part per modality of ``S``: its raw expert."""
        return [(m,) for m in subset]

    def part_posterior(self, flat: Mapping[str, Tensor], part: Subset) -> tuple[Tensor, Tensor]:
        """The expert ``q(z|m)`` itself (no prior expert: a mixture, not a product)."""
        return self.encoders[part[0]](flat)

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        _, flat = self.encoder_inputs(batch, self.modalities)
        mu, logvar = self.experts(flat, self.modalities)  # (|M|, B, d)
        samples = [reparameterize(mu[i], logvar[i], generator) for i in range(len(mu))]
        log_likelihoods = [multimodal_log_likelihood(self.decode_logits(z), batch) for z in samples]
        objective = mmvae_stratified_elbo(log_likelihoods, samples, mu, logvar, self.config.beta)
        kl_estimate = torch.stack(
            [mixture_log_prob(z, mu, logvar) - log_standard_normal(z) for z in samples]
        ).mean(0)
        return {
            "objective": objective,
            "reconstruction": -torch.stack(log_likelihoods).mean(0),
            "kl": kl_estimate,  # Monte-Carlo log q(z|M) − log p(z), z from the strata
        }
