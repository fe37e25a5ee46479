"""Every objective in ``mmgen.objectives`` against a closed form or ``torch.distributions``."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from mmgen.objectives import (
    bernoulli_log_likelihood,
    beta_elbo,
    iw_log_mean_exp,
    kl_normal,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
    m2vae_kl_weights,
    m2vae_objective,
    m2vae_subset_weights,
    multimodal_elbo,
    multimodal_log_likelihood,
    nonempty_subsets,
    penalized_elbo,
    product_of_experts,
    reparameterize,
)


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def gaussian(rng: torch.Generator, batch: int = 5, dim: int = 3) -> tuple[torch.Tensor, ...]:
    return torch.randn(batch, dim, generator=rng), torch.randn(batch, dim, generator=rng)


def test_bernoulli_log_likelihood_matches_torch_at_binary_targets(rng: torch.Generator) -> None:
    logits = 3 * torch.randn(4, 1, 28, 28, generator=rng)
    target = (torch.rand(4, 1, 28, 28, generator=rng) > 0.5).float()
    expected = Bernoulli(logits=logits).log_prob(target).flatten(1).sum(1)
    torch.testing.assert_close(bernoulli_log_likelihood(logits, target), expected)


def test_bernoulli_log_likelihood_at_grey_levels_is_minus_bce() -> None:
    # logit 0 → p = ½: every pixel costs log 2 whatever its grey level.
    target = torch.full((2, 784), 0.3)
    torch.testing.assert_close(
        bernoulli_log_likelihood(torch.zeros(2, 784), target), torch.full((2,), -784 * math.log(2))
    )


def test_kl_standard_normal_matches_torch(rng: torch.Generator) -> None:
    mu, logvar = gaussian(rng)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl_standard_normal(mu, logvar), expected)


def test_kl_normal_matches_torch(rng: torch.Generator) -> None:
    mu_q, logvar_q = gaussian(rng)
    mu_p, logvar_p = gaussian(rng)
    expected = kl_divergence(
        Normal(mu_q, (0.5 * logvar_q).exp()), Normal(mu_p, (0.5 * logvar_p).exp())
    ).sum(-1)
    torch.testing.assert_close(kl_normal(mu_q, logvar_q, mu_p, logvar_p), expected)
    torch.testing.assert_close(
        kl_normal(mu_q, logvar_q, torch.zeros(5, 3), torch.zeros(5, 3)),
        kl_standard_normal(mu_q, logvar_q),
    )


def test_log_densities_match_torch(rng: torch.Generator) -> None:
    mu, logvar = gaussian(rng)
    z = torch.randn(5, 3, generator=rng)
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(log_normal(z, mu, logvar), expected)
    torch.testing.assert_close(log_standard_normal(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


def test_reparameterize_is_mu_plus_sigma_eps_from_the_generator(rng: torch.Generator) -> None:
    mu, logvar = gaussian(rng)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7))
    z = reparameterize(mu, logvar, torch.Generator().manual_seed(7))
    torch.testing.assert_close(z, mu + (0.5 * logvar).exp() * eps)


def test_beta_elbo_and_penalized_elbo_hand_case() -> None:
    elbo = beta_elbo(torch.tensor([-10.0]), torch.tensor([2.0]), beta=4.0)
    torch.testing.assert_close(elbo, torch.tensor([-18.0]))
    kls = [torch.tensor([1.0]), torch.tensor([3.0])]
    torch.testing.assert_close(penalized_elbo(elbo, kls, alpha=0.1), torch.tensor([-18.4]))
    torch.testing.assert_close(penalized_elbo(elbo, [], alpha=0.1), elbo)


def test_multimodal_elbo_hand_case() -> None:
    # Two modalities decoded at logit 0 (−784 log 2 each); q = N(1, e⁰) in d = 2 has KL = 1.
    logits = {"a": torch.zeros(3, 1, 28, 28), "b": torch.zeros(3, 1, 28, 28)}
    targets = {m: torch.rand(3, 1, 28, 28) for m in ("a", "b", "c")}  # "c" is not scored
    mu, logvar = torch.ones(3, 2), torch.zeros(3, 2)
    expected = torch.full((3,), -2 * 784 * math.log(2) - 4.0 * 1.0)
    torch.testing.assert_close(multimodal_elbo(logits, targets, mu, logvar, beta=4.0), expected)


def test_multimodal_log_likelihood_sums_the_scored_modalities(rng: torch.Generator) -> None:
    logits = {m: torch.randn(2, 1, 28, 28, generator=rng) for m in ("a", "b")}
    targets = {m: torch.rand(2, 784, generator=rng) for m in ("a", "b")}  # flat targets are fine
    expected = sum(bernoulli_log_likelihood(logits[m].flatten(1), targets[m]) for m in "ab")
    torch.testing.assert_close(multimodal_log_likelihood(logits, targets), expected)
    with pytest.raises(ValueError, match="no target images"):
        multimodal_log_likelihood(logits, {"a": targets["a"]})


def test_iw_log_mean_exp_is_log_of_the_mean(rng: torch.Generator) -> None:
    log_w = torch.randn(7, 4, generator=rng)
    torch.testing.assert_close(iw_log_mean_exp(log_w, dim=0), log_w.exp().mean(0).log())
    torch.testing.assert_close(iw_log_mean_exp(log_w, dim=1), log_w.exp().mean(1).log())
    # Stable where exp underflows: K equal weights give the weight back.
    torch.testing.assert_close(
        iw_log_mean_exp(torch.full((1000, 2), -5000.0)), torch.full((2,), -5000.0)
    )


def test_nonempty_subsets_full_set_first() -> None:
    assert nonempty_subsets(("a", "b")) == [("a", "b"), ("a",), ("b",)]
    assert len(nonempty_subsets("abcd")) == 15


def test_m2vae_weights_two_modalities() -> None:
    assert m2vae_subset_weights(("a", "b")) == {("a", "b"): 0.5, ("a",): 0.5, ("b",): 0.5}
    assert m2vae_kl_weights(("a", "b")) == {(("a", "b"), ("a",)): 0.5, (("a", "b"), ("b",)): 0.5}


def test_m2vae_weights_three_modalities() -> None:
    weights = m2vae_subset_weights(("a", "b", "c"))
    expected = {("a", "b", "c"): 1 / 3, **{p: 1 / 6 for p in itertools.combinations("abc", 2)}}
    expected |= {(m,): 1 / 3 for m in "abc"}
    assert weights == pytest.approx(expected)
    kl_weights = m2vae_kl_weights(("a", "b", "c"))
    assert len(kl_weights) == 3 + 3 * 2  # the full set's 3 pairs, then 2 singles per pair
    assert kl_weights[(("a", "b", "c"), ("a", "c"))] == pytest.approx(1 / 3)
    assert kl_weights[(("b", "c"), ("c",))] == pytest.approx(1 / 6)


def naive_expansion(subset: tuple[str, ...], coefficient: float, out: Counter) -> None:
    """Expand L(S) literally, revisiting subsets: add each ELBO_S(S)'s coefficient to ``out``."""
    if len(subset) == 1:
        out[subset] += coefficient
        return
    out[subset] += coefficient / len(subset)  # J(S)
    for child in itertools.combinations(subset, len(subset) - 1):
        naive_expansion(child, coefficient / len(subset), out)


@pytest.mark.parametrize("modalities", ["ab", "abc", "abcd"])
def test_m2vae_weights_sum_as_the_recursion_says(modalities: str) -> None:
    modalities = tuple(modalities)
    weights = m2vae_subset_weights(modalities)
    expanded: Counter = Counter()
    naive_expansion(modalities, 1.0, expanded)
    assert weights == pytest.approx(dict(expanded))
    # Each L(S) hands its whole coefficient to its children: every level carries total weight 1.
    for size in range(1, len(modalities) + 1):
        level = sum(w * (len(s) if len(s) > 1 else 1) for s, w in weights.items() if len(s) == size)
        assert level == pytest.approx(1.0)


def test_m2vae_objective_two_modalities_matches_the_paper(rng: torch.Generator) -> None:
    e_ab, e_a, e_b, kl_a, kl_b = torch.randn(5, 4, generator=rng)
    elbos = {("a", "b"): e_ab, ("a",): e_a, ("b",): e_b}
    kls = {(("a", "b"), ("a",)): kl_a.abs(), (("a", "b"), ("b",)): kl_b.abs()}
    alpha = 0.3
    expected = 0.5 * (e_a + e_b + e_ab - alpha * kl_a.abs() - alpha * kl_b.abs())
    torch.testing.assert_close(m2vae_objective(elbos, kls, ("a", "b"), alpha), expected)
    with pytest.raises(ValueError, match="missing the terms"):
        m2vae_objective({("a", "b"): e_ab}, kls, ("a", "b"), alpha)


def test_m2vae_weights_reject_repeated_names() -> None:
    with pytest.raises(ValueError, match="distinct"):
        m2vae_subset_weights(("a", "a"))


@pytest.mark.parametrize("extreme", [-200.0, -100.0, -89.0, 60.0, 200.0])
def test_product_of_experts_is_finite_and_exact_at_extreme_log_variances(extreme) -> None:
    """Issue 18, item 5: one expert at log σ² = ``extreme`` (float32's exp overflows below
    −88), the other ordinary; the product against the closed form in float64 log space."""
    mu = torch.tensor([[[1.5, -2.0]], [[0.5, 3.0]]])  # (E=2, B=1, d=2)
    logvar = torch.tensor([[[extreme, extreme]], [[0.3, -1.2]]])
    mean, log_var = product_of_experts(mu, logvar)
    assert torch.isfinite(mean).all() and torch.isfinite(log_var).all()
    lv = logvar.double()
    log_t = torch.logsumexp(torch.cat([torch.zeros(1, 1, 2, dtype=torch.float64), -lv]), 0)
    expected_mean = (mu.double() * torch.exp(-lv - log_t)).sum(0)
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_var.double(), -log_t, rtol=1e-5, atol=1e-6)
    if extreme < 0:  # a near-certain expert dictates the product
        torch.testing.assert_close(mean, mu[0, 0:1], rtol=1e-5, atol=1e-6)
