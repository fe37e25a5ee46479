"""Where mmgen computes, and the record of it that every artifact carries.

``resolve_device`` turns the ``--device`` flag into a ``torch.device``; ``environment`` is the
record (device name, torch / CUDA / cuDNN versions, determinism) written into checkpoints, dataset
files and reports, so that a figure can always be traced to the machine that made it;
``deterministic`` is what ``--deterministic`` switches on so that the same command gives the same
bytes on a GPU too (deterministic kernels, no TF32).
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from typing import Any

import torch

from mmgen import __version__
from mmgen.errors import UsageError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"--device {name} was asked for but no CUDA GPU is available; use cpu or auto"
        )
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The plain-value record of where a result was computed (JSON- and HDF5-ready)."""
    device = torch.device(device)
    record: dict[str, Any] = {
        "mmgen": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "device_name": platform.processor() or platform.machine(),
        "cuda": torch.version.cuda or "",
        "cudnn": "",
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        # TF32 rounds float32 products to a 10-bit mantissa on Ampere and later GPUs: off by
        # default for matrix products, on by default for cuDNN's convolutions.
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32),
    }
    if device.type == "cuda":
        record["device_name"] = torch.cuda.get_device_name(device)
        record["cudnn"] = str(torch.backends.cudnn.version() or "")
    return record


@contextlib.contextmanager
def fixed_threads(count: int) -> Iterator[None]:
    """Torch's CPU threads set to ``count`` inside the block; the previous count restored after.

    A CPU reduction splits its sum over the threads, so its float result depends on how many
    there are: torchrun gives each rank one thread, a lone process takes every core. A fixed
    count per job makes the figures independent of the launch (and of the machine's cores).
    """
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def deterministic(enabled: bool = True) -> Iterator[None]:
    """Deterministic kernels and no TF32 inside the block (``--deterministic``); restored after.

    CUDA's cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic matrix products; it is set
    for the block when the user has not set it.
    """
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cuda.matmul.allow_tf32 = saved[1]
        torch.backends.cudnn.allow_tf32 = saved[2]
        torch.backends.cudnn.benchmark = saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
