"""Model folders in mmgen's first format (version 1), written as the first releases wrote them.

The first releases had three layouts; these writers reproduce each byte layout of their JSON and
the keys of their ``weights.pt`` (checked against that code when the format changed), so that the
tests can prove such folders still load. No binary fixture is kept in git.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmgen.config import to_dict

VERSION = "0.1.0"


def _json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _cpu(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def cvae_config(config: Any) -> dict[str, Any]:
    """A CVAE config as mmgen wrote it before image shapes (#10): ``image_size: 28``."""
    record = to_dict(config)
    if tuple(record.pop("image_shape")) != (1, 28, 28):
        raise ValueError("mmgen before #10 knew only 1×28×28 CVAEs")
    return {**record, "image_size": 28}


def multimodal_config(config: Any) -> dict[str, Any]:
    """A multi-modal config as mmgen wrote it before image shapes (#10): no ``image_shapes``."""
    record = to_dict(config)
    if record.pop("image_shapes"):
        raise ValueError("mmgen before #10 knew only 1×28×28 modalities")
    return record


def write_cvae(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    metadata: dict[str, Any],
    history: list[dict[str, float]],
) -> Path:
    """``save_checkpoint`` of the first format: weights.pt, history.json, then config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": _cpu(model),
        "model_config": cvae_config(model.config),
        "mmgen_version": VERSION,
        "epoch": int(metadata.get("epochs_done", 0)),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    torch.save(state, folder / "weights.pt")
    _json(folder / "history.json", {"epochs": history})
    _json(
        folder / "config.json",
        {**metadata, "model": cvae_config(model.config), "mmgen_version": VERSION},
    )
    return folder


def write_multimodal(folder: Path, name: str, model: nn.Module) -> Path:
    """``registry.save_model`` of the first format: the config in weights.pt and config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    config = multimodal_config(model.config)
    state = {"model": name, "config": config, "state_dict": _cpu(model), "mmgen_version": VERSION}
    torch.save(state, folder / "weights.pt")
    _json(folder / "config.json", {"model": name, "config": config, "mmgen_version": VERSION})
    return folder


def write_classifier(
    folder: Path, model: nn.Module, num_classes: int, config: Any, info: dict[str, Any]
) -> Path:
    """The classifier cache entry of the first format: weights.pt and info.json."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {"model": _cpu(model), "num_classes": num_classes, "config": to_dict(config)}
    torch.save(state, folder / "weights.pt")
    _json(folder / "info.json", info)
    return folder
