"""The multi-modal VAEs by name, and their model folders (save / load).

A model folder holds:

    config.json   {"model": registry name, "config": model config, "mmgen_version": ...}
    weights.pt    tensors and plain values only (``torch.load(weights_only=True)`` reads it):
                  {"model": name, "config": model config, "state_dict": ..., "mmgen_version": ...}

The config is stored in both, so the weights file alone rebuilds the model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmgen import __version__, rng
from mmgen.atomic import atomic_path
from mmgen.checkpoint import read_weights
from mmgen.config import from_dict, save_json, to_dict
from mmgen.errors import UsageError
from mmgen.models.jmvae import JMVAE, JMVAEKL, JMVAEZero
from mmgen.models.m2vae import M2VAE
from mmgen.models.multimodal import MultimodalConfig, MultimodalVAE
from mmgen.models.tvae import TVAE
from mmgen.nn import build

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"

MODELS: dict[str, tuple[type[MultimodalConfig], type[MultimodalVAE]]] = {
    cls.name: (cls.config_class, cls) for cls in (JMVAE, JMVAEZero, JMVAEKL, TVAE, M2VAE)
}


def model_entry(name: str) -> tuple[type[MultimodalConfig], type[MultimodalVAE]]:
    """``(config class, model class)`` of a registry name; ValueError listing the choices."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(
    name: str, modalities: Sequence[str], *, seed: int, **overrides: Any
) -> MultimodalVAE:
    """A fresh model of registry ``name`` for ``modalities``, on the CPU.

    Args:
        name: a key of ``MODELS``.
        modalities: modality names in the dataset's order (≥ 2).
        seed: every weight is drawn from the stream ``mmgen.rng.stream(seed, "init")``
            (PyTorch's default scheme; the global generator is never touched).
        **overrides: fields of the model's config (``latent_dim``, ``beta``, ``alpha``, ...).

    Example:
        >>> model = build_model("m2vae", ("mnist", "fashion"), alpha=1e-3, seed=0)
    """
    config_class, model_class = model_entry(name)
    fields = {f.name for f in dataclasses.fields(config_class)} - {"modalities"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UsageError(f"{name} has no setting(s) {unknown}; valid settings: {sorted(fields)}")
    config = config_class(modalities=tuple(modalities), **overrides)
    generator = rng.stream(seed, "init")
    return build(lambda: model_class(config), generator, model_class.reset_parameters)


def model_name(model: MultimodalVAE) -> str:
    """The registry name of ``model``'s class."""
    for name, (_, model_class) in MODELS.items():
        if type(model) is model_class:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered model; see {sorted(MODELS)}")


def save_model(folder: Path | str, model: MultimodalVAE) -> None:
    """Write ``model`` into ``folder`` (created if needed), each file atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = model_name(model)
    config = to_dict(model.config)
    state = {
        "model": name,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "mmgen_version": __version__,
    }
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        torch.save(state, tmp)
    save_json(folder / CONFIG_FILE, {"model": name, "config": config, "mmgen_version": __version__})


def load_model(folder: Path | str, device: str | torch.device = "cpu") -> MultimodalVAE:
    """Rebuild a model saved by ``save_model``, in eval mode on ``device``."""
    state = read_weights(
        folder, "a multi-modal model folder", "save one with mmgen.models.registry.save_model"
    )
    config_class, model_class = model_entry(state["model"])
    model = model_class(from_dict(config_class, state["config"]))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval()
