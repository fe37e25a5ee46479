"""What a model needs before it is built: memory estimates and saved weights that fit their config.

Both checks run on PyTorch's ``meta`` device, which records shapes without allocating, so a
setting that would ask for gigabytes (eight 2000×2000 images; a ``model.json`` edited to a
latent size of 2,000,000) is refused in one line, with the figure and a way out, in milliseconds
instead of ending in the allocator's error after minutes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from mmgen.errors import UsageError

log = logging.getLogger(__name__)

WEIGHTS = "weights.pt"

FLOAT_BYTES = 4
# Copies of every parameter a training step holds: the weights, their gradients, the optimiser's
# state (one for RMSprop, two for Adam) and the checkpoint's serialised copy.
TRAINING_COPIES = 5
# Activations kept for the backward pass, per example, in feature maps of the Table 2 network
# (64 channels at H/2 × W/2): four encoder and four decoder layers, each an output and the
# ReLU's, rounded up.
ACTIVATION_MAPS = 10


def meta_model(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device: every parameter's shape, no memory."""
    with torch.device("meta"):
        return build()


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def cvae_training_bytes(config: object, batch_size: int) -> int:
    """About the memory of training a ``CVAEConfig``'s network with batches of ``batch_size``."""
    from mmgen.models.cvae import CVAE, FEATURES  # the model imports config helpers: no circle

    parameters = parameter_count(meta_model(lambda: CVAE(config)))  # type: ignore[arg-type]
    channels, height, width = config.image_shape  # type: ignore[attr-defined]
    maps = ACTIVATION_MAPS * FEATURES * (height // 2) * (width // 2)
    per_example = maps + 4 * channels * height * width
    return FLOAT_BYTES * (TRAINING_COPIES * parameters + batch_size * per_example)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (``None`` when it cannot be told)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None


def gib(size: float) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.0f} MiB"


def require_memory(needed: int, device: torch.device, what: str, way_out: str) -> None:
    """Raise ``UsageError`` with the figures when ``needed`` bytes exceed the free memory."""
    free = available_bytes(device)
    log.info("%s needs about %s (%s free on %s)", what, gib(needed), free and gib(free), device)
    if free is not None and needed > free:
        raise UsageError(
            f"{what} needs about {gib(needed)} of memory and {device} has {gib(free)} free; "
            f"{way_out}"
        )


def check_saved_weights(
    folder: Path, build: Callable[[], nn.Module], state: Mapping[str, object]
) -> None:
    """Refuse a saved model whose weights do not fit its config or are not finite, before building.

    Args:
        folder: the model folder (for the message).
        build: builds the model from the folder's config (run here on the meta device only).
        state: the saved ``state_dict``.

    Raises:
        UsageError: a weight of another shape, a missing or unknown weight, or a NaN/infinite
            value (a run that diverged), naming the folder and the weight.
    """
    expected = {name: tuple(t.shape) for name, t in meta_model(build).state_dict().items()}
    tensors = {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}
    for name in sorted(expected.keys() | tensors.keys()):
        if name not in tensors or name not in expected:
            side = "has no weight" if name not in tensors else "has a weight the config lacks:"
            raise UsageError(
                f"{folder}: its config and weights disagree ({WEIGHTS} {side} {name}); the "
                "config was edited or belongs to another model: restore it or retrain"
            )
        if tuple(tensors[name].shape) != expected[name]:
            raise UsageError(
                f"{folder}: its config and weights disagree (the config asks for {name} of "
                f"shape {list(expected[name])}, {WEIGHTS} holds {list(tensors[name].shape)}); "
                "the config was edited or belongs to another model: restore it or retrain"
            )
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UsageError(
                f"{folder}: {bad} of the {tensor.numel()} values of weight {name} are NaN or "
                "infinite (its training diverged); retrain it, e.g. with a smaller --lr"
            )


# Disk space: an output found full or read-only only when it is first written (an epoch, or a
# classifier's minutes of training, later) is checked before the work instead (issue 20, item 7).
MIB = 2**20
FIGURES_BYTES = 2 * MIB  # a checkpoint's or a report's figures and JSON records, rounded up


def size_text(size: float) -> str:
    return gib(size) if size >= MIB else f"{size / 1024:.0f} KiB"


def existing_folder(path: Path) -> Path:
    """``path`` or its nearest existing ancestor: where ``path`` would be created."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def require_output_space(path: Path | str, flag: str, needed: int, what: str) -> None:
    """Refuse an output folder that cannot take ``needed`` bytes, before any work.

    Checks that the folder (or, while it does not exist, its nearest existing ancestor) is a
    folder, that a file can be created in it (a read-only file system, missing permissions),
    and that its file system has about ``needed`` bytes free. The probe file is removed at
    once; nothing else is written.

    Raises:
        NotADirectoryError: the path (or an ancestor) is a file.
        OSError: not writable, or too little free space (``ENOSPC``); the message names
            ``flag`` and ``path``.
    """
    import errno
    import tempfile

    path = Path(path)
    place = existing_folder(path)
    if not place.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {place} is a file; give a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".mmgen-probe-", dir=place)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(
            error.errno, f"{flag} {path} is not writable ({reason}); choose another {flag}"
        ) from None
    os.close(fd)
    os.unlink(probe)
    stats = os.statvfs(place)
    free = stats.f_bavail * stats.f_frsize
    log.info("%s needs about %s on disk (%s free)", what, size_text(needed), size_text(free))
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"{flag} {path}: No space left on device for {what} (about {size_text(needed)} "
            f"needed, {size_text(free)} free); free some space or choose another {flag}",
        )


def checkpoint_bytes(model: nn.Module) -> int:
    """About the disk space of a model folder being replaced: two copies of the weights and of
    an optimiser state as large, and the figures."""
    return 2 * 2 * FLOAT_BYTES * parameter_count(model) + FIGURES_BYTES
