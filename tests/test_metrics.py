"""The metrics of ``mmgen.metrics`` on hand-made models with known answers.

The fake models implement the ``MultimodalVAE`` interface (``modalities``, ``config``,
``encodable_subsets``, ``encode``, ``decode_logits``) with closed-form pieces, so every bound can
be checked against exact values or a quadrature over a one-dimensional latent.
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from conftest import fake_images
from mmgen import evaluate, metrics
from mmgen.data.h5io import SplitData
from mmgen.objectives import (
    bernoulli_log_likelihood,
    kl_standard_normal,
    log_normal,
    log_standard_normal,
)
from mmgen.rng import stream

PIXELS = 28 * 28


@dataclass(frozen=True)
class FakeConfig:
    modalities: tuple[str, ...] = ("a", "b")
    latent_dim: int = 1
    beta: float = 1.0


class LinearDecoderVAE:
    """Decoders ``logits_m = base_m + z W_m``; the encoder is any function of the images."""

    def __init__(
        self,
        bases: dict[str, Tensor],
        weights: dict[str, Tensor],
        encoder: Callable[[dict[str, Tensor], tuple[str, ...]], tuple[Tensor, Tensor]],
        subsets: list[tuple[str, ...]] | None = None,
    ) -> None:
        self.modalities = tuple(bases)
        latent_dim = next(iter(weights.values())).shape[0]
        self.config = FakeConfig(self.modalities, latent_dim)
        self.bases, self.weights, self.encoder = bases, weights, encoder
        self.subsets = subsets or [self.modalities, *((m,) for m in self.modalities)]

    def encodable_subsets(self) -> list[tuple[str, ...]]:
        return list(self.subsets)

    def encode(self, images: dict[str, Tensor], subset: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        assert set(images) == set(subset), "metrics must hand over exactly the subset's images"
        return self.encoder(images, subset)

    def decode_logits(self, z: Tensor) -> dict[str, Tensor]:
        return {
            m: (self.bases[m] + z @ self.weights[m]).view(-1, 1, 28, 28) for m in self.modalities
        }


def prior_encoder(latent_dim: int, mean: float = 0.0, logvar: float = 0.0):
    def encode(images, subset):
        size = len(next(iter(images.values())))
        return torch.full((size, latent_dim), mean), torch.full((size, latent_dim), logvar)

    return encode


def random_images(size: int, seed: int, modalities=("a", "b")) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.rand(size, 1, 28, 28, generator=generator) for m in modalities}


def dependent_model(encoder=None, strength: float = 0.6) -> LinearDecoderVAE:
    """d = 1; the latent moves 24 pixels per modality, so p(a, b) has no closed form."""
    generator = torch.Generator().manual_seed(3)
    bases = {m: 0.5 * torch.randn(PIXELS, generator=generator) for m in ("a", "b")}
    weights = {m: torch.zeros(1, PIXELS) for m in ("a", "b")}
    weights["a"][0, :24] = strength
    weights["b"][0, 100:124] = -strength
    return LinearDecoderVAE(bases, weights, encoder or prior_encoder(1))


def quadrature_log_marginal(model: LinearDecoderVAE, images, modalities) -> Tensor:
    """``log ∫ Π_m p(x_m|z) N(z; 0, 1) dz`` on a fine grid (d = 1), shape ``(N,)``."""
    grid = torch.linspace(-10.0, 10.0, 8001, dtype=torch.float64)
    step = float(grid[1] - grid[0])
    logits = model.decode_logits(grid.float().unsqueeze(1))
    size = len(next(iter(images.values())))
    total = torch.zeros(size, len(grid), dtype=torch.float64)
    for m in modalities:
        for i in range(size):
            target = images[m][i].expand(len(grid), 1, 28, 28)
            total[i] += bernoulli_log_likelihood(logits[m], target).double()
    log_prior = -0.5 * (math.log(2 * math.pi) + grid**2)
    return torch.logsumexp(total + log_prior, dim=1) + math.log(step)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bernoulli_matrix_matches_the_objective() -> None:
    logits = torch.randn(5, 1, 28, 28, generator=seeded(0))
    targets = torch.rand(3, 1, 28, 28, generator=seeded(1))
    matrix = metrics.bernoulli_log_likelihood_matrix(logits, targets)
    for i in range(3):
        expected = bernoulli_log_likelihood(logits, targets[i].expand(5, 1, 28, 28))
        torch.testing.assert_close(matrix[i], expected, rtol=1e-5, atol=1e-3)


def test_subset_elbo_scores_every_modality_from_one_encoder() -> None:
    # Decoders that ignore z make L_S exact: Σ_m log p(x_m) − KL(q(z|S) ‖ p(z)).
    bases = {m: torch.randn(PIXELS, generator=seeded(i)) for i, m in enumerate("ab")}
    weights = {m: torch.zeros(2, PIXELS) for m in "ab"}
    model = LinearDecoderVAE(bases, weights, prior_encoder(2, mean=0.7, logvar=-1.0))
    images = random_images(6, seed=5)
    logits = model.decode_logits(torch.zeros(6, 2))
    exact = sum(bernoulli_log_likelihood(logits[m], images[m]) for m in "ab")
    exact = exact - kl_standard_normal(torch.full((6, 2), 0.7), torch.full((6, 2), -1.0))
    for subset in model.encodable_subsets():
        value = metrics.subset_elbo(model, images, subset, seeded(0), num_samples=3)
        torch.testing.assert_close(value, exact, rtol=1e-5, atol=1e-3)


def test_iw_bound_with_one_sample_is_the_monte_carlo_elbo() -> None:
    model = dependent_model(prior_encoder(1, mean=0.3, logvar=-0.5))
    images = random_images(7, seed=1)
    iw = metrics.importance_weighted_bound(model, images, k=1, generator=seeded(11))
    elbo = metrics.subset_elbo(model, images, ("a", "b"), seeded(11), analytic_kl=False)
    torch.testing.assert_close(iw, elbo)


def test_iw_bound_tightens_with_k_towards_the_true_log_likelihood() -> None:
    # A poor proposal (shifted, too narrow) leaves room for the bound to tighten; each K is
    # averaged over four seeds so Monte-Carlo noise does not decide the order.
    model = dependent_model(prior_encoder(1, mean=0.8, logvar=-1.0))
    images = random_images(6, seed=2)
    truth = quadrature_log_marginal(model, images, ("a", "b")).float()
    elbo = metrics.subset_elbo(model, images, ("a", "b"), seeded(0), num_samples=300).mean()
    bounds = {
        k: np.mean(
            [
                float(metrics.importance_weighted_bound(model, images, k, seeded(s)).mean())
                for s in range(4)
            ]
        )
        for k in (1, 10, 100, 1000)
    }
    assert abs(bounds[1] - float(elbo)) < 0.75  # K = 1: an unbiased estimate of the ELBO (±3σ)
    assert float(elbo) + 0.5 < bounds[10] < bounds[100]
    assert bounds[10] < bounds[1000] <= float(truth.mean()) + 0.02
    assert bounds[1000] > float(truth.mean()) - 0.1


def test_iw_bound_chunks_over_samples_when_k_exceeds_the_budget() -> None:
    model = dependent_model()
    images = random_images(5, seed=4)
    truth = quadrature_log_marginal(model, images, ("a", "b")).float()
    chunked = metrics.importance_weighted_bound(model, images, 3000, seeded(0), codes_per_chunk=700)
    torch.testing.assert_close(chunked, truth, atol=0.05, rtol=0)


@pytest.mark.parametrize("k", [0, -5])
def test_iw_bound_rejects_nonpositive_k(k) -> None:
    with pytest.raises(ValueError, match=f"K .*got {k}"):
        metrics.importance_weighted_bound(dependent_model(), random_images(2, 0), k, seeded(0))


def test_conditional_is_exact_when_the_decoders_ignore_z() -> None:
    # Then a and b are independent: log p(a|b) = log p(a), and every estimate is exact.
    bases = {m: torch.randn(PIXELS, generator=seeded(i)) for i, m in enumerate("ab")}
    model = LinearDecoderVAE(bases, {m: torch.zeros(1, PIXELS) for m in "ab"}, prior_encoder(1))
    images = random_images(4, seed=8)
    log_p_a = bernoulli_log_likelihood(model.decode_logits(torch.zeros(4, 1))["a"], images["a"])
    value = metrics.conditional_log_likelihood(model, images, ("a",), ("b",), 5, 7, seeded(0))
    torch.testing.assert_close(value, log_p_a, rtol=1e-5, atol=1e-3)


def test_conditional_matches_quadrature() -> None:
    model = dependent_model()
    images = random_images(4, seed=6)
    joint = quadrature_log_marginal(model, images, ("a", "b"))
    given = quadrature_log_marginal(model, images, ("b",))
    value = metrics.conditional_log_likelihood(
        model, images, ("a",), ("b",), k=2000, num_prior_samples=20_000, generator=seeded(1)
    )
    torch.testing.assert_close(value.double(), joint - given, atol=0.08, rtol=0)
    prior = metrics.prior_log_likelihood(model, images, ("b",), 20_000, seeded(2))
    torch.testing.assert_close(prior.double(), given, atol=0.08, rtol=0)


# ----- coherence ------------------------------------------------------------------------------
STYLES = {"a": "blocks", "b": "stripes"}


def class_patterns(style: str) -> Tensor:
    """(10, 784) booleans: the pixels lit for each class in conftest's fake images."""
    labels = np.arange(10)
    images = fake_images(labels, style, np.random.default_rng(0))
    return torch.from_numpy(images.reshape(10, PIXELS) >= 200)


def pattern_reader(style: str):
    """A perfect 'classifier': the class whose pattern is brightest on average."""
    patterns = class_patterns(style).float()
    patterns = patterns / patterns.sum(1, keepdim=True)

    def classify(images: Tensor) -> Tensor:
        return images.reshape(len(images), PIXELS) @ patterns.T  # (B, 10)

    return classify


class LabelVAE:
    """Encodes the class read from the images into z₀; decodes class round(z_i) as a pattern.

    ``decode_dims`` says which latent dimension each modality's decoder reads.
    """

    def __init__(self, decode_dims: dict[str, int]) -> None:
        self.modalities = ("a", "b")
        self.config = FakeConfig(self.modalities, latent_dim=2)
        self.decode_dims = decode_dims
        self.readers = {m: pattern_reader(STYLES[m]) for m in self.modalities}
        self.patterns = {m: class_patterns(STYLES[m]) for m in self.modalities}

    def encodable_subsets(self):
        return [("a", "b"), ("a",), ("b",)]

    def encode(self, images, subset):
        label = self.readers[subset[0]](images[subset[0]]).argmax(1).float()
        mu = torch.stack([label, torch.zeros_like(label)], dim=1)
        return mu, torch.full_like(mu, -20.0)

    def decode_logits(self, z):
        result = {}
        for m, dim in self.decode_dims.items():
            label = z[:, dim].round().clamp(0, 9).long()
            result[m] = (self.patterns[m][label].float() * 40.0 - 20.0).view(-1, 1, 28, 28)
        return result


def labelled_images(size: int) -> tuple[dict[str, Tensor], Tensor]:
    labels = np.arange(size) % 10
    rng = np.random.default_rng(1)
    images = {
        m: torch.from_numpy(fake_images(labels, STYLES[m], rng) / 255.0).float().unsqueeze(1)
        for m in STYLES
    }
    return images, torch.from_numpy(labels)


def test_cross_coherence_is_one_for_a_perfect_decoder_and_classifier() -> None:
    model = LabelVAE({"a": 0, "b": 0})
    images, labels = labelled_images(50)
    readers = {m: pattern_reader(STYLES[m]) for m in STYLES}
    assert metrics.accuracy(metrics.predict(readers["b"], images["b"]), labels) == 1.0
    for source, target in (("a", "b"), ("b", "a")):
        coherence = metrics.cross_coherence(
            model, images, labels, (source,), target, readers[target], batch_size=16
        )
        assert coherence == 1.0


def test_joint_coherence_counts_agreeing_classifiers() -> None:
    readers = {m: pattern_reader(STYLES[m]) for m in STYLES}
    shared = metrics.joint_coherence(LabelVAE({"a": 0, "b": 0}), readers, 3000, seeded(0), 512)
    assert shared == 1.0
    # Independent dimensions: agreement is Σ_c P(class c)², classes = round(z) clamped to 0..9.
    independent = metrics.joint_coherence(LabelVAE({"a": 0, "b": 1}), readers, 20_000, seeded(1))
    cdf = torch.distributions.Normal(0.0, 1.0).cdf
    edges = torch.tensor([-math.inf, *(c + 0.5 for c in range(9)), math.inf])
    probabilities = cdf(edges[1:]) - cdf(edges[:-1])
    assert independent == pytest.approx(float(probabilities.pow(2).sum()), abs=0.015)


def test_balanced_accuracy_weights_every_class_equally() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    predicted = torch.tensor([0, 0, 0, 0, 0, 0])
    assert metrics.accuracy(predicted, labels) == pytest.approx(4 / 6)
    assert metrics.balanced_accuracy(predicted, labels) == pytest.approx(0.5)


# ----- posterior agreement and latent recovery ------------------------------------------------
def test_jsd_is_zero_for_equal_and_log_two_for_disjoint_gaussians() -> None:
    mu = torch.zeros(4, 2)
    logvar = torch.zeros(4, 2)
    same = metrics.gaussian_jsd(mu, logvar, mu, logvar, seeded(0), 200)
    torch.testing.assert_close(same, torch.zeros(4))
    far = metrics.gaussian_jsd(mu, logvar - 6, mu + 50, logvar - 6, seeded(0), 200)
    torch.testing.assert_close(far, torch.full((4,), math.log(2.0)), atol=1e-4, rtol=0)


def test_posterior_divergences_cover_every_pair_of_encoders() -> None:
    def encode(images, subset):
        size = len(next(iter(images.values())))
        shift = {("a", "b"): 0.0, ("a",): 1.0, ("b",): 0.0}[subset]
        return torch.full((size, 1), shift), torch.zeros(size, 1)

    model = dependent_model(encode)
    result = metrics.posterior_divergences(model, random_images(3, 0), seeded(0), 500)
    assert set(result) == {"a+b||a", "a+b||b", "a||b"}
    assert result["a+b||a"]["kl"] == pytest.approx(0.5)  # KL(N(0,1) ‖ N(1,1)) = ½
    assert result["a+b||b"] == {"kl": 0.0, "jsd": 0.0}
    assert 0.0 < result["a||b"]["jsd"] < math.log(2.0)


def test_naive_bayes_separates_separable_gaussians_and_guesses_on_identical_ones() -> None:
    generator = seeded(0)
    labels = torch.arange(600) % 3
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    features = centres[labels] + torch.randn(600, 2, generator=generator)
    accuracy = metrics.gaussian_naive_bayes_accuracy(
        features[:400], labels[:400], features[400:], labels[400:]
    )
    assert accuracy == 1.0
    noise = torch.randn(3000, 2, generator=generator)
    labels = torch.arange(3000) % 3
    chance = metrics.gaussian_naive_bayes_accuracy(
        noise[:2000], labels[:2000], noise[2000:], labels[2000:]
    )
    assert chance == pytest.approx(1 / 3, abs=0.06)


# ----- Fréchet distance -----------------------------------------------------------------------
def test_frechet_distance_is_zero_for_identical_feature_sets() -> None:
    features = torch.randn(200, 5, generator=seeded(0))
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_frechet_distance_matches_the_closed_form_for_commuting_covariances() -> None:
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    var_a, var_b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 1.0, 0.5, 0.1])
    mean_a, mean_b = rng.normal(size=4), rng.normal(size=4)
    cov_a = rotation @ np.diag(var_a) @ rotation.T
    cov_b = rotation @ np.diag(var_b) @ rotation.T
    # Same eigenvectors: ‖Δμ‖² + Σ_i (√a_i − √b_i)².
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    value = metrics.gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b)
    assert value == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_samples_approaches_the_gaussian_value() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0.0, 1.0, size=(20_000, 3))
    b = rng.normal(1.0, 2.0, size=(20_000, 3))
    assert metrics.frechet_distance(a, b) == pytest.approx(3 * 1.0 + 3 * 1.0, rel=0.03)
    with pytest.raises(ValueError, match="same F"):
        metrics.frechet_distance(a, b[:, :2])


def test_metrics_name_the_encoders_a_model_lacks() -> None:
    model = dependent_model()
    model.subsets = [("a", "b")]
    with pytest.raises(ValueError, match="cannot encode from a; it encodes from: a\\+b"):
        metrics.subset_elbo(model, random_images(2, 0), ("a",), seeded(0))


# ----- the fast sampling bounds (issue 7) ----------------------------------------------------
@pytest.fixture(scope="module")
def previous_bounds():
    """The implementation before issue 7, kept in ``benchmarks/bench_evaluate.py``."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        return importlib.import_module("bench_evaluate")
    finally:
        sys.path.remove(str(benchmarks))


def per_point_iw_bound(model, images, k: int, generator: torch.Generator) -> Tensor:
    """The textbook loop: per point, K draws, targets expanded, BCE on every pixel."""
    results = []
    for i in range(len(images["a"])):
        mu, logvar = model.encode({m: images[m][i : i + 1] for m in "ab"}, ("a", "b"))
        z = mu + (0.5 * logvar).exp() * torch.randn(k, mu.shape[1], generator=generator)
        logits = model.decode_logits(z)
        log_w = sum(
            bernoulli_log_likelihood(logits[m], images[m][i].expand(k, 1, 28, 28)) for m in "ab"
        )
        log_w = log_w + log_standard_normal(z) - log_normal(z, mu, logvar)
        results.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(results)


def test_grouped_log_likelihood_matches_the_objective() -> None:
    logits = torch.randn(3, 5, 1, 28, 28, generator=seeded(0)) * 3
    targets = torch.rand(3, 1, 28, 28, generator=seeded(1))
    grouped = metrics.grouped_log_likelihood(logits, targets)
    for b in range(3):
        expected = bernoulli_log_likelihood(logits[b], targets[b].expand(5, 1, 28, 28))
        torch.testing.assert_close(grouped[b], expected, rtol=1e-6, atol=1e-3)


def test_iw_bound_equals_the_per_point_loop_on_the_same_draws() -> None:
    model = dependent_model(shifted_encoder())
    images = random_images(5, seed=3)
    fast = metrics.importance_weighted_bound(model, images, 300, seeded(4), codes_per_chunk=700)
    slow = per_point_iw_bound(model, images, 300, seeded(4))
    torch.testing.assert_close(fast, slow, rtol=0, atol=2e-3)


@pytest.mark.parametrize("codes_per_chunk", [1, 7, 64, 5000])
def test_iw_bound_does_not_depend_on_the_chunking(codes_per_chunk) -> None:
    model = dependent_model(shifted_encoder())
    images = random_images(9, seed=5)
    reference = metrics.importance_weighted_bound(model, images, 50, seeded(6))
    value = metrics.importance_weighted_bound(
        model, images, 50, seeded(6), codes_per_chunk=codes_per_chunk
    )
    torch.testing.assert_close(value, reference, rtol=0, atol=1e-3)
    # The first points' draws do not depend on how many points follow.
    head = metrics.importance_weighted_bound(model, _head(images, 4), 50, seeded(6))
    torch.testing.assert_close(head, reference[:4], rtol=0, atol=1e-3)


def test_iw_bound_agrees_with_the_previous_implementation(previous_bounds) -> None:
    model = dependent_model(shifted_encoder())
    images = random_images(8, seed=7)
    truth = quadrature_log_marginal(model, images, ("a", "b")).float()
    new = metrics.importance_weighted_bound(model, images, 1000, seeded(8))
    old = previous_bounds.previous_importance_weighted_bound(model, images, 1000, seeded(8))
    # Different draws, the same estimator: the per-point difference is Monte-Carlo noise only.
    assert abs(float((new - old).mean())) < 0.03
    torch.testing.assert_close(new, truth, rtol=0, atol=0.1)
    torch.testing.assert_close(old, truth, rtol=0, atol=0.1)


def test_prior_log_likelihood_is_the_documented_estimate_of_any_chunking() -> None:
    model = dependent_model()
    images = random_images(6, seed=9)
    value = metrics.prior_log_likelihood(model, images, ("a", "b"), 2500, seeded(10))
    # Blocks of PRIOR_CHUNK draws (as before issue 7), each likelihood in the textbook form.
    generator = seeded(10)
    z = torch.cat([torch.randn(n, 1, generator=generator) for n in (1000, 1000, 500)])
    logits = model.decode_logits(z)
    for i in range(6):
        log_p = sum(
            bernoulli_log_likelihood(logits[m], images[m][i].expand(2500, 1, 28, 28)) for m in "ab"
        )
        expected = torch.logsumexp(log_p.double(), 0) - math.log(2500)
        assert float(value[i]) == pytest.approx(float(expected), abs=2e-3)
    head = metrics.prior_log_likelihood(model, _head(images, 2), ("a", "b"), 2500, seeded(10))
    torch.testing.assert_close(head, value[:2], rtol=0, atol=1e-4)
    codes = metrics.prior_codes(seeded(10), 2500, 1, torch.device("cpu"))
    one_at_a_time = metrics.mixture_log_likelihood(
        model, images, ("a", "b"), codes, points_per_chunk=1
    )
    torch.testing.assert_close(one_at_a_time, value, rtol=0, atol=1e-4)


def test_quadrature_matches_the_fine_one_dimensional_integral() -> None:
    model = dependent_model()
    images = random_images(4, seed=11)
    for modalities in (("a", "b"), ("b",)):
        truth = quadrature_log_marginal(model, images, modalities)
        value = metrics.quadrature_log_likelihood(model, images, modalities)
        torch.testing.assert_close(value.double(), truth, rtol=0, atol=2e-3)


def test_quadrature_is_exact_in_two_dimensions_when_the_decoders_ignore_z() -> None:
    bases = {m: torch.randn(PIXELS, generator=seeded(i)) for i, m in enumerate("ab")}
    model = LinearDecoderVAE(bases, {m: torch.zeros(2, PIXELS) for m in "ab"}, prior_encoder(2))
    images = random_images(3, seed=12)
    logits = model.decode_logits(torch.zeros(3, 2))
    exact = sum(bernoulli_log_likelihood(logits[m], images[m]) for m in "ab")
    value = metrics.quadrature_log_likelihood(model, images, points=101)
    torch.testing.assert_close(value, exact, rtol=0, atol=2e-3)


def test_quadrature_is_at_least_the_iw_bound_in_two_dimensions() -> None:
    weights = {m: torch.zeros(2, PIXELS) for m in "ab"}
    weights["a"][0, :30], weights["a"][1, 30:60] = 0.8, -0.8
    weights["b"][0, 100:130], weights["b"][1, 200:230] = -0.7, 0.9
    bases = {m: 0.5 * torch.randn(PIXELS, generator=seeded(i)) for i, m in enumerate("ab")}
    model = LinearDecoderVAE(bases, weights, prior_encoder(2, mean=0.2, logvar=-1.0))
    images = random_images(4, seed=13)
    quadrature = metrics.quadrature_log_likelihood(model, images)
    finer = metrics.quadrature_log_likelihood(model, images, points=401)
    torch.testing.assert_close(quadrature, finer, rtol=0, atol=1e-3)
    bound = metrics.importance_weighted_bound(model, images, 3000, seeded(14))
    gap = float((quadrature - bound).mean())
    assert -0.02 < gap < 0.15  # a lower bound in expectation, and a tight one at K = 3000


def test_quadrature_needs_a_small_latent() -> None:
    with pytest.raises(ValueError, match="d <= 2.*got d = 3"):
        metrics.quadrature_grid(3)


def test_jsd_matches_numerical_integration_and_ignores_the_chunking() -> None:
    # JSD(N(0, 1), N(1.5, 0.5²)) by a fine 1-d quadrature: the known answer.
    grid = torch.linspace(-12, 12, 200_001, dtype=torch.float64)
    p = torch.distributions.Normal(0.0, 1.0).log_prob(grid).exp()
    q = torch.distributions.Normal(1.5, 0.5).log_prob(grid).exp()
    m = (p + q) / 2
    step = float(grid[1] - grid[0])
    exact = 0.5 * float((p * (p / m).log()).sum() * step + (q * (q / m).log()).sum() * step)
    mu_p, logvar_p = torch.zeros(6, 1), torch.zeros(6, 1)
    mu_q, logvar_q = torch.full((6, 1), 1.5), torch.full((6, 1), math.log(0.25))
    value = metrics.gaussian_jsd(mu_p, logvar_p, mu_q, logvar_q, seeded(0), 20_000)
    assert float(value.mean()) == pytest.approx(exact, abs=0.005)
    chunked = metrics.gaussian_jsd(
        mu_p, logvar_p, mu_q, logvar_q, seeded(0), 20_000, points_per_chunk=4
    )
    torch.testing.assert_close(chunked, value)


def test_subset_elbo_and_joint_coherence_ignore_the_batch_size() -> None:
    model = dependent_model(shifted_encoder())
    images = random_images(7, seed=15)
    whole = metrics.subset_elbo(model, images, ("a",), seeded(1), num_samples=4)
    pieces = metrics.subset_elbo(model, images, ("a",), seeded(1), num_samples=4, batch_size=3)
    torch.testing.assert_close(pieces, whole)
    readers = {m: pattern_reader(STYLES[m]) for m in STYLES}
    labels = LabelVAE({"a": 0, "b": 1})
    small = metrics.joint_coherence(labels, readers, 2500, seeded(2), batch_size=100)
    large = metrics.joint_coherence(labels, readers, 2500, seeded(2), batch_size=5000)
    assert small == large


def test_metrics_take_an_explicit_generator() -> None:
    model, images = dependent_model(), random_images(2, 0)
    calls = [
        lambda: metrics.importance_weighted_bound(model, images, 5, None),
        lambda: metrics.subset_elbo(model, images, ("a",), None),
        lambda: metrics.prior_log_likelihood(model, images, ("a",), 10, None),
        lambda: metrics.gaussian_jsd(*[torch.zeros(2, 1)] * 4, None),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="explicit torch.Generator"):
            call()


def test_draws_happen_where_the_generator_lives() -> None:
    # A CPU generator with a model elsewhere: draw on the CPU, move the draws ("meta" stands
    # in for a GPU here).
    draws = metrics.draw_normal(seeded(0), (3, 2), "meta")
    assert draws.device.type == "meta" and draws.shape == (3, 2)
    torch.testing.assert_close(
        metrics.draw_normal(seeded(0), (3, 2), "cpu"), torch.randn(3, 2, generator=seeded(0))
    )


# ----- evaluate's plumbing of the metrics -----------------------------------------------------
def test_metric_generators_are_named_streams_on_the_device() -> None:
    draw = lambda g: torch.rand(4, generator=g)  # noqa: E731
    iw = evaluate.metric_generator(3, "iw", torch.device("cpu"))
    torch.testing.assert_close(draw(iw), draw(stream(3, "metric", "iw")))
    others = [("iw", 4), ("jsd", 3)]
    first = draw(evaluate.metric_generator(3, "iw", torch.device("cpu")))
    for name, seed in others:
        assert not torch.equal(draw(evaluate.metric_generator(seed, name, "cpu")), first)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_split_tensors_converts_to_unit_floats(dtype) -> None:
    raw = np.random.default_rng(0).integers(0, 256, size=(5, 1, 28, 28)).astype(np.uint8)
    images = raw if dtype == np.uint8 else (raw / 255.0).astype(np.float32)
    data = SplitData({"a": images, "b": images[::-1].copy()}, np.arange(5), None)
    batch = evaluate.split_tensors(data, ("a", "b"), torch.device("cpu"))
    assert batch["a"].shape == (5, 1, 28, 28) and batch["a"].dtype == torch.float32
    torch.testing.assert_close(batch["a"], torch.from_numpy(raw / 255.0).float())
    torch.testing.assert_close(batch["b"], torch.from_numpy(raw[::-1] / 255.0).float())
    assert batch["labels"].tolist() == list(range(5))


def shifted_encoder():
    """A proposal that depends on the images (so each point has its own), shifted off the truth."""

    def encode(images, subset):
        level = torch.stack([images[m].flatten(1)[:, :24].mean(1) for m in subset]).mean(0)
        mu = (level - 0.5).unsqueeze(1) * 2 + 0.3
        return mu, torch.full_like(mu, -0.7)

    return encode


def _head(images, count: int) -> dict[str, Tensor]:
    return {m: x[:count] for m, x in images.items()}


def test_softplus_sum_is_softplus_summed() -> None:
    generator = stream(0, "softplus")
    logits = torch.randn(3, 5, 784, generator=generator) * 8
    logits[0, 0, :4] = torch.tensor([-100.0, 100.0, 0.0, -20.0])  # the tails and the kink
    exact = torch.nn.functional.softplus(logits.double()).sum(2)
    got = metrics.softplus_sum(logits, 2)
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=2e-4)
    assert metrics.softplus_sum(torch.tensor([[-1.0, 2.0]]), 1).item() == pytest.approx(
        math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(2.0)), abs=1e-6
    )
