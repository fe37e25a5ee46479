"""The β-CVAE of Table 2: shapes, the loss against a hand computation, training changes weights."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch

from mmgen import rng
from mmgen.config import to_dict
from mmgen.models.cvae import CVAE, CVAEConfig, build_cvae
from mmgen.objectives import bernoulli_log_likelihood
from mmgen.train import TrainConfig, fit


@pytest.fixture
def model() -> CVAE:
    return build_cvae(CVAEConfig(), rng.stream(0, "init"))


def test_encoder_and_decoder_shapes(model: CVAE) -> None:
    x = torch.rand(5, 1, 28, 28, generator=rng.stream(0, "x"))
    labels = torch.arange(5)
    mu, logvar = model.encode(x, labels)
    assert mu.shape == logvar.shape == (5, 2)
    images = model.decode(mu, labels).detach()
    assert images.shape == (5, 1, 28, 28)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0


def test_layer_sizes_follow_table_2(model: CVAE) -> None:
    # The flattened feature map is 64·14·14 and the label is concatenated to it.
    assert model.encoder.dense[0].in_features == 64 * 14 * 14 + 10
    assert model.decoder.dense[0].in_features == 2 + 10
    assert model.decoder.dense[2].out_features == 64 * 14 * 14


def test_loss_matches_hand_computation(model: CVAE) -> None:
    x = torch.rand(4, 1, 28, 28, generator=rng.stream(0, "x"))
    labels = torch.tensor([0, 3, 5, 9])
    generator = torch.Generator().manual_seed(1)
    terms = model.loss(x, labels, generator)

    mu, logvar = model.encode(x, labels)
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(1))
    z = mu + torch.exp(0.5 * logvar) * eps
    p = torch.sigmoid(model.decode_logits(z, labels)).clamp(1e-7, 1 - 1e-7)
    bce = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(dim=(1, 2, 3))
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, torch.exp(0.5 * logvar)),
        torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu)),
    ).sum(1)
    torch.testing.assert_close(terms["reconstruction"], bce.mean(), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(terms["kl"], kl.mean(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(terms["loss"], (bce + 4.0 * kl).mean(), rtol=1e-4, atol=1e-3)


def test_beta_weights_the_kl_term() -> None:
    x, labels = torch.rand(3, 1, 28, 28, generator=rng.stream(0, "x")), torch.tensor([1, 2, 3])
    loss = {}
    for beta in (0.0, 10.0):
        model = build_cvae(CVAEConfig(beta=beta), rng.stream(0, "init"))
        loss[beta] = model.loss(x, labels, rng.stream(0, "noise"))
    torch.testing.assert_close(loss[0.0]["loss"], loss[0.0]["reconstruction"])
    torch.testing.assert_close(
        loss[10.0]["loss"], loss[10.0]["reconstruction"] + 10.0 * loss[10.0]["kl"]
    )


def test_a_training_step_changes_every_weight(model: CVAE) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.rand(16, 1, 28, 28, generator=rng.stream(0, "x"))
    data = {"images": images, "labels": torch.arange(16) % 10}
    fit(model, data, None, TrainConfig(epochs=1, batch_size=16))
    for name, value in model.state_dict().items():
        assert not torch.equal(before[name], value), f"{name} did not change"


def test_batch_norm_mu_variant() -> None:
    model = build_cvae(CVAEConfig(batch_norm_mu=True), rng.stream(0, "init"))
    norm = model.encoder.head.mu_norm
    assert isinstance(norm, torch.nn.BatchNorm1d)
    # Built on the meta device, then initialised: the statistics start fresh, not as garbage.
    assert torch.equal(norm.running_mean, torch.zeros(2))
    assert torch.equal(norm.running_var, torch.ones(2))
    assert torch.equal(norm.weight, torch.ones(2)) and int(norm.num_batches_tracked) == 0
    mu, _ = model.encode(torch.rand(8, 1, 28, 28, generator=rng.stream(0, "x")), torch.arange(8))
    assert mu.shape == (8, 2)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("latent_dim", 0, "latent_dim must be > 0"),
        ("num_classes", -1, "num_classes must be > 0"),
        ("beta", -1.0, "beta must be >= 0"),
        ("image_shape", (1, 27, 28), "must be even; the images are 1×27×28"),
        ("image_shape", (1, 28, 9), "must be even"),
        ("image_shape", (0, 28, 28), "three positive integers"),
        ("image_shape", (28, 28), "three positive integers"),
    ],
)
def test_config_rejects_bad_values(field: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CVAEConfig(**{field: value})


@pytest.mark.parametrize("seed", range(5))
def test_the_single_filter_first_layer_starts_alive(seed: int) -> None:
    """A dead first filter blinds the encoder and collapses the posterior (KL → 0)."""
    model = build_cvae(CVAEConfig(), rng.stream(seed, "init"))
    first = model.encoder.features[:3]  # pad, 1→1 conv, ReLU
    active = (first(torch.rand(8, 1, 28, 28, generator=rng.stream(seed, "x"))) > 0).float().mean()
    assert active > 0.99
    assert float(model.encoder.features[1].weight.detach().min()) >= 0.0
    assert all(
        float(m.bias.detach().abs().max()) == 0.0
        for m in model.modules()
        if hasattr(m, "bias") and isinstance(m.bias, torch.Tensor)
    )


def test_rmsprop_uses_keras_defaults() -> None:
    from mmgen.train import make_optimizer

    optimizer = make_optimizer(torch.nn.Linear(2, 2).parameters(), TrainConfig())
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert optimizer.defaults["alpha"] == 0.9 and optimizer.defaults["eps"] == 1e-7


# SHA-256 of the state dict (names, shapes, float32 bytes) of build_cvae(CVAEConfig(), seed 7),
# computed with /work/main's code before image shapes were generalised (issue #10).
TABLE_2_WEIGHTS_SHA256 = "9c31a458b993b65bcc809b4bf6fab8e3d8edbd85d7e3d8e52d8caeb474d9c8c5"


def state_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(value.shape)).encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()


def test_1x28x28_is_table_2_with_the_weights_of_before() -> None:
    """Same parameters, same order, same stream: a seeded build equals main's before #10."""
    model = build_cvae(CVAEConfig(image_shape=(1, 28, 28)), rng.stream(7, "init"))
    assert state_sha256(model) == TABLE_2_WEIGHTS_SHA256


@pytest.mark.parametrize(
    ("shape", "grid"), [((3, 32, 32), (16, 16)), ((1, 8, 8), (4, 4)), ((3, 8, 12), (4, 6))]
)
def test_other_shapes_train_one_step_and_decode_their_shape(shape, grid) -> None:
    channels = shape[0]
    model = build_cvae(CVAEConfig(image_shape=shape, num_classes=4), rng.stream(1, "init"))
    assert model.config.grid == grid
    assert model.encoder.features[1].in_channels == channels  # the source's channels, first conv
    assert model.encoder.dense[0].in_features == 64 * grid[0] * grid[1] + 4
    assert model.decoder.deconv[-1].out_channels == channels
    images = torch.rand(8, *shape, generator=rng.stream(0, "x"))
    data = {"images": images, "labels": torch.arange(8) % 4}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, data, None, TrainConfig(epochs=1, batch_size=8))
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        decoded = model.decode(torch.zeros(3, 2), torch.tensor([0, 1, 3]))
        mu, _ = model.encode(images[:3], torch.tensor([0, 1, 3]))
    assert decoded.shape == (3, *shape) and mu.shape == (3, 2)
    assert 0.0 <= float(decoded.min()) and float(decoded.max()) <= 1.0
    # The loss sums the BCE over every channel and pixel: a constant image of p = ½ scores
    # C·H·W·log 2, whatever the layout.
    logits = torch.zeros(2, *shape)
    expected = torch.full((2,), -channels * shape[1] * shape[2] * math.log(2.0))
    torch.testing.assert_close(bernoulli_log_likelihood(logits, torch.rand(2, *shape)), expected)


def test_configs_saved_before_shapes_read_as_1x28x28() -> None:
    legacy = {"latent_dim": 3, "num_classes": 10, "beta": 4.0, "image_size": 28,
              "batch_norm_mu": False}  # fmt: skip
    config = CVAEConfig.from_dict(legacy)
    assert config.image_shape == (1, 28, 28) and config.latent_dim == 3
    assert CVAEConfig.from_dict(to_dict(CVAEConfig(image_shape=(3, 32, 32)))).image_shape == (
        3,
        32,
        32,
    )
