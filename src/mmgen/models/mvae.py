"""MVAE: Wu & Goodman, *Multimodal generative models for scalable weakly-supervised learning*
(NeurIPS 2018), with the Table-1 networks (docs/method.md, "Today's aggregators").

The posterior of any subset ``S`` is the product of Gaussian experts with a prior expert
(their eq. 5 and §3)::

    q(z|S) = PoE(S) ∝ N(0, I) · Π_{m∈S} q(z|m),
    precision 1 + Σ_{m∈S} σ_m⁻²,   mean (Σ_{m∈S} μ_m σ_m⁻²) / precision.

Objective, the sub-sampled training of their §3 (eq. 6 and "sub-sampling")::

    L = ELBO_M(M) + Σ_{m∈M} ELBO_m(m) + Σ_{S ∈ R} ELBO_S(S),
    ELBO_S(S) = E_{PoE(S)}[Σ_{m∈S} log p(m|z)] − β·KL(PoE(S) ‖ p(z)),

each term scoring only the modalities it sees; ``R`` holds ``sampled_subsets`` random subsets
of size 2 … |M|−1, drawn anew for every batch from the training stream (none exist for two
modalities). Known limit (Shi et al. 2019): the product is dominated by the most precise
expert, so cross-modal generation from a single modality can be poor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from mmgen.errors import UsageError
from mmgen.models.experts import ExpertsVAE
from mmgen.models.multimodal import MultimodalConfig, Subset, elbo_term_name
from mmgen.objectives import nonempty_subsets


@dataclass(frozen=True)
class MVAEConfig(MultimodalConfig):
    """MVAE."""

    # Random subsets of size 2 … |M|−1 added to the bound per batch (Wu & Goodman's k); our pick
    # of 1, since the sub-sampling of the paper names no value for three modalities.
    sampled_subsets: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sampled_subsets < 0:
            raise UsageError(f"sampled_subsets must be >= 0, got {self.sampled_subsets}")


def middle_subsets(modalities: Subset) -> list[Subset]:
    """The subsets of size 2 … |M|−1 (the candidates for sub-sampling), largest first."""
    return [s for s in nonempty_subsets(modalities) if 1 < len(s) < len(modalities)]


class MVAE(ExpertsVAE):
    """Product of experts with the prior expert; full, uni-modal and sampled subset ELBOs."""

    name: ClassVar[str] = "mvae"
    config_class: ClassVar[type[MultimodalConfig]] = MVAEConfig

    def training_subsets(self, generator: torch.Generator) -> list[Subset]:
        """The subsets of one step: ``M``, each ``{m}``, then the sampled ones (drawn first)."""
        candidates = middle_subsets(self.modalities)
        count = min(self.config.sampled_subsets, len(candidates))
        sampled = []
        if count:
            order = torch.randperm(len(candidates), generator=generator, device=generator.device)
            sampled = [candidates[i] for i in order[:count].tolist()]
        return [self.modalities, *((m,) for m in self.modalities), *sampled]

    def objective(
        self, batch: Mapping[str, Tensor], generator: torch.Generator
    ) -> dict[str, Tensor]:
        subsets = self.training_subsets(generator)
        elbos = [self.subset_bound(batch, s, generator).elbo for s in subsets]
        fixed = 1 + len(self.modalities)  # M and the singles: named terms
        terms = {elbo_term_name(s): e for s, e in zip(subsets[:fixed], elbos, strict=False)}
        if len(subsets) > fixed:
            terms["elbo_sampled"] = sum(elbos[fixed:])
        return {"objective": sum(elbos), **terms}
