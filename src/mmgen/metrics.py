"""Metrics of a trained multi-modal VAE and of a generated dataset (METHOD.md §5).

Every function takes a model with the ``MultimodalVAE`` interface (``modalities``,
``config.latent_dim``, ``encodable_subsets()``, ``encode(images, subset)``,
``decode_logits(z)``), tensors already on the model's device, and an explicit
``torch.Generator`` where it draws. Images are ``{modality: (N, 1, 28, 28)}`` grey levels in
[0, 1]; every likelihood is the summed grey-level Bernoulli of ``mmgen.objectives``.

Bounds on the marginal likelihood (all with ``β = 1``: they are bounds on ``log p``, whatever β
the model was trained with):

* subset ELBO (the M²VAE paper's tables): ``L_S = E_{q(z|S)} log[p(M|z) p(z) / q(z|S)]`` —
  encode from ``S`` only, score **all** modalities ``M``;
* importance-weighted bound (Burda et al., eq. 8):
  ``log p(M) ≥ E log (1/K) Σ_k p(M|z_k) p(z_k) / q(z_k|M)``, ``z_k ~ q(z|M)``;
* conditional (Suzuki et al., JMVAE, §4.3): ``log p(a|b) ≈ IW(log p(a, b)) −
  log (1/N_w) Σ_j p(b|z_j)``, ``z_j ~ p(z)``.

Mixture posteriors: MMVAE's and MoPoE's ``q(z|S)`` is a uniform mixture of Gaussians, not a
Gaussian. Every bound samples from and takes the density of ``q(z|S)`` through its components
(``posterior_mixture``: the model's ``posterior_components`` where it has one, else the
Gaussian of ``encode`` as one component), so the proposal and its density are exact for every
model; ``encode`` (``posterior``) gives the mixture's mean, which the coherence, the probes and
the plots use. KL and JSD involving a mixture are Monte-Carlo estimates.

Coherence and agreement: cross and joint coherence through real-data classifiers (Shi et al.,
MMVAE, §4), KL and Jensen–Shannon divergences between the posteriors of different subsets,
a Gaussian naive-Bayes classifier on latent means (Korthals et al., M²VAE), the R² of a linear
map from posterior means to the true codes, and the Fréchet distance (Heusel et al., eq. 6).

Memory: the sampling bounds decode at most ``max_elements`` codes at once (mmvae evaluates
``12000 // K`` data points per batch); the draws depend on the seed, ``K`` and ``max_elements``
but not on how many data points there are in total.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmgen.errors import UsageError
from mmgen.objectives import (
    bernoulli_log_likelihood,
    iw_log_mean_exp,
    kl_normal,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
    mixture_log_prob,
    multimodal_log_likelihood,
    reparameterize,
    sample_mixture,
)

Images = Mapping[str, Tensor]
Subset = tuple[str, ...]
Classify = Callable[[Tensor], Tensor]  # images (B, 1, 28, 28) in [0, 1] → class scores (B, C)

MAX_ELEMENTS = 12_000  # codes decoded at once by the sampling bounds (mmvae: 12000 // K points)
PRIOR_CHUNK = 1_000  # prior samples decoded at once by ``prior_log_likelihood``


def subset_name(subset: Sequence[str]) -> str:
    """``("a", "b")`` → ``"a+b"``: how subsets are named in reports (as the models name them)."""
    return "+".join(subset)


def _size(images: Images) -> int:
    return len(next(iter(images.values())))


def _chunk(images: Images, start: int, stop: int) -> dict[str, Tensor]:
    return {m: x[start:stop] for m, x in images.items()}


def _require_encodable(model, subset: Sequence[str]) -> Subset:
    subset = tuple(subset)
    encodable = [tuple(s) for s in model.encodable_subsets()]
    if subset not in encodable:
        names = ", ".join(subset_name(s) for s in encodable)
        raise ValueError(
            f"{type(model).__name__} cannot encode from {subset_name(subset)}; "
            f"it encodes from: {names}"
        )
    return subset


def _require_positive_samples(name: str, value: int) -> None:
    if value <= 0:
        raise UsageError(f"{name} must be a positive number of samples, got {value}")


def covering_subset(model, modalities: Sequence[str]) -> Subset:
    """The smallest encodable subset that holds every one of ``modalities`` (the proposal).

    Any ``q`` gives a valid importance-weighted bound; the one conditioned on exactly the
    scored modalities is the natural choice, the full set the fallback (plain JMVAE).
    """
    wanted = set(modalities)
    candidates = [tuple(s) for s in model.encodable_subsets() if wanted <= set(s)]
    if not candidates:
        raise ValueError(f"{type(model).__name__} has no encoder covering {sorted(wanted)}")
    return min(candidates, key=len)


@torch.no_grad()
def posterior(
    model, images: Images, subset: Sequence[str], batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """``(μ, log σ²)`` of ``q(z|S)`` for every data point, each ``(N, d)``.

    Only the images of ``subset`` are handed to the encoder, so nothing else can leak in.
    """
    subset = _require_encodable(model, subset)
    mus, logvars = [], []
    for start in range(0, _size(images), batch_size):
        chunk = {m: images[m][start : start + batch_size] for m in subset}
        mu, logvar = model.encode(chunk, subset)
        mus.append(mu)
        logvars.append(logvar)
    return torch.cat(mus), torch.cat(logvars)


def _components(model, images: Images, subset: Subset) -> tuple[Tensor, Tensor]:
    """``q(z|S)`` as uniform-mixture components ``(K, B, d)``; ``K = 1`` for a Gaussian."""
    components = getattr(model, "posterior_components", None)
    if components is None:  # a model with the plain interface: its q(z|S) is the Gaussian
        mu, logvar = model.encode(images, subset)
        return mu.unsqueeze(0), logvar.unsqueeze(0)
    return components(images, subset)


@torch.no_grad()
def posterior_mixture(
    model, images: Images, subset: Sequence[str], batch_size: int = 1000
) -> tuple[Tensor, Tensor]:
    """The components ``(μ, log σ²)`` of ``q(z|S)`` for every data point, each ``(K, N, d)``.

    ``q(z|S) = (1/K) Σ_k N(μ_k, σ_k²)``; ``K = 1`` where the model's posterior is Gaussian.
    """
    subset = _require_encodable(model, subset)
    parts = [
        _components(model, {m: images[m][start : start + batch_size] for m in subset}, subset)
        for start in range(0, _size(images), batch_size)
    ]
    return torch.cat([p[0] for p in parts], dim=1), torch.cat([p[1] for p in parts], dim=1)


@torch.no_grad()
def subset_elbo(
    model,
    images: Images,
    subset: Sequence[str],
    generator: torch.Generator | None,
    num_samples: int = 1,
    analytic_kl: bool = True,
    batch_size: int = 1000,
) -> Tensor:
    """``L_S = E_{q(z|S)}[log p(M|z)] − KL(q(z|S) ‖ p(z))`` per data point, shape ``(N,)``.

    The test ELBO of the M²VAE paper's tables: encode from ``S`` only, score all modalities
    (β = 1). The expectation is a mean over ``num_samples`` draws.

    Args:
        model: a ``MultimodalVAE``.
        images: every modality of the model, ``(N, 1, 28, 28)``.
        subset: the modalities the posterior sees.
        generator: source of the draws ``z ~ q(z|S)``.
        num_samples: draws per data point.
        analytic_kl: closed-form KL (lower variance) where ``q(z|S)`` is Gaussian; ``False``,
            and always for a mixture ``q(z|S)``, gives the Monte-Carlo form
            ``log p(M|z) + log p(z) − log q(z|S)``, which equals the IW bound with ``K = 1``.
        batch_size: data points per encoder call.
    """
    _require_positive_samples("num_samples", num_samples)
    subset = _require_encodable(model, subset)
    results = []
    for start in range(0, _size(images), batch_size):
        chunk = _chunk(images, start, start + batch_size)
        mu, logvar = _components(model, {m: chunk[m] for m in subset}, subset)  # (K, B, d)
        total = torch.zeros(mu.shape[1], device=mu.device)
        for _ in range(num_samples):
            z = sample_mixture(mu, logvar, 1, generator)[0]  # (B, d)
            log_likelihood = multimodal_log_likelihood(model.decode_logits(z), chunk)
            if analytic_kl and len(mu) == 1:
                total += log_likelihood - kl_standard_normal(mu[0], logvar[0])
            else:
                total += log_likelihood + log_standard_normal(z) - mixture_log_prob(z, mu, logvar)
        results.append(total / num_samples)
    return torch.cat(results)


@torch.no_grad()
def importance_weighted_bound(
    model,
    images: Images,
    k: int = 1000,
    generator: torch.Generator | None = None,
    scored: Sequence[str] | None = None,
    proposal: Sequence[str] | None = None,
    max_elements: int = MAX_ELEMENTS,
) -> Tensor:
    """``log p(T) ≥ log (1/K) Σ_k p(T|z_k) p(z_k) / q(z_k|S)``, ``z_k ~ q(z|S)``, shape ``(N,)``.

    Burda et al. (2016), eq. 8; the bound tightens as ``K`` grows and equals the Monte-Carlo
    ELBO at ``K = 1``. Chunked over data points (``max_elements // K`` at a time) and, when
    ``K > max_elements``, over samples too, so memory stays bounded for any ``K``.

    Args:
        model: a ``MultimodalVAE``.
        images: at least the modalities of ``scored`` and ``proposal``, ``(N, 1, 28, 28)``.
        k: importance samples ``K`` per data point (≥ 1).
        generator: source of the draws.
        scored: the modalities ``T`` whose likelihood is bounded (default: all).
        proposal: the subset ``S`` of the proposal ``q(z|S)`` (default: the smallest encodable
            subset holding ``T``).
        max_elements: codes decoded at once.
    """
    if k <= 0:
        raise UsageError(
            f"K (importance samples) must be >= 1, got {k}; K = 1 gives the ELBO, the paper "
            "used K = 1000"
        )
    scored = tuple(model.modalities if scored is None else scored)
    proposal = covering_subset(model, scored) if proposal is None else tuple(proposal)
    proposal = _require_encodable(model, proposal)
    points = max(1, max_elements // k)
    sample_chunk = min(k, max_elements)
    results = []
    for start in range(0, _size(images), points):
        chunk = _chunk(images, start, start + points)
        # q(z|S) as its mixture components (K, B, d): K = 1 for a Gaussian posterior
        mu, logvar = _components(model, {m: chunk[m] for m in proposal}, proposal)
        _, batch, latent_dim = mu.shape
        log_w_parts = []
        for done in range(0, k, sample_chunk):
            count = min(sample_chunk, k - done)
            z = sample_mixture(mu, logvar, count, generator)  # (count, B, d)
            logits = model.decode_logits(z.reshape(count * batch, latent_dim))
            log_likelihood = sum(
                bernoulli_log_likelihood(
                    logits[m],
                    chunk[m].unsqueeze(0).expand(count, *chunk[m].shape).reshape(logits[m].shape),
                )
                for m in scored
            ).view(count, batch)
            log_q = mixture_log_prob(z, mu, logvar)
            log_w_parts.append(log_likelihood + log_standard_normal(z) - log_q)
        results.append(iw_log_mean_exp(torch.cat(log_w_parts), dim=0))
    return torch.cat(results)


def bernoulli_log_likelihood_matrix(logits: Tensor, targets: Tensor) -> Tensor:
    """``log p(x_i | z_j)`` for every target ``i`` and decoded code ``j``, shape ``(I, J)``.

    With ``log p(x|z) = Σ_pixels [x·l − softplus(l)]`` (the Bernoulli of
    ``objectives.bernoulli_log_likelihood`` rewritten), all ``I × J`` pairs are one matrix
    product: ``X Lᵀ − 1 softplus(L)ᵀ``.

    Args:
        logits: ``(J, ...)`` decoder logits.
        targets: ``(I, ...)`` grey levels in [0, 1], the same pixel layout.
    """
    flat_logits = logits.flatten(1).double()  # (J, P): float64, the sums run over many pixels
    flat_targets = targets.flatten(1).double()  # (I, P)
    return (flat_targets @ flat_logits.T - F.softplus(flat_logits).sum(1)).float()


@torch.no_grad()
def prior_log_likelihood(
    model,
    images: Images,
    modalities: Sequence[str],
    num_samples: int = 5000,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``log p̂(S) = log (1/N_w) Σ_j Π_{m∈S} p(x_m|z_j)``, ``z_j ~ N(0, I)``, shape ``(N,)``.

    The JMVAE estimate of the marginal of the conditioning modalities (Suzuki et al., §4.3,
    ``N_w = 5000``). The same ``N_w`` prior draws serve every data point, so each is decoded once
    and all likelihoods are one matrix product (``bernoulli_log_likelihood_matrix``).
    """
    _require_positive_samples("prior samples N_w", num_samples)
    device = next(iter(images.values())).device
    parts = []
    for done in range(0, num_samples, PRIOR_CHUNK):
        count = min(PRIOR_CHUNK, num_samples - done)
        z = torch.randn(
            count, model.config.latent_dim, generator=generator, device=device
        )  # (J, d)
        logits = model.decode_logits(z)
        log_likelihood = sum(  # (N, J)
            bernoulli_log_likelihood_matrix(logits[m], images[m]) for m in modalities
        )
        parts.append(torch.logsumexp(log_likelihood, dim=1))
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(num_samples)


def conditional_log_likelihood(
    model,
    images: Images,
    target: Sequence[str],
    given: Sequence[str],
    k: int = 1000,
    num_prior_samples: int = 5000,
    generator: torch.Generator | None = None,
    joint: Tensor | None = None,
) -> Tensor:
    """``log p(T | G) ≈ IW_K(log p(T, G)) − log (1/N_w) Σ_j p(G|z_j)``, shape ``(N,)``.

    Suzuki et al. (JMVAE), §4.3: the importance-weighted bound of the joint minus the
    prior-sampling estimate of the marginal of what is given.

    Args:
        model: a ``MultimodalVAE``.
        images: the modalities of ``target`` and ``given``.
        target: modalities predicted.
        given: modalities conditioned on.
        k: importance samples of the joint bound.
        num_prior_samples: ``N_w``.
        generator: source of all draws.
        joint: the IW bound of ``log p(T, G)`` when already computed (shared with the
            ``log p(M)`` figure when ``T ∪ G = M``).
    """
    target, given = tuple(target), tuple(given)
    if set(target) & set(given) or not target or not given:
        raise ValueError(
            f"target {target} and given {given} must be non-empty and disjoint modality sets"
        )
    if joint is None:
        scored = tuple(m for m in model.modalities if m in target or m in given)
        joint = importance_weighted_bound(model, images, k, generator, scored=scored)
    return joint - prior_log_likelihood(model, images, given, num_prior_samples, generator)


@torch.no_grad()
def predict(classify: Classify, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted classes ``(N,)``: the arg-max of ``classify`` over batches of ``images``."""
    return torch.cat(
        [
            classify(images[start : start + batch_size]).argmax(1)
            for start in range(0, len(images), batch_size)
        ]
    )


def accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Fraction of ``predicted`` equal to ``labels``."""
    return float((predicted == labels).float().mean())


def balanced_accuracy(predicted: Tensor, labels: Tensor) -> float:
    """Mean over the classes present in ``labels`` of the per-class recall."""
    recalls = [(predicted[labels == c] == c).float().mean() for c in torch.unique(labels).tolist()]
    return float(torch.stack(recalls).mean())


@torch.no_grad()
def cross_coherence(
    model,
    images: Images,
    labels: Tensor,
    source: Sequence[str],
    target: str,
    classify: Classify,
    batch_size: int = 1000,
) -> float:
    """Class-balanced accuracy of ``classify`` on ``target`` decoded from ``q(z|source)``.

    Shi et al. (MMVAE), §4: encode from ``source`` only, decode the posterior mean into
    ``target`` (the mean image ``σ(logits)``), classify it, compare with the tuple's label.
    """
    mu, _ = posterior(model, images, source, batch_size)
    decoded = torch.cat(
        [
            torch.sigmoid(model.decode_logits(mu[start : start + batch_size])[target])
            for start in range(0, len(mu), batch_size)
        ]
    )
    return balanced_accuracy(predict(classify, decoded, batch_size), labels)


@torch.no_grad()
def joint_coherence(
    model,
    classifiers: Mapping[str, Classify],
    num_samples: int = 10_000,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
    device: torch.device | str = "cpu",
) -> float:
    """Fraction of prior samples whose decoded modalities all get the same class.

    Shi et al. (MMVAE), §4: ``z ~ N(0, I)``, decode every modality (mean image), classify each
    with its own real-data classifier, count the samples on which every classifier agrees.
    """
    _require_positive_samples("joint-coherence samples", num_samples)
    agree = 0
    for done in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - done)
        z = torch.randn(count, model.config.latent_dim, generator=generator, device=device)
        logits = model.decode_logits(z)
        predictions = torch.stack(
            [classify(torch.sigmoid(logits[m])).argmax(1) for m, classify in classifiers.items()]
        )  # (|M|, count)
        agree += int((predictions == predictions[0]).all(0).sum())
    return agree / num_samples


def gaussian_jsd(
    mu_p: Tensor,
    logvar_p: Tensor,
    mu_q: Tensor,
    logvar_q: Tensor,
    generator: torch.Generator | None,
    num_samples: int = 64,
) -> Tensor:
    """Monte-Carlo Jensen–Shannon divergence between diagonal Gaussians, shape ``(N,)``.

    ``JSD(p, q) = ½ E_p[log p − log m] + ½ E_q[log q − log m]``, ``m = ½(p + q)``; in nats,
    between 0 and ``log 2``.
    """
    _require_positive_samples("JSD samples", num_samples)
    total = torch.zeros(len(mu_p), device=mu_p.device)
    for drawn_from_p, (mu, logvar) in ((True, (mu_p, logvar_p)), (False, (mu_q, logvar_q))):
        shape = (num_samples, *mu.shape)
        z = reparameterize(mu.expand(shape), logvar.expand(shape), generator)  # (S, N, d)
        log_p = log_normal(z, mu_p, logvar_p)
        log_q = log_normal(z, mu_q, logvar_q)
        log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
        total += 0.5 * ((log_p if drawn_from_p else log_q) - log_m).mean(0)
    return total


def mixture_kl(
    p: tuple[Tensor, Tensor],
    q: tuple[Tensor, Tensor],
    generator: torch.Generator | None,
    num_samples: int = 64,
) -> Tensor:
    """Monte-Carlo ``KL(p ‖ q) = E_p[log p − log q]`` between uniform Gaussian mixtures, ``(N,)``.

    ``p`` and ``q`` are components ``(μ, log σ²)``, each ``(K, N, d)`` (``K`` may differ).
    """
    _require_positive_samples("KL samples", num_samples)
    z = sample_mixture(*p, num_samples, generator)  # (S, N, d)
    return (mixture_log_prob(z, *p) - mixture_log_prob(z, *q)).mean(0)


def mixture_jsd(
    p: tuple[Tensor, Tensor],
    q: tuple[Tensor, Tensor],
    generator: torch.Generator | None,
    num_samples: int = 64,
) -> Tensor:
    """Monte-Carlo Jensen–Shannon divergence between uniform Gaussian mixtures, ``(N,)``.

    ``gaussian_jsd`` for posteriors given as components ``(μ, log σ²)``, each ``(K, N, d)``;
    with one component each it draws the same samples and gives the same values.
    """
    _require_positive_samples("JSD samples", num_samples)
    total = torch.zeros(p[0].shape[1], device=p[0].device)
    for drawn_from_p, side in ((True, p), (False, q)):
        z = sample_mixture(*side, num_samples, generator)  # (S, N, d)
        log_p, log_q = mixture_log_prob(z, *p), mixture_log_prob(z, *q)
        log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)
        total += 0.5 * ((log_p if drawn_from_p else log_q) - log_m).mean(0)
    return total


@torch.no_grad()
def posterior_divergences(
    model,
    images: Images,
    generator: torch.Generator | None,
    num_samples: int = 64,
    batch_size: int = 1000,
    posteriors: Mapping[Subset, tuple[Tensor, Tensor]] | None = None,
) -> dict[str, dict[str, float]]:
    """KL and JSD between the posteriors of every pair of encodable subsets, test-set means.

    The M²VAE authors' agreement analysis: for subsets ``S`` before ``S'`` in
    ``encodable_subsets()`` (e.g. ``a+b`` vs ``a``, ``a+b`` vs ``b``, ``a`` vs ``b``),
    ``KL(q(z|S) ‖ q(z|S'))`` (analytic between Gaussians, Monte Carlo with ``num_samples``
    draws where either posterior is a mixture) and ``JSD(q(z|S), q(z|S'))`` (Monte Carlo).

    Args:
        posteriors: the Gaussian ``(μ, log σ²)`` of ``posterior`` when already computed; used
            for the subsets whose ``q(z|S)`` is Gaussian (a mixture's components are computed
            here).

    Returns:
        ``"S||S'"`` → ``{"kl": …, "jsd": …}``.
    """
    subsets = [tuple(s) for s in model.encodable_subsets()]
    components = {}
    for s in subsets:
        first_point = {m: images[m][:1] for m in s}  # tells a Gaussian from a mixture
        if posteriors is not None and len(_components(model, first_point, s)[0]) == 1:
            mu, logvar = posteriors[s]
            components[s] = (mu.unsqueeze(0), logvar.unsqueeze(0))
        else:
            components[s] = posterior_mixture(model, images, s, batch_size)
    result = {}
    for first, second in itertools.combinations(subsets, 2):
        p, q = components[first], components[second]
        if len(p[0]) == len(q[0]) == 1:  # two Gaussians: the closed-form KL
            (mu_p, logvar_p), (mu_q, logvar_q) = (t[0] for t in p), (t[0] for t in q)
            kl = kl_normal(mu_p, logvar_p, mu_q, logvar_q)
            jsd = gaussian_jsd(mu_p, logvar_p, mu_q, logvar_q, generator, num_samples)
        else:
            kl = mixture_kl(p, q, generator, num_samples)
            jsd = mixture_jsd(p, q, generator, num_samples)
        result[f"{subset_name(first)}||{subset_name(second)}"] = {
            "kl": float(kl.mean()),
            "jsd": float(jsd.mean()),
        }
    return result


def gaussian_naive_bayes_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    var_smoothing: float = 1e-9,
) -> float:
    """Test accuracy of a Gaussian naive-Bayes classifier fitted on the training features.

    Per class ``c``: prior ``π_c`` (class frequency), per-dimension mean ``μ_c`` and variance
    ``σ_c²`` (plus ``var_smoothing`` × the largest feature variance, for stability); predict
    ``argmax_c log π_c + Σ_i log N(x_i; μ_ci, σ_ci²)``.
    """
    train_features = train_features.double()
    test_features = test_features.double()
    classes = torch.unique(train_labels)
    epsilon = var_smoothing * float(train_features.var(0, unbiased=False).max())
    scores = []
    for c in classes.tolist():
        members = train_features[train_labels == c]
        mean = members.mean(0)
        var = members.var(0, unbiased=False) + epsilon
        log_prior = math.log(len(members) / len(train_features))
        scores.append(log_prior + log_normal(test_features, mean, var.log()))
    predicted = classes[torch.stack(scores, dim=1).argmax(1)]
    return accuracy(predicted, test_labels.to(predicted.device))


def linear_fit_r2(
    train_inputs: Tensor, train_targets: Tensor, test_inputs: Tensor, test_targets: Tensor
) -> float:
    """Held-out R² of the least-squares affine map ``inputs → targets``.

    Fit ``Y ≈ [X, 1] W`` on the training pairs; on the test pairs
    ``R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²`` per target dimension, averaged over dimensions. 1 for an
    exact affine relation, about 0 (or below) when the inputs carry no information.
    """

    for inputs, targets, split in (
        (train_inputs, train_targets, "train"),
        (test_inputs, test_targets, "test"),
    ):
        if len(inputs) != len(targets):
            raise ValueError(
                f"{split} inputs and targets need the same number of rows, got {len(inputs)} "
                f"and {len(targets)}"
            )

    def design(x: Tensor) -> Tensor:
        x = x.double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)

    weights = torch.linalg.lstsq(design(train_inputs).cpu(), train_targets.double().cpu()).solution
    predicted = design(test_inputs).cpu() @ weights
    truth = test_targets.double().cpu()
    residual = (truth - predicted).pow(2).sum(0)
    total = (truth - truth.mean(0)).pow(2).sum(0)
    return float((1.0 - residual / total).mean())


def gaussian_frechet_distance(
    mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray
) -> float:
    """``‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` (Heusel et al., eq. 6; Dowson–Landau).

    ``Tr (Σ_a Σ_b)^{1/2}`` is computed as ``Σ √λ`` over the eigenvalues of the symmetric
    ``Σ_a^{1/2} Σ_b Σ_a^{1/2}``, which has the same spectrum, so no non-symmetric square root
    is needed.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    values, vectors = np.linalg.eigh(cov_a)
    sqrt_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum()
    distance = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt
    return float(max(distance, 0.0))


def frechet_distance(features_a: Tensor | np.ndarray, features_b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N_a, F)``, ``(N_b, F)``."""
    a = np.asarray(torch.as_tensor(features_a).double().cpu())
    b = np.asarray(torch.as_tensor(features_b).double().cpu())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(
            f"Fréchet distance needs two feature matrices (N, F) with the same F and N >= 2, "
            f"got {a.shape} and {b.shape}"
        )
    return gaussian_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
