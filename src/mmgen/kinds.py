"""Every kind of model folder mmgen writes, with the function that rebuilds it from its config.

``"cvae"`` (Korthals et al., Table 2; ``mmgen.checkpoint``), the multi-modal VAEs of
``mmgen.models.registry.MODELS`` and ``"classifier"`` (``mmgen.classifiers``). The format itself
is ``mmgen.checkpoint``, which knows no kind: each reader passes the kinds it accepts, and
:func:`load` here accepts them all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmgen import checkpoint
from mmgen.checkpoint import Builder, SavedModel, build_cvae_model
from mmgen.classifiers import classifier_from_config
from mmgen.models.registry import model_builders


def model_kinds() -> dict[str, Builder]:
    """Every kind of model folder → the function that builds a fresh model from its config."""
    return {"cvae": build_cvae_model, "classifier": classifier_from_config, **model_builders()}


def load(
    folder: Path | str,
    device: str | torch.device = "cpu",
    what: str = "an mmgen model folder",
    hint: str = "save one with mmgen.checkpoint.save",
) -> SavedModel:
    """Rebuild the model of a model folder of any kind (``mmgen.checkpoint.load``)."""
    return checkpoint.load(folder, device, model_kinds(), what, hint)
