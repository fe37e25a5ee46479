"""The shared base of today's aggregators (MVAE, MMVAE, MoPoE): uni-modal experts, fused.

docs/method.md, "Today's aggregators": each modality ``m`` has one uni-modal encoder, the expert
``q(z|m) = N(μ_m, σ_m²)`` (the Table-1 network fc D_m-128-64 → (μ, log σ²)); the posterior of a
subset ``S`` is built from the experts of ``S`` alone, so every non-empty subset is encodable
and no network sees a missing modality. Two fusions, from ``mmgen.objectives``:

- ``PoE(S)``: the product of the prior expert ``N(0, I)`` and the experts of ``S`` (Wu &
  Goodman 2018, eq. 5), a Gaussian (``product_of_experts``);
- a uniform mixture of Gaussians (Shi et al. 2019; Sutter et al. 2021), not a Gaussian.

Every model here writes ``q(z|S)`` as the uniform mixture of the Gaussians of
``mixture_parts(S)`` (MVAE: the one part ``S``), each part a ``PoE`` or a raw expert
(``part_posterior``). ``posterior_components`` returns the parts, which the metrics sample from
and take the exact mixture density of; ``encode`` returns the mixture's mean and variance (its
mean is what the latent plots, coherence and the probes use), exactly the Gaussian when the
mixture has one part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from mmgen.models.multimodal import MultimodalVAE, Subset, subset_key
from mmgen.objectives import mixture_moments, nonempty_subsets, product_of_experts


class ExpertsVAE(MultimodalVAE):
    """One uni-modal expert per modality; ``q(z|S)`` a uniform mixture of fused experts of ``S``.

    Subclasses set ``name``, ``config_class`` and ``objective``, and override
    ``mixture_parts`` / ``part_posterior`` (default: the single part ``PoE(S)``).
    """

    def encoder_subsets(self) -> list[Subset]:
        """One expert per modality: the only networks that encode."""
        return [(m,) for m in self.modalities]

    def encodable_subsets(self) -> list[Subset]:
        """Every non-empty subset, full set first: each is fused from its own experts."""
        return nonempty_subsets(self.modalities)

    # ----- experts and their fusions ---------------------------------------------------------
    def experts(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        """The experts ``q(z|m)``, ``m ∈ S``, stacked: ``(μ, log σ²)``, each ``(|S|, B, d)``."""
        params = [self.encoders[subset_key((m,))]({m: flat[m]}) for m in subset]
        return torch.stack([p[0] for p in params]), torch.stack([p[1] for p in params])

    def product(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        """``PoE(S)``: the prior expert times the experts of ``S``; each ``(B, d)``."""
        return product_of_experts(*self.experts(flat, subset))

    def mixture_parts(self, subset: Subset) -> list[Subset]:
        """The parts whose Gaussians ``q(z|S)`` mixes uniformly. Default: ``[S]`` (a Gaussian)."""
        return [subset]

    def part_posterior(self, flat: Mapping[str, Tensor], part: Subset) -> tuple[Tensor, Tensor]:
        """The Gaussian of one part, each ``(B, d)``. Default: ``PoE(part)``."""
        return self.product(flat, part)

    # ----- the interface ---------------------------------------------------------------------
    def posterior_components(
        self, images: Mapping[str, Tensor], subset: Sequence[str]
    ) -> tuple[Tensor, Tensor]:
        """``q(z|S)``'s components ``(μ, log σ²)``, each ``(K, B, d)``; ``K = |mixture_parts(S)|``.

        Raises:
            ValueError: ``subset`` is invalid or one of its images is missing (as ``encode``).
        """
        subset, flat = self.encoder_inputs(images, subset)
        return self._components(flat, subset)

    def _components(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        params = [self.part_posterior(flat, part) for part in self.mixture_parts(subset)]
        return torch.stack([p[0] for p in params]), torch.stack([p[1] for p in params])

    def _encode(self, flat: Mapping[str, Tensor], subset: Subset) -> tuple[Tensor, Tensor]:
        """The mean and log-variance of ``q(z|S)``: the Gaussian itself for a single part."""
        mu, logvar = self._components(flat, subset)  # (K, B, d)
        if len(mu) == 1:
            return mu[0], logvar[0]
        return mixture_moments(mu, logvar)
