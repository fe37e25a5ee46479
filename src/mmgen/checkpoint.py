"""Model folders: one format, one ``save`` and one ``load`` for every model mmgen trains.

A model folder (format version 2; docs/format.md, "Model folders") holds:

    model.json    {"format": "mmgen-model", "format_version": 2, "kind": ..., "config": ...,
                   "run": {what trained it, epochs done, device, mmgen and torch versions}}
    weights.pt    {"state_dict": ..., "optimizer": ... (resumable runs only)}: tensors and plain
                  values, so ``torch.load(weights_only=True)`` reads it
    ...           files of the kind: the CVAE adds history.json, samples.png, latent.png,
                  curves.png

The kinds are ``"cvae"`` (Korthals et al., Table 2), the multi-modal VAEs of
``mmgen.models.registry.MODELS`` and ``"classifier"``. This module is the format only: a caller of
``load`` passes the kinds it accepts, each with the function that rebuilds it from its config
(``mmgen.kinds.model_kinds()`` holds them all). A folder is written as one unit
(``mmgen.atomic``): a kill at any instant leaves the previous or the next complete folder, never
a mix of the two.

Folders of mmgen's first format (version 1: a per-kind ``config.json`` or ``info.json`` beside a
``weights.pt`` holding the config) still load.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmgen import __version__
from mmgen.atomic import atomic_folder
from mmgen.config import load_json, save_json, to_dict
from mmgen.data.header import SourceIdentity
from mmgen.device import environment
from mmgen.errors import UsageError
from mmgen.models.cvae import CVAE, CVAEConfig
from mmgen.resources import check_saved_weights
from mmgen.shared import file_sha256

FORMAT = "mmgen-model"
FORMAT_VERSION = 2  # 1: the per-kind layouts of the first mmgen releases (still read)
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
HISTORY_FILE = "history.json"
LEGACY_CONFIG_FILE = "config.json"  # version 1: CVAE and multi-modal VAE folders
LEGACY_INFO_FILE = "info.json"  # version 1: classifier cache folders
CVAE_HINT = "make one with mmgen train-cvae --out FOLDER"


Builder = Callable[[dict[str, Any]], nn.Module]  # a kind's config → a fresh model


@dataclass
class SavedModel:
    """A model read back from its folder, with everything that identifies it."""

    kind: str  # a kind of mmgen.kinds.model_kinds()
    model: nn.Module  # in eval mode, on the device asked for
    config: dict[str, Any]  # rebuilds the model through its kind's Builder
    run: dict[str, Any]  # the run record: what trained it, epochs done, device, versions
    path: Path
    sha256: str  # of weights.pt: names the exact weights (datasets record it)
    optimizer: dict[str, Any] | None  # optimiser state of a resumable run, else None
    format_version: int


def run_record(device: torch.device | str, **fields: Any) -> dict[str, Any]:
    """A run record: ``fields`` (source, limit, optimiser, epochs done, ...) and where it ran."""
    return {**fields, "device": str(device), "environment": environment(device)}


def save(
    folder: Path | str,
    kind: str,
    model: nn.Module,
    config: dict[str, Any],
    run: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    write_files: Callable[[Path], None] | None = None,
) -> Path:
    """Write a model folder as one unit (the previous folder at ``folder`` is replaced).

    Args:
        folder: the model folder.
        kind: a kind of ``mmgen.kinds.model_kinds()``.
        model: the model; its state dict is stored on the CPU.
        config: the config that rebuilds it (its kind's ``Builder``).
        run: the run record (``run_record``); the mmgen and torch versions are added.
        optimizer: stored too when given, so that the run can be resumed.
        write_files: writes the kind's other files into the folder being built.

    Returns:
        ``folder``.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"a model folder needs a kind (a non-empty name), got {kind!r}")
    folder = Path(folder)
    state: dict[str, Any] = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config,
        "run": {**run, "mmgen_version": __version__, "torch_version": torch.__version__},
    }
    with atomic_folder(folder) as tmp:
        write_weights(state, tmp / WEIGHTS_FILE)
        if write_files is not None:
            write_files(tmp)
        # Last: a folder with model.json is complete (the swap makes this hold for readers too).
        save_json(tmp / MODEL_FILE, record)
    return folder


def write_weights(state: dict[str, Any], path: Path) -> None:
    """``torch.save(state)`` to ``path``, with the operating system's errors as ``OSError``.

    ``torch.save`` onto a file reports a failed write (a full disk) as a ``RuntimeError`` from
    its zip writer; serialising in memory first leaves the one write to Python, which raises
    ``OSError`` with the reason (the state is a model's weights: megabytes).
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def load(
    folder: Path | str,
    device: str | torch.device,
    kinds: Mapping[str, Builder],
    what: str = "an mmgen model folder",
    hint: str = "save one with mmgen.checkpoint.save",
) -> SavedModel:
    """Rebuild the model of any model folder (either format), in eval mode on ``device``.

    Args:
        folder: the model folder.
        device: where to put the model.
        kinds: the kinds the caller accepts, each with its ``Builder`` (every kind:
            ``mmgen.kinds.load``).
        what: what the folder should be, for error messages.
        hint: how to make one, for error messages.

    Raises:
        FileNotFoundError: no folder, or no model in it.
        UsageError: a damaged, incomplete or foreign folder, or a kind not in ``kinds``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (expected {what}); {hint}")
    kind, config, run, state, version = read_folder(folder, what, hint)
    if kind not in kinds:
        raise UsageError(f"{folder} holds a {kind} model, not {what}; {hint}")
    check_saved_weights(folder, lambda: kinds[kind](config), state["state_dict"])
    try:
        # A config the folder's kind does not accept raises UsageError; any other exception
        # from a constructor is a bug of mmgen and keeps its traceback.
        model = kinds[kind](config)
    except UsageError as error:
        raise UsageError(
            f"{folder}: its {MODEL_FILE} does not configure a {kind} model ({error})"
        ) from None
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as error:  # torch's "Error(s) in loading state_dict": names or shapes
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UsageError(
            f"{folder} does not rebuild a {kind} model: its config and weights disagree "
            f"({first_line})"
        ) from None
    return SavedModel(
        kind=kind,
        model=model.to(device).eval(),
        config=config,
        run=run,
        path=folder,
        sha256=file_sha256(folder / WEIGHTS_FILE),
        optimizer=state.get("optimizer"),
        format_version=version,
    )


def holds_model(folder: Path | str) -> bool:
    """Whether ``folder`` holds a complete model folder (of either format)."""
    folder = Path(folder)
    if (folder / MODEL_FILE).is_file():
        return True
    weights = (folder / WEIGHTS_FILE).is_file()
    return weights and any(
        (folder / name).is_file() for name in (LEGACY_CONFIG_FILE, LEGACY_INFO_FILE)
    )


def saved_epochs(folder: Path | str) -> int | None:
    """The epochs done by the run saved in ``folder`` (read from its JSON only), if recorded."""
    folder = Path(folder)
    for name, keys in (
        (MODEL_FILE, ("run", "epochs_done")),
        (LEGACY_CONFIG_FILE, ("epochs_done",)),
    ):
        if (folder / name).is_file():
            value: Any = load_json(folder / name)
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            return value
    return None


def read_folder(
    folder: Path, what: str = "an mmgen model folder", hint: str = ""
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """``(kind, config, run record, weights state, format version)`` of a model folder.

    The weights state is ``{"state_dict": ..., "optimizer": ...}`` whatever the format.
    """
    if (folder / MODEL_FILE).is_file():
        record = load_json(folder / MODEL_FILE)
        if record.get("format") != FORMAT:
            raise UsageError(
                f"{folder / MODEL_FILE} was not written by mmgen (no format {FORMAT!r}); {hint}"
            )
        version = record.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise UsageError(
                f"{folder} has model-folder format {version!r}; this mmgen ({__version__}) reads "
                f"up to {FORMAT_VERSION}: upgrade mmgen"
            )
        missing = [key for key in ("kind", "config", "run") if key not in record]
        if missing:
            raise UsageError(f"{folder / MODEL_FILE} lacks {missing}; {hint}")
        wrong = [key for key in ("config", "run") if not isinstance(record[key], dict)]
        if wrong:  # a hand-edited file: a string or null where mmgen wrote a record
            raise UsageError(
                f"{folder / MODEL_FILE}: {' and '.join(repr(key) for key in wrong)} must be a "
                f"record ({{...}}) but holds {record[wrong[0]]!r}; it was edited: restore it "
                "or train again"
            )
        if not isinstance(record["kind"], str):
            raise UsageError(f"{folder / MODEL_FILE} names no model kind; {hint}")
        if not (folder / WEIGHTS_FILE).is_file():
            raise UsageError(f"{folder} has {MODEL_FILE} but no {WEIGHTS_FILE}; {hint}")
        state = read_weights(folder / WEIGHTS_FILE, what, hint)
        if "state_dict" not in state:
            raise UsageError(f"{folder / WEIGHTS_FILE} holds no state_dict; {hint}")
        return record["kind"], record["config"], record["run"], state, version
    if not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(
            f"{folder} is not {what} (no {MODEL_FILE} or {WEIGHTS_FILE}); {hint}"
        )
    return _read_legacy(folder, read_weights(folder / WEIGHTS_FILE, what, hint), what, hint)


def _read_legacy(
    folder: Path, state: dict[str, Any], what: str, hint: str
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """The first format: the kind is told by the keys of ``weights.pt``."""
    weights = {"state_dict": state.get("model"), "optimizer": state.get("optimizer")}
    if "model_config" in state:  # a CVAE: config.json holds the run, history.json the curves
        if not (folder / LEGACY_CONFIG_FILE).is_file():
            raise UsageError(
                f"{folder} holds an incomplete CVAE checkpoint ({WEIGHTS_FILE} without "
                f"{LEGACY_CONFIG_FILE}: an older mmgen was stopped while saving); train it again "
                "without --resume"
            )
        meta = load_json(folder / LEGACY_CONFIG_FILE)
        if "source" not in meta:
            raise UsageError(
                f"{folder / LEGACY_CONFIG_FILE} has no 'source': {folder} is not {what}; {hint}"
            )
        run = {key: value for key, value in meta.items() if key != "model"}
        return "cvae", state["model_config"], run, weights, 1
    if isinstance(state.get("model"), str) and "state_dict" in state and "config" in state:
        run = {"mmgen_version": state.get("mmgen_version")}
        return state["model"], state["config"], run, {"state_dict": state["state_dict"]}, 1
    if "num_classes" in state and "config" in state and "model" in state:
        info = folder / LEGACY_INFO_FILE
        run = load_json(info) if info.is_file() else {}
        config = {"num_classes": state["num_classes"], **state["config"]}
        return "classifier", config, run, weights, 1
    if "state_dict" in state:  # today's weights.pt: the folder lost its model.json
        raise UsageError(
            f"{folder} lacks {MODEL_FILE} (its {WEIGHTS_FILE} is mmgen's, but the model's kind "
            f"and settings are in {MODEL_FILE}): restore {MODEL_FILE} or train again"
        )
    raise UsageError(
        f"{folder} is not {what}: its {WEIGHTS_FILE} was not written by mmgen "
        f"(keys {sorted(map(str, state))[:6]}); {hint}"
    )


def read_weights(path: Path, what: str = "an mmgen model folder", hint: str = "") -> dict:
    """A ``weights.pt`` read with ``weights_only=True``; a damaged file is one clear error."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file (struct, zip, pickle)
        # torch's own message suggests weights_only=False, which would run arbitrary code from
        # the file: name only the error's type.
        raise UsageError(
            f"{path} is damaged or was not written by mmgen ({type(error).__name__}); it is not "
            f"{what}{'; ' + hint if hint else ''}"
        ) from None
    if not isinstance(state, dict):
        raise UsageError(f"{path} holds a {type(state).__name__}, not {what}")
    return state


# --- the CVAE (mmgen train-cvae) --------------------------------------------------------------


@dataclass
class CVAECheckpoint:
    """A trained CVAE with everything that identifies it."""

    model: CVAE
    config: CVAEConfig
    metadata: dict[str, Any]  # the run record: source, train config, limit, epochs done, versions
    path: Path
    sha256: str  # checksum of weights.pt: names the exact decoder that produced a dataset
    history: list[dict[str, float]]  # one record per epoch (history.json)
    optimizer: dict[str, Any] | None = None  # optimiser state, for --resume

    @property
    def source(self) -> dict[str, Any]:
        """Identity of the data the CVAE was trained on: name, classes, file checksums."""
        return self.metadata["source"]

    @property
    def identity(self) -> SourceIdentity:
        """The source spec and its ``--classes`` selection (``None``: every class)."""
        classes = self.source.get("classes")
        classes = None if classes is None else tuple(classes)
        return SourceIdentity(str(self.source.get("name", "")), classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images the CVAE decodes (1×28×28 for checkpoints before #10)."""
        return self.config.image_shape

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor) -> Tensor:
        """Codes ``(B, d)`` and classes ``(B,)`` → mean images ``(B, C, H, W)`` in [0, 1]."""
        z = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        labels = torch.as_tensor(labels, device=self.device)
        return self.model.decode(z, labels)


def save_checkpoint(
    folder: Path | str,
    model: CVAE,
    optimizer: torch.optim.Optimizer | None,
    metadata: dict[str, Any],
    history: list[dict[str, float]],
    write_files: Callable[[Path], None] | None = None,
) -> None:
    """Write a CVAE model folder as one unit: weights, run record, history (and figures).

    Args:
        folder: the model folder.
        model: the CVAE.
        optimizer: its optimiser, for ``--resume`` (or ``None``).
        metadata: the run record (``source`` at least; ``epochs_done``, ``train``, ``limit``).
        history: one record per epoch done.
        write_files: writes further files (the figures) into the folder being built.
    """
    if "source" not in metadata:
        raise ValueError("a CVAE run record needs its 'source' (the data it was trained on)")

    def write(tmp: Path) -> None:
        save_json(tmp / HISTORY_FILE, {"epochs": history})
        if write_files is not None:
            write_files(tmp)

    save(folder, "cvae", model, to_dict(model.config), metadata, optimizer, write)


def build_cvae_model(config: dict[str, Any]) -> CVAE:
    """A fresh CVAE from its model-folder config (the ``"cvae"`` kind's ``Builder``)."""
    return CVAE(CVAEConfig.from_dict(config))


def load_cvae(folder: Path | str, device: str | torch.device = "cpu") -> CVAECheckpoint:
    """Load a trained CVAE from its folder (either format), ready to decode.

    Example:
        >>> cvae = load_cvae("runs/cvae-mnist")
        >>> images = cvae.decode(torch.zeros(10, 2), torch.arange(10))  # (10, 1, 28, 28)
    """
    saved = load(
        folder, device, kinds={"cvae": build_cvae_model}, what="a CVAE checkpoint", hint=CVAE_HINT
    )
    if "source" not in saved.run:
        raise UsageError(f"{folder}'s run record has no 'source': not a CVAE checkpoint of mmgen")
    source = saved.run["source"]
    if not isinstance(source, dict) or not isinstance(source.get("name"), str):
        raise UsageError(
            f"{Path(folder) / MODEL_FILE}: run.source must be the record of the data the CVAE "
            f"was trained on (with its 'name') but holds {source!r}; it was edited: restore it "
            "or train again"
        )
    history_path = saved.path / HISTORY_FILE
    history = load_json(history_path)["epochs"] if history_path.is_file() else []
    return CVAECheckpoint(
        model=saved.model,  # type: ignore[arg-type]
        config=CVAEConfig.from_dict(saved.config),
        metadata=saved.run,
        path=saved.path,
        sha256=saved.sha256,
        history=history,
        optimizer=saved.optimizer,
    )
