"""MVAE, MMVAE and MoPoE (docs/method.md, "Today's aggregators"): fusion, mixture posteriors, and
every metric correct for a mixture ``q(z|S)``.

Their objectives are pinned by hand in ``test_pinned_objectives.py``; here the pieces the
evaluator relies on: the product of experts against the Gaussian product it claims to be, the
mixture density against ``torch.distributions``, each model's ``q(z|S)`` against its experts,
the importance-weighted bound and the subset ELBO of a mixture against known answers, and
``mmgen evaluate --models mvae,mmvae,mopoe`` end to end.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from mmgen import metrics, rng
from mmgen.models.registry import build_model
from mmgen.objectives import (
    bernoulli_log_likelihood,
    kl_normal,
    log_normal,
    mixture_log_prob,
    mixture_moments,
    nonempty_subsets,
    product_of_experts,
    reparameterize,
    sample_mixture,
)
from test_evaluate import QUICK, invoke, write_mmgen_file

TINY = {"encoder_widths": (16, 8), "fusion_width": 8, "decoder_widths": (8, 16)}
AGGREGATORS = ("mvae", "mmvae", "mopoe")


def stream(name: str) -> torch.Generator:
    return rng.stream(0, "test-aggregators", name)


def random_images(modalities, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = rng.stream(seed, "aggregator-images")
    return {m: torch.rand(size, 1, 28, 28, generator=generator) for m in modalities}


def torch_mixture(mu: torch.Tensor, logvar: torch.Tensor) -> MixtureSameFamily:
    """Uniform mixture over dim 0 of ``(K, B, d)`` parameters, batch ``B``."""
    loc, scale = mu.transpose(0, 1), (0.5 * logvar).exp().transpose(0, 1)  # (B, K, d)
    weights = Categorical(logits=torch.zeros(loc.shape[:2], dtype=loc.dtype))
    return MixtureSameFamily(weights, Independent(Normal(loc, scale), 1))


# ----- fusion and mixtures (mmgen.objectives) ---------------------------------------------------
def test_product_of_experts_is_the_normalised_product_with_the_prior() -> None:
    """log N(z; 0, 1) + Σ_m log N(z; μ_m, σ_m²) − log PoE(z) is the same for every z."""
    mu = torch.tensor([[[0.8, -1.0]], [[-0.3, 2.0]]], dtype=torch.float64)  # (E=2, B=1, d=2)
    logvar = torch.tensor([[[0.2, -1.0]], [[-0.5, 0.7]]], dtype=torch.float64)
    poe_mu, poe_logvar = product_of_experts(mu, logvar)
    z = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None, None].expand(7, 1, 2)
    unnormalised = log_normal(z, torch.zeros(2), torch.zeros(2)) + sum(
        log_normal(z, mu[e], logvar[e]) for e in range(2)
    )
    difference = unnormalised - log_normal(z, poe_mu, poe_logvar)  # (7, 1)
    torch.testing.assert_close(difference, difference[:1].expand_as(difference))
    # The closed form of docs/method.md on one dimension: precision 1 + Σ σ⁻².
    precision = 1 + math.exp(-0.2) + math.exp(0.5)
    assert float(poe_logvar[0, 0]) == pytest.approx(-math.log(precision))
    expected_mean = (0.8 * math.exp(-0.2) - 0.3 * math.exp(0.5)) / precision
    assert float(poe_mu[0, 0]) == pytest.approx(expected_mean)


def test_mixture_log_prob_matches_torch_distributions_and_reduces_to_one_gaussian() -> None:
    generator = stream("mixture")
    mu = torch.randn(3, 4, 2, generator=generator, dtype=torch.float64)
    logvar = torch.randn(3, 4, 2, generator=generator, dtype=torch.float64)
    z = torch.randn(5, 4, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        mixture_log_prob(z, mu, logvar), torch_mixture(mu, logvar).log_prob(z)
    )
    assert torch.equal(mixture_log_prob(z, mu[:1], logvar[:1]), log_normal(z, mu[0], logvar[0]))


def test_sample_mixture_draws_each_component_with_its_weight() -> None:
    mu = torch.tensor([[[0.0]], [[10.0]], [[20.0]]])  # (3, 1, 1): far apart
    logvar = torch.full((3, 1, 1), -2.0)
    z = sample_mixture(mu, logvar, 30_000, stream("sample"))  # (30000, 1, 1)
    counts = torch.bincount(((z.flatten() + 5) // 10).long(), minlength=3)
    assert torch.all((counts / 30_000 - 1 / 3).abs() < 0.02)
    mean, log_variance = mixture_moments(mu, logvar)
    assert float(z.mean()) == pytest.approx(float(mean), abs=0.15)
    assert float(z.var()) == pytest.approx(float(log_variance.exp()), rel=0.03)
    # One component: exactly the reparameterised draws of that Gaussian.
    one = sample_mixture(mu[:1], logvar[:1], 4, stream("one"))
    torch.testing.assert_close(
        one, reparameterize(mu[0].expand(4, 1, 1), logvar[0].expand(4, 1, 1), stream("one"))
    )


# ----- each model's q(z|S) ----------------------------------------------------------------------
@pytest.mark.parametrize("modalities", [("a", "b"), ("a", "b", "c")])
def test_posteriors_are_built_from_the_experts_of_the_subset(modalities) -> None:
    data = random_images(modalities, 3)
    models = {name: build_model(name, modalities, seed=0, **TINY) for name in AGGREGATORS}

    def expert(model, m):
        return model.encoders[m]({m: data[m].flatten(1)})

    def poe(model, subset):
        experts = [expert(model, m) for m in subset]
        return product_of_experts(*(torch.stack(p) for p in zip(*experts, strict=True)))

    for model in models.values():
        assert model.encodable_subsets() == nonempty_subsets(modalities)
        assert sorted(model.encoders) == sorted(modalities)  # experts only
    for subset in nonempty_subsets(modalities):
        # Only the subset's images are needed: nothing else leaks in.
        seen = {m: data[m] for m in subset}
        mvae = models["mvae"]
        torch.testing.assert_close(mvae.encode(seen, subset), poe(mvae, subset))
        mmvae = models["mmvae"]
        mu, logvar = mmvae.posterior_components(seen, subset)
        torch.testing.assert_close(
            (mu, logvar),
            tuple(torch.stack(p) for p in zip(*[expert(mmvae, m) for m in subset], strict=True)),
        )
        mopoe = models["mopoe"]
        mu, logvar = mopoe.posterior_components(seen, subset)
        parts = [poe(mopoe, s) for s in nonempty_subsets(subset)]
        torch.testing.assert_close(
            (mu, logvar), tuple(torch.stack(p) for p in zip(*parts, strict=True))
        )
        # encode: the mixture's mean and variance, the Gaussian itself for one component.
        moments = mixture_moments(mu, logvar) if len(mu) > 1 else (mu[0], logvar[0])
        torch.testing.assert_close(mopoe.encode(seen, subset), moments)


# ----- the metrics on a mixture posterior -------------------------------------------------------
def constant_decoder_mmvae() -> tuple[torch.nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """An MMVAE whose decoders ignore z, so log p(M) = log p(M|z) exactly, for any q."""
    model = build_model("mmvae", ("a", "b"), seed=0, latent_dim=1, **TINY).double().eval()
    with torch.no_grad():
        for decoder in model.decoders.values():
            decoder.net[-1].weight.zero_()  # logits = the last bias, whatever z
        model.encoders["a"].head.mu.bias += 1.0  # experts apart: a mixture far from a Gaussian
        model.encoders["b"].head.mu.bias -= 1.0
    data = {m: x.double() for m, x in random_images(("a", "b"), 4).items()}
    logits = model.decode_logits(torch.zeros(1, 1, dtype=torch.float64))
    exact = sum(bernoulli_log_likelihood(logits[m].expand_as(data[m]), data[m]) for m in data)
    return model, data, exact


def test_iw_bound_with_a_mixture_proposal_reaches_the_exact_log_likelihood() -> None:
    """With p(M|z) constant, E_q[p(z)/q(z)] = 1 only under the true mixture density: the bound
    converges to log p(M). The Gaussian of ``encode`` as density would not."""
    model, data, exact = constant_decoder_mmvae()
    mu, logvar = model.posterior_components(data, ("a", "b"))
    assert len(mu) == 2 and float((mu[0] - mu[1]).detach().abs().min()) > 1.0  # a real mixture
    # 8 independent bounds per point (each K = 20,000): Monte-Carlo sd ≈ 0.001 nat on the mean
    repeated = {m: x.repeat(8, 1, 1, 1) for m, x in data.items()}
    bound = metrics.importance_weighted_bound(model, repeated, 20_000, stream("iw"))
    bound = bound.view(8, -1).mean(0).to(exact.dtype)
    torch.testing.assert_close(bound, exact, rtol=0.0, atol=5e-3)


def test_subset_elbo_of_a_mixture_is_minus_its_kl_to_the_prior() -> None:
    """L_S = log p(M) − KL(q(z|S) ‖ p(z)) when p(M|z) is constant; the KL by torch.distributions."""
    model, data, exact = constant_decoder_mmvae()
    elbo = metrics.subset_elbo(model, data, ("a", "b"), stream("elbo"), num_samples=4000)
    mixture = torch_mixture(*model.posterior_components(data, ("a", "b")))
    z = mixture.sample((200_000,))
    prior = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1)
    kl = (mixture.log_prob(z) - prior.log_prob(z)).mean(0)
    torch.testing.assert_close(elbo.double(), exact - kl, rtol=0.0, atol=0.02)
    assert torch.all(kl > 0.05)  # a KL large enough that dropping it shows
    # The IW bound's proposal is the same mixture: with K = 1 its mean is this ELBO too.
    repeated = {m: x.repeat(2000, 1, 1, 1) for m, x in data.items()}
    single = metrics.importance_weighted_bound(model, repeated, 1, stream("k1")).view(2000, -1)
    torch.testing.assert_close(single.mean(0).double(), exact - kl, rtol=0.0, atol=0.05)


def test_divergences_of_mixtures_match_monte_carlo_by_hand() -> None:
    model = build_model("mopoe", ("a", "b"), seed=0, **TINY).double().requires_grad_(False)
    model.encoders["a"].head.mu.bias += 2.0  # experts apart: KL(p‖q) and KL(q‖p) differ
    model.encoders["b"].head.mu.bias -= 2.0
    data = {m: x.double() for m, x in random_images(("a", "b"), 3).items()}
    result = metrics.posterior_divergences(model, data, stream("div"), num_samples=20_000)
    q_ab = torch_mixture(*model.posterior_components(data, ("a", "b")))
    q_a = torch_mixture(*model.posterior_components(data, ("a",)))
    z = q_ab.sample((200_000,))
    kl = float((q_ab.log_prob(z) - q_a.log_prob(z)).mean())
    reverse_z = q_a.sample((200_000,))
    reverse = float((q_a.log_prob(reverse_z) - q_ab.log_prob(reverse_z)).mean())
    assert abs(kl - reverse) > 0.2  # the test tells the KL's direction
    assert result["a+b||a"]["kl"] == pytest.approx(kl, rel=0.02)
    assert 0.0 < result["a+b||a"]["jsd"] < math.log(2)
    # Two Gaussians (the singles): the closed-form KL, as for every other model.
    mu_a, logvar_a = model.encode(data, ("a",))
    mu_b, logvar_b = model.encode(data, ("b",))
    closed = 0.5 * (
        logvar_b - logvar_a + (logvar_a.exp() + (mu_a - mu_b) ** 2) / logvar_b.exp() - 1
    )
    assert result["a||b"]["kl"] == pytest.approx(float(closed.sum(-1).mean()))


def test_mixture_jsd_of_single_components_is_the_gaussian_jsd() -> None:
    generator = stream("jsd")
    mu_p, mu_q, logvar_p, logvar_q = (torch.randn(5, 2, generator=generator) for _ in range(4))
    gaussian = metrics.gaussian_jsd(mu_p, logvar_p, mu_q, logvar_q, stream("j"), 50)
    mixture = metrics.mixture_jsd(
        (mu_p[None], logvar_p[None]), (mu_q[None], logvar_q[None]), stream("j"), 50
    )
    torch.testing.assert_close(mixture, gaussian)


# ----- mmgen evaluate ---------------------------------------------------------------------------
def test_evaluate_runs_the_aggregators(tmp_path, fake_data_root) -> None:
    data = write_mmgen_file(tmp_path / "mnist-e.h5", "entangled")
    out = tmp_path / "report"
    cache = tmp_path / "cache"
    result = invoke("evaluate", data, "--out", out, "--models", "mvae,mmvae,mopoe",
                    "--data-dir", fake_data_root, "--cache-dir", cache, *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    models = json.loads((out / "report.json").read_text())["datasets"]["mnist-e"]["models"]
    assert set(models) == set(AGGREGATORS)
    for name, figures in models.items():
        assert set(figures["elbo"]) == {"mnist+fashion", "mnist", "fashion"}
        assert set(figures["coherence"]["cross"]) == {"mnist->fashion", "fashion->mnist"}
        assert len(figures["posterior"]["divergence"]) == 3
        assert np.isfinite(figures["log_likelihood"])
        assert all(np.isfinite(v) for v in figures["elbo"].values())
        assert (out / f"latent-{name}.png").stat().st_size > 0
    markdown = (out / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in AGGREGATORS)


def test_mixture_kl_of_a_point_does_not_depend_on_the_points_after_it() -> None:
    """Issue 18, item 4: per-point draws from a required generator (``--test-limit``)."""
    gen = torch.Generator().manual_seed(3)
    mu_p, logvar_p = torch.randn(3, 10, 2, generator=gen), torch.randn(3, 10, 2, generator=gen)
    mu_q, logvar_q = torch.randn(1, 10, 2, generator=gen), torch.randn(1, 10, 2, generator=gen)
    ten = metrics.mixture_kl((mu_p, logvar_p), (mu_q, logvar_q), stream("kl"), 50)
    three = metrics.mixture_kl(
        (mu_p[:, :3], logvar_p[:, :3]), (mu_q[:, :3], logvar_q[:, :3]), stream("kl"), 50
    )
    torch.testing.assert_close(three, ten[:3], rtol=0, atol=0)
    with pytest.raises(TypeError, match="explicit torch.Generator"):
        metrics.mixture_kl((mu_p, logvar_p), (mu_q, logvar_q), None, 50)


def test_mixture_kl_of_single_components_is_the_closed_form() -> None:
    mu_p, logvar_p = torch.tensor([[[0.5, -1.0]]]), torch.tensor([[[0.2, -0.4]]])
    mu_q, logvar_q = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[0.0, 0.3]]])
    estimate = metrics.mixture_kl((mu_p, logvar_p), (mu_q, logvar_q), stream("kl"), 40_000)
    exact = kl_normal(mu_p[0], logvar_p[0], mu_q[0], logvar_q[0])
    torch.testing.assert_close(estimate, exact, atol=0.02, rtol=0)

