"""M²VAE: Korthals, Hesse, Rückert & Leitner, *Deep generative models for learning coherent
latent representations from multi-modal data*, for any number of modalities (docs/method.md).

One encoder ``q(z|S)`` per non-empty subset ``S`` of the modalities ``M``, shared decoders
``p(m|z)``, and the recursive bound of the paper (the |M| = 3 form is in its appendix)::

    L(S)   = (1/|S|) · [ J(S) + Σ_{S' ⊂ S, |S'| = |S|−1} L(S') ]          (|S| ≥ 2)
    L({m}) = ELBO_m(m)
    J(S)   = ELBO_S(S) − α Σ_{S' ⊂ S, |S'| = |S|−1} KL(q(z|S) ‖ q(z|S'))

maximised at ``S = M``. Two modalities:
``½[ELBO_a(a) + ELBO_b(b) + ELBO_ab(a,b) − α KL(q_ab‖q_a) − α KL(q_ab‖q_b)]``.

The recursion reaches a subset along many paths; ``mmgen.objectives.m2vae_subset_weights``
adds them up once, so each subset's ELBO and each KL is computed once per step.

α: the paper found α = 1 too strong and α ≲ 1e-2 good; the default 1e-2 is our pick from
that range.
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
    elbo_term_name,
    kl_term_name,
)
from mmgen.objectives import kl_normal, m2vae_kl_weights, m2vae_objective, nonempty_subsets


@dataclass(frozen=True)
class M2VAEConfig(MultimodalConfig):
    """M²VAE."""

    alpha: float = 1e-2  # weight of the KLs between nested posteriors; paper: α ≲ 1e-2 works

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha < 0:
            raise UsageError(f"alpha must be >= 0, got {self.alpha}")


class M2VAE(MultimodalVAE):
    """An encoder for every non-empty subset; the expanded recursive bound as objective."""

    name: ClassVar[str] = "m2vae"
    config_class: ClassVar[type[MultimodalConfig]] = M2VAEConfig

    def encoder_subsets(self) -> list[Subset]:
        return nonempty_subsets(self.modalities)

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        bounds = {s: self.subset_bound(batch, s, generator) for s in self.encoder_subsets()}
        kls = {
            (s, smaller): kl_normal(
                bounds[s].mu, bounds[s].logvar, bounds[smaller].mu, bounds[smaller].logvar
            )
            for s, smaller in m2vae_kl_weights(self.modalities)
        }
        elbos = {s: bound.elbo for s, bound in bounds.items()}
        objective = m2vae_objective(elbos, kls, self.modalities, self.config.alpha)
        return {
            "objective": objective,
            **{elbo_term_name(s): elbo for s, elbo in elbos.items()},
            **{kl_term_name(*pair): kl for pair, kl in kls.items()},
        }
