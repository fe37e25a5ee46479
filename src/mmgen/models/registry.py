"""The multi-modal VAEs by name, and their model folders (save / load).

A model is saved as a model folder of ``mmgen.checkpoint`` whose kind is its registry name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mmgen import checkpoint, rng
from mmgen.checkpoint import run_record
from mmgen.config import from_dict, to_dict
from mmgen.data.shapes import ImageShape
from mmgen.errors import UsageError
from mmgen.models.jmvae import JMVAE, JMVAEKL, JMVAEZero
from mmgen.models.m2vae import M2VAE
from mmgen.models.mmvae import MMVAE
from mmgen.models.mopoe import MoPoE
from mmgen.models.multimodal import MultimodalConfig, MultimodalVAE
from mmgen.models.mvae import MVAE
from mmgen.models.tvae import TVAE
from mmgen.nn import build

MODELS: dict[str, tuple[type[MultimodalConfig], type[MultimodalVAE]]] = {
    cls.name: (cls.config_class, cls)
    for cls in (JMVAE, JMVAEZero, JMVAEKL, TVAE, M2VAE, MVAE, MMVAE, MoPoE)
}


def model_entry(name: str) -> tuple[type[MultimodalConfig], type[MultimodalVAE]]:
    """``(config class, model class)`` of a registry name; ValueError listing the choices."""
    if name not in MODELS:
        raise UsageError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(
    name: str,
    modalities: Sequence[str],
    *,
    seed: int,
    image_shapes: Mapping[str, ImageShape] | None = None,
    **overrides: Any,
) -> MultimodalVAE:
    """A fresh model of registry ``name`` for ``modalities``, on the CPU.

    Args:
        name: a key of ``MODELS``.
        modalities: modality names in the dataset's order (≥ 2).
        seed: every weight is drawn from the stream ``mmgen.rng.stream(seed, "init")``
            (PyTorch's default scheme; the global generator is never touched).
        image_shapes: modality → ``(C, H, W)`` (a dataset header's ``image_shapes``); default
            1×28×28 for every modality.
        **overrides: fields of the model's config (``latent_dim``, ``beta``, ``alpha``, ...).

    Example:
        >>> model = build_model("m2vae", ("mnist", "fashion"), alpha=1e-3, seed=0)
    """
    config_class, model_class = model_entry(name)
    fields = {f.name for f in dataclasses.fields(config_class)} - {"modalities", "image_shapes"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise UsageError(f"{name} has no setting(s) {unknown}; valid settings: {sorted(fields)}")
    config = config_class(
        modalities=tuple(modalities), image_shapes=dict(image_shapes or {}) or (), **overrides
    )
    generator = rng.stream(seed, "init")
    return build(lambda: model_class(config), generator, model_class.reset_parameters)


def model_name(model: MultimodalVAE) -> str:
    """The registry name of ``model``'s class."""
    for name, (_, model_class) in MODELS.items():
        if type(model) is model_class:
            return name
    raise ValueError(f"{type(model).__name__} is not a registered model; see {sorted(MODELS)}")


def save_model(folder: Path | str, model: MultimodalVAE, run: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a model folder (``mmgen.checkpoint``), as one unit.

    Args:
        folder: the model folder (replaced when it exists).
        model: a model of ``MODELS``.
        run: its run record (``mmgen.checkpoint.run_record``: data, optimiser, epochs done).
    """
    record = run if run is not None else run_record(next(model.parameters()).device)
    return checkpoint.save(folder, model_name(model), model, to_dict(model.config), record)


def model_builders() -> dict[str, checkpoint.Builder]:
    """Every model of ``MODELS`` → the function that rebuilds it from its folder's config."""
    return {
        name: (lambda config, entry=entry: entry[1](from_dict(entry[0], config)))
        for name, entry in MODELS.items()
    }


def load_model(folder: Path | str, device: str | torch.device = "cpu") -> MultimodalVAE:
    """Rebuild a model saved by ``save_model`` (either format), in eval mode on ``device``."""
    saved = checkpoint.load(
        folder,
        device,
        kinds=model_builders(),
        what="a multi-modal model folder",
        hint="save one with mmgen.models.registry.save_model",
    )
    return saved.model  # type: ignore[return-value]
