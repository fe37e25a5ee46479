"""Seeded initialisation: PyTorch's and Keras' schemes from a given generator, no global draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mmgen import rng
from mmgen.models.cvae import CVAEConfig, build_cvae
from mmgen.models.registry import MODELS, build_model
from mmgen.nn import build, glorot_uniform_init, initialize, pytorch_default_init

LAYERS = [
    lambda: nn.Linear(7, 5),
    lambda: nn.Conv2d(3, 4, 3),
    lambda: nn.ConvTranspose2d(4, 2, 3, stride=2),
]


@pytest.mark.parametrize("make", LAYERS)
def test_the_default_scheme_is_pytorchs_own(make) -> None:
    """The same seed in the global generator (PyTorch's reset_parameters) and in ours."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        reference = make()
    layer = make()
    pytorch_default_init(layer, torch.Generator().manual_seed(11))
    assert torch.equal(layer.weight, reference.weight)
    assert torch.equal(layer.bias, reference.bias)


@pytest.mark.parametrize("make", LAYERS)
def test_glorot_uniform_bounds_and_zero_bias(make) -> None:
    layer = make()
    glorot_uniform_init(layer, rng.stream(0, "init"))
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert float(layer.weight.detach().abs().max()) <= bound
    assert float(layer.weight.detach().abs().max()) > 0.7 * bound  # spread over the range
    assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_build_draws_nothing_from_the_global_generator() -> None:
    before = torch.random.get_rng_state()
    first = build_model("m2vae", ("a", "b", "c"), seed=4)
    build_cvae(CVAEConfig(batch_norm_mu=True), rng.stream(4, "init"))
    assert torch.equal(torch.random.get_rng_state(), before)
    again = build_model("m2vae", ("a", "b", "c"), seed=4)
    for key, value in first.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_weight_is_drawn(name: str) -> None:
    """Every weight tensor of a built model is spread out: no zeros or leftover memory."""
    model = build_model(name, ("a", "b"), seed=0)
    for key, value in model.named_parameters():
        if key.endswith("weight"):
            bound = 1.0 / math.sqrt(value.shape[1])  # kaiming_uniform(a=√5) on a Linear
            assert float(value.detach().abs().max()) <= bound, key
            assert float(value.detach().std()) > 0.3 * bound, key


def test_initialize_refuses_a_layer_it_does_not_know() -> None:
    with pytest.raises(TypeError, match="Embedding"):
        initialize(nn.Sequential(nn.Linear(2, 2), nn.Embedding(3, 2)), rng.stream(0, "init"))


def test_build_on_meta_then_cpu() -> None:
    layer = build(lambda: nn.Linear(3, 2), rng.stream(0, "init"))
    assert layer.weight.device.type == "cpu"
    reference = nn.Linear(3, 2)
    pytorch_default_init(reference, rng.stream(0, "init"))
    assert torch.equal(layer.weight, reference.weight)
