"""Metrics of a trained multi-modal VAE and of a generated dataset (docs/method.md).

Every function takes a model with the ``MultimodalVAE`` interface (``modalities``,
``config.latent_dim``, ``encodable_subsets()``, ``encode(images, subset)``,
``decode_logits(z)``), tensors already on the model's device, and an explicit
``torch.Generator`` where it draws. Images are ``{modality: (N, C, H, W)}`` levels in
[0, 1]; every likelihood is the Bernoulli of ``mmgen.objectives`` summed over every channel
and pixel of every modality (``C·H·W`` terms each; 784 at 1×28×28).

Bounds on the marginal likelihood (all with ``β = 1``: they are bounds on ``log p``, whatever β
the model was trained with):

* subset ELBO (the M²VAE paper's tables): ``L_S = E_{q(z|S)} log[p(M|z) p(z) / q(z|S)]`` —
  encode from ``S`` only, score **all** modalities ``M``;
* importance-weighted bound (Burda et al., eq. 8):
  ``log p(M) ≥ E log (1/K) Σ_k p(M|z_k) p(z_k) / q(z_k|M)``, ``z_k ~ q(z|M)``;
* conditional (Suzuki et al., JMVAE, §4.3): ``log p(a|b) ≈ IW(log p(a, b)) −
  log (1/N_w) Σ_j p(b|z_j)``, ``z_j ~ p(z)``;
* quadrature, for ``d ≤ 2``: ``log p(M) ≈ log Σ_g h^d p(z_g) p(M|z_g)`` on a grid of codes
  shared by every point (an estimate, not a bound; tighter than the IW bound when the grid is
  fine enough).

Mixture posteriors: MMVAE's and MoPoE's ``q(z|S)`` is a uniform mixture of Gaussians, not a
Gaussian. Every bound samples from and takes the density of ``q(z|S)`` through its components
(``posterior_mixture``: the model's ``posterior_components`` where it has one, else the
Gaussian of ``encode`` as one component), so the proposal and its density are exact for every
model; ``encode`` (``posterior``) gives the mixture's mean, which the coherence, the probes and
the plots use. KL and JSD involving a mixture are Monte-Carlo estimates.

Coherence and agreement: cross and joint coherence through real-data classifiers (Shi et al.,
MMVAE, §4), KL and Jensen–Shannon divergences between the posteriors of different subsets,
a Gaussian naive-Bayes classifier on latent means (Korthals et al., M²VAE), and the Fréchet
distance (Heusel et al., eq. 6). Latent recovery has its own module, ``mmgen.probes``.

Speed and memory (docs/performance.md): ``log p(x|z) = Σ_pixels [x·l − softplus(l)]``, so the
``x·l`` part is a matrix product (targets are never copied ``K`` times) and one softplus per
logit is the only elementwise work; codes are decoded ``CODES_PER_CHUNK`` at a time, a block
that stays in cache. Peak memory does not grow with the number of data points. Every point
draws its own samples in one call on the generator, in order, so no result depends on a chunk
or batch size.
"""

from __future__ import annotations

from mmgen.metrics.agreement import (
    gaussian_jsd,
    gaussian_naive_bayes_accuracy,
    mixture_jsd,
    mixture_kl,
    posterior_divergences,
)
from mmgen.metrics.base import (
    CODES_PER_CHUNK,
    POINTS_PER_CHUNK,
    PRIOR_CHUNK,
    QUADRATURE_POINTS,
    QUADRATURE_RADIUS,
    Classify,
    Images,
    Subset,
    covering_subset,
    draw_mixture_per_point,
    draw_normal,
    draw_per_point,
    draw_seed,
    posterior,
    posterior_mixture,
    subset_name,
)
from mmgen.metrics.coherence import (
    accuracy,
    balanced_accuracy,
    cross_coherence,
    joint_coherence,
    predict,
)
from mmgen.metrics.likelihood import (
    bernoulli_log_likelihood_matrix,
    conditional_log_likelihood,
    grouped_log_likelihood,
    importance_weighted_bound,
    mixture_log_likelihood,
    prior_codes,
    prior_log_likelihood,
    quadrature_grid,
    quadrature_log_likelihood,
    softplus_sum,
    subset_elbo,
)
from mmgen.metrics.quality import (
    frechet_distance,
    gaussian_frechet_distance,
)

__all__ = [
    "CODES_PER_CHUNK",
    "Classify",
    "Images",
    "POINTS_PER_CHUNK",
    "PRIOR_CHUNK",
    "QUADRATURE_POINTS",
    "QUADRATURE_RADIUS",
    "Subset",
    "accuracy",
    "balanced_accuracy",
    "bernoulli_log_likelihood_matrix",
    "conditional_log_likelihood",
    "covering_subset",
    "cross_coherence",
    "draw_mixture_per_point",
    "draw_normal",
    "draw_per_point",
    "draw_seed",
    "frechet_distance",
    "gaussian_frechet_distance",
    "gaussian_jsd",
    "gaussian_naive_bayes_accuracy",
    "grouped_log_likelihood",
    "importance_weighted_bound",
    "joint_coherence",
    "mixture_jsd",
    "mixture_kl",
    "mixture_log_likelihood",
    "posterior",
    "posterior_divergences",
    "posterior_mixture",
    "predict",
    "prior_codes",
    "prior_log_likelihood",
    "quadrature_grid",
    "quadrature_log_likelihood",
    "softplus_sum",
    "subset_elbo",
    "subset_name",
]
