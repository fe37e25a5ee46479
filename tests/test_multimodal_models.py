"""Behaviour of every multi-modal VAE in the registry (tiny networks, CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmgen import rng
from mmgen.models.multimodal import MultimodalVAE, beta_from_normalized, subset_key
from mmgen.models.registry import MODELS, build_model, load_model, save_model
from mmgen.objectives import nonempty_subsets
from mmgen.train import TrainConfig, evaluate_loss, fit

TINY = {"encoder_widths": (16, 8), "fusion_width": 8, "decoder_widths": (8, 16)}
NAMES = sorted(MODELS)


def tiny(name: str, modalities: tuple[str, ...] = ("a", "b"), **overrides) -> MultimodalVAE:
    return build_model(name, modalities, seed=0, **{**TINY, **overrides})


def correlated_data(
    modalities: tuple[str, ...], size: int = 64, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Every modality a different fixed nonlinear image of one shared 2-d code."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(size, 2, generator=rng)
    data = {
        m: torch.sigmoid(3 * z @ torch.randn(2, 784, generator=rng)).view(size, 1, 28, 28)
        for m in modalities
    }
    return {**data, "labels": torch.arange(size) % 10, "z": z}


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(before[k], after[k]) for k in before)


def adam(**overrides) -> TrainConfig:
    return TrainConfig(**{"optimizer": "adam", **overrides})


def one_epoch(model: MultimodalVAE, data: dict[str, torch.Tensor]) -> None:
    """One epoch of every stage."""
    fit(model, data, None, adam(epochs=1, batch_size=len(data["z"]), lr=1e-2))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("modalities", [("a", "b"), ("a", "b", "c")])
def test_shapes_and_finite_loss(name: str, modalities: tuple[str, ...]) -> None:
    model = tiny(name, modalities)
    data = correlated_data(modalities, size=6)
    subsets = model.encodable_subsets()
    assert subsets[0] == modalities
    assert all((m,) in subsets for m in modalities) or name == "jmvae"
    for subset in subsets:
        mu, logvar = model.encode(data, subset)
        assert mu.shape == logvar.shape == (6, 2)
    logits = model.decode_logits(torch.zeros(6, 2))
    assert set(logits) == set(modalities)
    assert all(v.shape == (6, 1, 28, 28) for v in logits.values())
    for stage in model.stages:
        model.set_stage(stage)
        terms = model.loss_on(data, rng.stream(0, "test"))
        assert terms["loss"].shape == ()
        assert all(torch.isfinite(v) for v in terms.values())


def test_encoders_per_model() -> None:
    modalities = ("a", "b", "c")
    singles = [(m,) for m in modalities]
    assert tiny("jmvae", modalities).encodable_subsets() == [modalities]
    assert tiny("jmvae-zero", modalities).encodable_subsets() == nonempty_subsets(modalities)
    assert tiny("jmvae-kl", modalities).encodable_subsets() == [modalities, *singles]
    assert tiny("tvae", modalities).encodable_subsets() == [modalities, *singles]
    m2vae = tiny("m2vae", modalities)
    assert m2vae.encodable_subsets() == nonempty_subsets(modalities)
    assert len(m2vae.encoders) == 7


def test_encode_accepts_flat_images_and_any_order() -> None:
    model = tiny("m2vae")
    data = correlated_data(("a", "b"), size=3)
    flat = {m: data[m].flatten(1) for m in ("a", "b")}
    torch.testing.assert_close(model.encode(flat, ("b", "a")), model.encode(data, ("a", "b")))


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_subsets_raise(name: str) -> None:
    model = tiny(name)
    data = correlated_data(("a", "b"), size=2)
    for subset in [(), ("c",), ("a", "a")]:
        with pytest.raises(ValueError, match="invalid subset"):
            model.encode(data, subset)
    with pytest.raises(ValueError, match="needs images"):
        model.encode({"a": data["a"]}, model.encodable_subsets()[0])


def test_plain_jmvae_cannot_encode_a_single_modality() -> None:
    with pytest.raises(ValueError, match="cannot encode"):
        tiny("jmvae").encode(correlated_data(("a", "b"), size=2), ("a",))


def test_jmvae_zero_encodes_a_subset_by_zero_filling() -> None:
    model = tiny("jmvae-zero", ("a", "b", "c"))
    data = correlated_data(("a", "b", "c"), size=4)
    joint = model.encoders[subset_key(("a", "b", "c"))]
    filled = {"a": torch.zeros(4, 784), "b": data["b"].flatten(1), "c": torch.zeros(4, 784)}
    torch.testing.assert_close(model.encode(data, ("b",)), joint(filled))


@pytest.mark.parametrize("name", NAMES)
def test_training_step_changes_decoders_and_every_encoder(name: str) -> None:
    model = tiny(name)
    decoders = snapshot(model.decoders)
    encoders = {key: snapshot(encoder) for key, encoder in model.encoders.items()}
    one_epoch(model, correlated_data(model.modalities, size=8))
    assert changed(decoders, model.decoders)
    for key, encoder in model.encoders.items():  # the joint one, or every expert (MVAE, ...)
        assert changed(encoders[key], encoder), key


def test_tvae_stage_parameters_are_disjoint_and_cover_the_model() -> None:
    model = tiny("tvae")
    joint = {id(p) for p in model.stage_parameters("joint")}
    unimodal = {id(p) for p in model.stage_parameters("unimodal")}
    assert not joint & unimodal
    assert joint | unimodal == {id(p) for p in model.parameters()}
    assert unimodal == {id(p) for m in "ab" for p in model.encoders[m].parameters()}
    with pytest.raises(ValueError, match="stages"):
        model.set_stage("both")


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name: str, tmp_path: Path) -> None:
    model = tiny(name, ("a", "b", "c"), latent_dim=3, beta=2.5)
    save_model(tmp_path / name, model)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert json.loads((tmp_path / name / "model.json").read_text())["kind"] == name
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    model.eval()
    data = correlated_data(("a", "b", "c"), size=3)
    for subset in model.encodable_subsets():
        exact = {"rtol": 0.0, "atol": 0.0}
        torch.testing.assert_close(loaded.encode(data, subset), model.encode(data, subset), **exact)
    z = torch.randn(3, 3)
    for m, logits in model.decode_logits(z).items():
        assert torch.equal(loaded.decode_logits(z)[m], logits)


def test_load_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a multi-modal model folder"):
        load_model(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="damaged"):
        load_model(tmp_path)


def test_build_model_errors() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        build_model("vae", ("a", "b"), seed=0)
    with pytest.raises(ValueError, match="no setting"):
        build_model("jmvae", ("a", "b"), seed=0, alpha=0.1)  # plain JMVAE has no α
    with pytest.raises(ValueError, match="at least 2 modalities"):
        build_model("m2vae", ("a",), seed=0)
    with pytest.raises(ValueError, match="distinct"):
        build_model("m2vae", ("a", "a"), seed=0)
    with pytest.raises(ValueError, match="reserved"):
        build_model("tvae", ("a", "labels"), seed=0)
    with pytest.raises(ValueError, match="unknown decoder_activation"):
        build_model("tvae", ("a", "b"), decoder_activation="gelu", seed=0)


def test_defaults_follow_the_papers() -> None:
    assert build_model("jmvae-kl", ("a", "b"), seed=0).config.alpha == 0.1
    assert build_model("m2vae", ("a", "b"), seed=0).config.alpha == 1e-2
    config = build_model("jmvae", ("a", "b"), seed=0).config
    assert (config.latent_dim, config.beta, config.decoder_activation) == (2, 4.0, "tanh")
    assert beta_from_normalized(0.01, latent_dim=2) == pytest.approx(3.92)


def test_same_seed_same_weights() -> None:
    first, second = tiny("m2vae"), tiny("m2vae")
    other = build_model("m2vae", ("a", "b"), seed=1, **TINY)
    for key, value in first.named_parameters():
        assert torch.equal(second.get_parameter(key), value)
        assert not torch.equal(other.get_parameter(key), value)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_fit_lowers_the_loss(name: str) -> None:
    model = tiny(name)
    data = correlated_data(model.modalities, size=64)
    config = adam(epochs=4, batch_size=16, lr=1e-2, seed=0)

    def joint_loss() -> float:
        model.set_stage(model.stages[0])
        return evaluate_loss(model, data, 64, rng.stream(1, "test"))["loss"]

    before = joint_loss()
    seen: list[int] = []
    history = fit(model, data, data, config, on_epoch_end=lambda e, r: seen.append(e))
    assert [r["stage"] for r in history] == [s for s in model.stages for _ in range(4)]
    assert seen == [r["epoch"] for r in history] == list(range(1, 4 * len(model.stages) + 1))
    for stage in model.stages:
        losses = [r["train_loss"] for r in history if r["stage"] == stage]
        assert losses[-1] < losses[0]
    assert joint_loss() < before


def test_fit_needs_every_modality() -> None:
    model = tiny("jmvae")
    data = correlated_data(("a",), size=4)
    with pytest.raises(ValueError, match="lacks modality"):
        fit(model, data, None, adam(epochs=1))
