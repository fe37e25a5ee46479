"""The metrics of ``mmgen.metrics`` on hand-made models with known answers.

The fake models implement the ``MultimodalVAE`` interface (``modalities``, ``config``,
``encodable_subsets``, ``encode``, ``decode_logits``) with closed-form pieces, so every bound can
be checked against exact values or a quadrature over a one-dimensional latent.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import Tensor

from conftest import fake_images
from mmgen import metrics
from mmgen.objectives import bernoulli_log_likelihood, kl_standard_normal

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
    # A poor proposal (shifted, too narrow) leaves room for the bound to tighten.
    model = dependent_model(prior_encoder(1, mean=0.8, logvar=-1.0))
    images = random_images(6, seed=2)
    truth = quadrature_log_marginal(model, images, ("a", "b")).float()
    elbo = metrics.subset_elbo(model, images, ("a", "b"), seeded(0), num_samples=300).mean()
    bounds = {
        k: float(metrics.importance_weighted_bound(model, images, k, seeded(k)).mean())
        for k in (1, 10, 100, 1000)
    }
    assert abs(bounds[1] - float(elbo)) < 0.3  # K = 1 is an unbiased estimate of the ELBO
    assert float(elbo) + 0.5 < bounds[10] < bounds[100] < bounds[1000]
    assert bounds[1000] <= float(truth.mean()) + 0.02
    assert bounds[1000] > float(truth.mean()) - 0.1


def test_iw_bound_chunks_over_samples_when_k_exceeds_the_budget() -> None:
    model = dependent_model()
    images = random_images(5, seed=4)
    truth = quadrature_log_marginal(model, images, ("a", "b")).float()
    chunked = metrics.importance_weighted_bound(model, images, 3000, seeded(0), max_elements=700)
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
