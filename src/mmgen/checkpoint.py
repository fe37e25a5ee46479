"""CVAE checkpoint folders: save, load, and decode ``(z, class) → images`` in one call.

A checkpoint folder holds:

    config.json    model config, training config, source identity, mmgen version, epochs done
    weights.pt     tensors and plain values only (``torch.load(weights_only=True)`` reads it):
                   model and optimizer state, epoch, generator seed
    history.json   per-epoch training and test losses
    curves.png, samples.png, latent.png   figures (written by ``mmgen.plots``)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mmgen import __version__
from mmgen.atomic import atomic_path
from mmgen.config import from_dict, load_json, save_json, to_dict
from mmgen.errors import UsageError
from mmgen.models.cvae import CVAE, CVAEConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.pt"
HISTORY_FILE = "history.json"


def file_sha256(path: Path | str, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class CVAECheckpoint:
    """A trained CVAE with everything that identifies it."""

    model: CVAE
    config: CVAEConfig
    metadata: dict[str, Any]  # the whole config.json: training config, source, epochs, version
    path: Path
    sha256: str  # checksum of weights.pt: names the exact decoder that produced a dataset

    @property
    def source(self) -> dict[str, Any]:
        """Identity of the data the CVAE was trained on: name, classes, file checksums."""
        return self.metadata["source"]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Codes ``(B, d)`` and classes ``(B,)`` → mean images ``(B, 1, 28, 28)`` in [0, 1]."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        labels = torch.as_tensor(labels, device=self.device)
        return self.model.decode(z, labels)


def save_checkpoint(
    folder: Path | str,
    model: CVAE,
    optimizer: torch.optim.Optimizer | None,
    metadata: dict[str, Any],
    history: list[dict[str, float]],
) -> None:
    """Write config, weights and history into ``folder``, each file atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_config": to_dict(model.config),
        "mmgen_version": __version__,
        "epoch": int(metadata.get("epochs_done", 0)),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        torch.save(state, tmp)
    save_json(folder / HISTORY_FILE, {"epochs": history})
    save_json(
        folder / CONFIG_FILE,
        {**metadata, "model": to_dict(model.config), "mmgen_version": __version__},
    )


def read_weights(
    folder: Path | str,
    what: str = "a CVAE checkpoint",
    hint: str = "make one with mmgen train-cvae --out FOLDER",
) -> dict[str, Any]:
    """The raw weights file of a model folder (plain tensors; safe ``weights_only`` load).

    Args:
        folder: the model folder.
        what: what the folder should be, for the error message.
        hint: how to make one, for the error message.
    """
    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not {what} (no {WEIGHTS_FILE}); {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        raise UsageError(f"{path} is damaged or not {what} ({error})") from None


def load_cvae(folder: Path | str, device: str | torch.device = "cpu") -> CVAECheckpoint:
    """Load a trained CVAE from a checkpoint folder, ready to decode.

    Example:
        >>> cvae = load_cvae("runs/cvae-mnist")
        >>> images = cvae.decode(torch.zeros(10, 2), torch.arange(10))  # (10, 1, 28, 28)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"CVAE checkpoint folder {folder} does not exist")
    state = read_weights(folder)
    metadata = load_json(folder / CONFIG_FILE)
    config = from_dict(CVAEConfig, state["model_config"])
    model = CVAE(config)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return CVAECheckpoint(
        model=model,
        config=config,
        metadata=metadata,
        path=folder,
        sha256=file_sha256(folder / WEIGHTS_FILE),
    )
