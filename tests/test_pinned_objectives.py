"""Every registered model's training loss, recomputed by hand from docs/method.md.

For each model (two and three modalities, every training stage) the objective is written out
literally from the method text, with ``torch.distributions`` for every Gaussian KL and the
Bernoulli log-likelihood spelled out, using the model's own encoders and decoders and the same
seeded noise; it must equal ``model.loss_on`` to 1e-5 (float64). Reversing a KL, flipping the
sign of α or β, dropping a term or swapping two weights changes the loss by far more than that
(the KLs involved are checked to be non-trivial).

    ELBO_S(T) = E_{q(z|S)}[Σ_{m∈T} log p(m|z)] − β·KL(q(z|S) ‖ N(0, I)),  one draw z ~ q(z|S)

Today's aggregators (MVAE, MMVAE, MoPoE) are recomputed from their uni-modal experts alone: the
product of experts from the precision formula of docs/method.md and the mixture density by
``torch.distributions.MixtureSameFamily``, never through the models' fusion code.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal, kl_divergence

from mmgen import rng
from mmgen.models.multimodal import MultimodalVAE
from mmgen.models.registry import MODELS, build_model

TINY = {"encoder_widths": (16, 8), "fusion_width": 8, "decoder_widths": (8, 16)}
BETA, ALPHA, LATENT = 2.5, 0.3, 3  # distinct values, so that swapping two of them shows
BATCH = 5
Subset = tuple[str, ...]


class Hand:
    """The pieces of docs/method.md, computed from a model's networks without its objective code."""

    def __init__(self, model: MultimodalVAE, batch: dict[str, torch.Tensor]) -> None:
        self.model, self.batch = model, batch
        self.generator = noise()  # the same stream the model draws from, in the same order
        self.kls: list[torch.Tensor] = []  # every KL used, to check none is trivially small

    def q(self, subset: Subset) -> Normal:
        """q(z|S) = N(μ, σ²) from the model's encoder of S."""
        mu, logvar = self.model.encode(self.batch, subset)
        return Normal(mu, (0.5 * logvar).exp())

    def kl(self, q: Normal, p: Normal) -> torch.Tensor:
        """KL(q ‖ p), summed over latent dimensions, by torch.distributions."""
        value = kl_divergence(q, p).sum(-1)
        self.kls.append(value)
        return value

    def log_p(self, modality: str, z: torch.Tensor) -> torch.Tensor:
        """log p(m|z) = Σ_pixels [x log σ(l) + (1 − x) log(1 − σ(l))], x the grey levels."""
        logits = self.model.decoders[modality](z).flatten(1)
        x = self.batch[modality].flatten(1)
        return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(1)

    def elbo(self, subset: Subset, scored: Subset, q: Normal | None = None) -> torch.Tensor:
        """ELBO_S(T) with one draw z = μ + σ·ε, ε ~ N(0, I) from the shared stream.

        ``q`` replaces the model's ``q(z|S)`` (the aggregators' hand-made products).
        """
        q = self.q(subset) if q is None else q
        z = self.draw(q)
        return sum(self.log_p(m, z) for m in scored) - BETA * self.kl(q, standard(q))

    def draw(self, q: Normal) -> torch.Tensor:
        """z = μ + σ·ε with ε from the shared stream."""
        eps = torch.randn(q.loc.shape, generator=self.generator, dtype=q.loc.dtype)
        return q.loc + q.scale * eps

    def expert(self, modality: str) -> Normal:
        """The uni-modal expert q(z|m), straight from the model's network of m."""
        flat = {modality: self.batch[modality].flatten(1)}
        mu, logvar = self.model.encoders[modality](flat)
        return Normal(mu, (0.5 * logvar).exp())

    def poe(self, subset: Subset) -> Normal:
        """PoE(S) = N(0, I)·Π_{m∈S} q(z|m): precision 1 + Σ σ_m⁻², mean Σ μ_m σ_m⁻² / precision."""
        experts = [self.expert(m) for m in subset]
        precision = 1 + sum(e.scale**-2 for e in experts)
        mean = sum(e.loc * e.scale**-2 for e in experts) / precision
        return Normal(mean, precision**-0.5)


def standard(q: Normal) -> Normal:
    """p(z) = N(0, I) of q's shape."""
    return Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))


def uniform_mixture(components: list[Normal]) -> MixtureSameFamily:
    """(1/K) Σ_k q_k over diagonal Gaussians, by torch.distributions."""
    loc = torch.stack([c.loc for c in components], dim=1)  # (B, K, d)
    scale = torch.stack([c.scale for c in components], dim=1)
    weights = Categorical(logits=torch.zeros(loc.shape[:2], dtype=loc.dtype))
    return MixtureSameFamily(weights, Independent(Normal(loc, scale), 1))


def noise() -> torch.Generator:
    return rng.stream(0, "pinned-objective")


def smaller(subset: Subset) -> list[Subset]:
    """The subsets of S one modality smaller."""
    return list(itertools.combinations(subset, len(subset) - 1))


# ----- docs/method.md, one function per registered model ----------------------------------------
def jmvae(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """JMVAE (and JMVAE-zero, same training): maximise ELBO_M(M)."""
    return hand.elbo(modalities, modalities)


def jmvae_kl(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """JMVAE-kl(α): ELBO_M(M) − α Σ_m KL(q(z|M) ‖ q(z|m))."""
    joint = hand.elbo(modalities, modalities)
    q_joint = hand.q(modalities)
    return joint - ALPHA * sum(hand.kl(q_joint, hand.q((m,))) for m in modalities)


def tvae(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """tVAE, two stages: ELBO_M(M); then Σ_m ELBO_m(m) (decoders frozen, see test_train)."""
    if stage == "joint":
        return hand.elbo(modalities, modalities)
    assert stage == "unimodal"
    return sum(hand.elbo((m,), (m,)) for m in modalities)


def m2vae(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """M²VAE: L(M) = (1/|M|)·[J(M) + Σ_{|S| = |M|−1} L(S)], L({m}) = ELBO_m(m),
    J(S) = ELBO_S(S) − α Σ_{|S'| = |S|−1} KL(q(z|S) ‖ q(z|S')); the recursion taken literally.

    Each subset's ELBO uses one draw; the model draws them largest subset first.
    """
    order = [
        s for k in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, k)
    ]
    elbos = {s: hand.elbo(s, s) for s in order}

    def bound(subset: Subset) -> torch.Tensor:
        if len(subset) == 1:
            return elbos[subset]
        j = elbos[subset] - ALPHA * sum(
            hand.kl(hand.q(subset), hand.q(child)) for child in smaller(subset)
        )
        return (j + sum(bound(child) for child in smaller(subset))) / len(subset)

    return bound(modalities)


def mvae(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """MVAE: ELBO_M(M) + Σ_m ELBO_m(m) + ELBO_S(S) for the sampled middle subset S (|M| ≥ 3),
    every q(z|S) = PoE(S) and every term scoring only its own modalities.

    The model draws the sampled subset first (a permutation of the subsets of size 2 … |M|−1,
    largest first, from the training stream), then one z per term in the order M, singles, S.
    """
    sampled = []
    if len(modalities) == 3:  # the middle subsets are the pairs; two modalities have none
        pairs = list(itertools.combinations(modalities, 2))
        sampled = [pairs[int(torch.randperm(len(pairs), generator=hand.generator)[0])]]
    subsets = [modalities, *((m,) for m in modalities), *sampled]
    return sum(hand.elbo(s, s, q=hand.poe(s)) for s in subsets)


def mmvae(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """MMVAE: (1/|M|) Σ_m [log p(M|z_m) + β(log p(z_m) − log q(z_m|M))], z_m ~ q(z|m),
    q(z|M) = (1/|M|) Σ_m q(z|m) (docs/method.md, with β on the KL estimate)."""
    experts = [hand.expert(m) for m in modalities]
    mixture = uniform_mixture(experts)
    terms = []
    for q in experts:  # one draw per stratum, in the modalities' order
        z = hand.draw(q)
        log_prior = standard(q).log_prob(z).sum(-1)
        likelihood = sum(hand.log_p(t, z) for t in modalities)
        terms.append(likelihood + BETA * (log_prior - mixture.log_prob(z)))
    return sum(terms) / len(modalities)


def mopoe(hand: Hand, modalities: Subset, stage: str) -> torch.Tensor:
    """MoPoE: (1/|P|) Σ_{S∈P} [E_{PoE(S)} log p(M|z) − β KL(PoE(S) ‖ p(z))], P the non-empty
    subsets; the model draws one z per subset, largest subset first."""
    order = [
        s for k in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, k)
    ]
    return sum(hand.elbo(s, modalities, q=hand.poe(s)) for s in order) / len(order)


HAND: dict[str, Callable[[Hand, Subset, str], torch.Tensor]] = {
    "jmvae": jmvae,
    "jmvae-zero": jmvae,
    "jmvae-kl": jmvae_kl,
    "tvae": tvae,
    "m2vae": m2vae,
    "mvae": mvae,
    "mmvae": mmvae,
    "mopoe": mopoe,
}


def tiny(name: str, modalities: Subset) -> MultimodalVAE:
    overrides = {**TINY, "latent_dim": LATENT, "beta": BETA}
    if any(field.name == "alpha" for field in dataclasses.fields(MODELS[name][0])):
        overrides["alpha"] = ALPHA
    return build_model(name, modalities, seed=0, **overrides).double()


def images(modalities: Subset) -> dict[str, torch.Tensor]:
    generator = rng.stream(0, "pinned-images")
    return {
        m: torch.rand(BATCH, 1, 28, 28, generator=generator, dtype=torch.float64)
        for m in modalities
    }


def test_every_registered_model_has_a_hand_objective() -> None:
    assert set(HAND) == set(MODELS)


@pytest.mark.parametrize("modalities", [("a", "b"), ("a", "b", "c")])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_loss_equals_the_method_by_hand(name: str, modalities: Subset) -> None:
    model = tiny(name, modalities)
    batch = images(modalities)
    for stage in model.stages:
        model.set_stage(stage)
        loss = model.loss_on(batch, noise())["loss"]
        hand = Hand(model, batch)
        expected = -HAND[name](hand, modalities, stage).mean()  # the loss is −objective
        torch.testing.assert_close(loss, expected, rtol=0.0, atol=1e-5)
        # Every KL is large enough that reversing it or changing its weight shows.
        for kl in hand.kls:
            assert float(kl.detach().min()) > 1e-3


def test_m2vae_two_modalities_is_the_papers_formula() -> None:
    """½[ELBO_a(a) + ELBO_b(b) + ELBO_ab(a,b) − α KL(q_ab‖q_a) − α KL(q_ab‖q_b)]."""
    model = tiny("m2vae", ("a", "b"))
    batch = images(("a", "b"))
    hand = Hand(model, batch)
    e_ab, e_a, e_b = (
        hand.elbo(("a", "b"), ("a", "b")),
        hand.elbo(("a",), ("a",)),
        hand.elbo(("b",), ("b",)),
    )
    q_ab, q_a, q_b = hand.q(("a", "b")), hand.q(("a",)), hand.q(("b",))
    objective = 0.5 * (e_a + e_b + e_ab - ALPHA * hand.kl(q_ab, q_a) - ALPHA * hand.kl(q_ab, q_b))
    loss = model.loss_on(batch, noise())["loss"]
    torch.testing.assert_close(loss, -objective.mean(), rtol=0.0, atol=1e-5)


def test_m2vae_three_modalities_has_the_stated_weights() -> None:
    """⅓ on the full set's J, ⅙ on each pair's J, ⅓ on each single ELBO."""
    modalities = ("a", "b", "c")
    model = tiny("m2vae", modalities)
    batch = images(modalities)
    hand = Hand(model, batch)
    pairs = list(itertools.combinations(modalities, 2))
    elbos = {s: hand.elbo(s, s) for s in [modalities, *pairs, *((m,) for m in modalities)]}

    def j(subset: Subset) -> torch.Tensor:
        penalty = sum(hand.kl(hand.q(subset), hand.q(child)) for child in smaller(subset))
        return elbos[subset] - ALPHA * penalty

    objective = (
        j(modalities) / 3 + sum(j(p) for p in pairs) / 6 + sum(elbos[(m,)] for m in modalities) / 3
    )
    loss = model.loss_on(batch, noise())["loss"]
    torch.testing.assert_close(loss, -objective.mean(), rtol=0.0, atol=1e-5)
