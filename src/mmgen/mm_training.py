"""Training a multi-modal VAE: every stage of the model through ``mmgen.train.fit``.

Most models have one stage (``"joint"``). tVAE has two (``"joint"``, then ``"unimodal"`` with
the decoders and the joint encoder frozen); **each stage runs ``config.epochs`` epochs**, as in
the M²VAE paper's comparison, so a tVAE trains for ``len(stages) · epochs`` epochs in all.

Epochs are numbered across stages: stage ``k`` runs epochs ``k·E + 1 … (k+1)·E``, so every epoch
of the run draws its own shuffle and noise from ``(seed, epoch)`` (``mmgen.train``) and each
record carries its ``"stage"``. Each stage gets a fresh optimiser over its trainable parameters.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from torch import Tensor

from mmgen.errors import UsageError
from mmgen.models.multimodal import MultimodalVAE
from mmgen.train import TrainConfig, fit, make_optimizer

log = logging.getLogger(__name__)

# Settings of the multi-modal VAEs that differ from TrainConfig's (the CVAE's) defaults:
# the M²VAE paper trains them with Adam (METHOD.md §4).
MULTIMODAL_TRAIN_DEFAULTS: dict[str, Any] = {"optimizer": "adam"}


def multimodal_train_config(**overrides: Any) -> TrainConfig:
    """A ``TrainConfig`` with the multi-modal defaults (Adam), then ``overrides``."""
    return TrainConfig(**{**MULTIMODAL_TRAIN_DEFAULTS, **overrides})


def train_model(
    model: MultimodalVAE,
    train: dict[str, Tensor],
    test: dict[str, Tensor] | None,
    config: TrainConfig,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every stage of ``model`` in order; returns one record per epoch, all stages.

    Args:
        model: a multi-modal VAE already on the data's device.
        train: modality → images ``(N, 1, 28, 28)`` in [0, 1] (``labels`` / ``z`` may ride
            along; the models ignore them), on the training device.
        test: the same for the held-out split, or ``None``.
        config: optimisation settings; ``multimodal_train_config`` gives the defaults.
        on_step: called after every step with ``{"batch": batch size}``.
        on_epoch_end: called with ``(epochs done over all stages, record)``; the record holds
            ``"stage"``.

    Returns:
        Records ``{"epoch", "stage", "train_loss", "test_loss", ...}``; ``train_<term>`` for
        every named term of the stage's loss.
    """
    missing = [m for m in model.modalities if m not in train]
    if missing:
        raise UsageError(
            f"training data lacks modality(ies) {missing} of the model; it has {sorted(train)}"
        )
    history: list[dict[str, Any]] = []
    for index, stage in enumerate(model.stages):
        model.set_stage(stage)

        def tag_stage(epoch: int, record: dict[str, Any], stage: str = stage) -> None:
            record["stage"] = stage  # the same dict fit keeps in its history
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)

        trainable = [p for p in model.parameters() if p.requires_grad]
        log.info("stage %s: %d trainable tensors", stage, len(trainable))
        history += fit(
            model,
            train,
            test,
            dataclasses.replace(config, epochs=(index + 1) * config.epochs),
            optimizer=make_optimizer(trainable, config),
            start_epoch=index * config.epochs,
            on_step=on_step,
            on_epoch_end=tag_stage,
        )
    return history
