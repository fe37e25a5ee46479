"""Shared measurement helpers for the benchmarks: the machine's fp32 matmul peak, FLOP counts.

Every benchmark reports achieved GFLOP/s as a fraction of the peak measured in the same run on
the same machine, so figures from different machines compare.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(
    device: torch.device, sizes: tuple[int, ...] = (1024, 2048, 4096), seconds: float = 2.0
) -> float:
    """Best fp32 GFLOP/s of square matmuls of the given sizes, about ``seconds`` each."""
    return max(_matmul_gflops(device, size, seconds) for size in sizes)


def _matmul_gflops(device: torch.device, size: int, seconds: float) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    torch.mm(a, b)
    synchronize(device)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(3):
            torch.mm(a, b)
        synchronize(device)
        best = max(best, 3 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs that ``fn`` performs, counted by torch's FlopCounterMode (matmuls and convs)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def best_rate(fn: Callable[[], int], device: torch.device, repeats: int = 3) -> float:
    """Best items/s of ``fn`` (which returns the number of items it processed) over repeats."""
    best = 0.0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        items = fn()
        synchronize(device)
        best = max(best, items / (time.perf_counter() - start))
    return best


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` → ``(3, 32, 32)``: the ``--shape C,H,W`` of the benchmarks."""
    parts = tuple(int(part) for part in text.replace("x", ",").split(","))
    if len(parts) != 3 or min(parts) < 1:
        raise SystemExit(f"--shape needs C,H,W (three positive integers), got {text!r}")
    return parts  # type: ignore[return-value]


def cvae_config(shape: tuple[int, int, int]):
    """The benchmarked CVAE config; at 1×28×28 ``CVAEConfig()`` itself, so that the same script
    also times an mmgen from before image shapes (issue #10) for a side-by-side comparison."""
    from mmgen.models.cvae import CVAEConfig

    return CVAEConfig() if shape == (1, 28, 28) else CVAEConfig(image_shape=shape)
