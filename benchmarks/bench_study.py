"""A study's wall time by phase and the CPU utilisation of its job graph (docs/performance.md).

Runs a recipe (default ``recipes/demo.toml``) into a fresh folder in this process, timing every
step of ``mmgen.study.steps`` (train a CVAE, generate, pair, mix, evaluate) and the process's
CPU time over it. Prints JSON: per phase the wall seconds and CPU utilisation (process CPU
seconds / (wall seconds × cores)), the seconds between steps (the job graph's serial gaps), and
the whole run's utilisation.

    python benchmarks/bench_study.py [--recipe recipes/demo.toml] [--device cpu]
        [--torchrun-recipe benchmarks/tiny-study.toml] [--processes 2] [--skip-phases]

Beside the phases (issue 17, "Speed"):

* the evaluator's training throughput: one epoch of ``mmgen.train.fit`` per model (batch 128,
  synthetic 28×28 pairs), its FLOPs counted by torch's FlopCounterMode on a separate identical
  epoch, as a fraction of the fp32 matmul peak measured in the same run;
* ``mmgen study run`` as one process against ``torchrun --nproc-per-node N`` (one thread per
  rank, torchrun's default) on ``--torchrun-recipe``, each from an empty output folder with the
  classifier cache already filled (the phase run fills it), and the two reports compared byte
  for byte.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from mmgen.study import steps
from mmgen.study.recipe import load_recipe
from mmgen.study.run import run_study

sys.path.insert(0, str(Path(__file__).parent))
from bench_torchrun import run as run_mmgen  # noqa: E402
from common import count_flops, machine_description, matmul_peak_gflops  # noqa: E402

MODALITIES = ("a", "b")
TRAIN_MODELS = ("jmvae", "m2vae", "mvae", "mmvae", "mopoe")

STEPS = {
    "cvae": "train_cvae_step",
    "generate": "generate_step",
    "pair": "pair_step",
    "mix": "mix_step",
    "truth": "truth_step",
    "evaluate": "evaluate_step",
}


def phase_times(recipe_path: Path, device: str, data_dir: Path | None, out: Path | None) -> dict:
    """Run the recipe in this process, timing every step by phase (the job graph's gaps too)."""
    recipe = load_recipe(recipe_path)
    spans: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    originals = {name: getattr(steps, name) for name in STEPS.values()}

    def timed(phase: str, function):
        def wrapper(*a, **k):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*a, **k)
            finally:
                spans[phase].append((wall, time.perf_counter() - wall, time.process_time() - cpu))

        return wrapper

    for phase, name in STEPS.items():
        setattr(steps, name, timed(phase, originals[name]))
    cores = os.cpu_count() or 1
    try:
        with tempfile.TemporaryDirectory() as scratch:
            folder = out or Path(scratch) / "study"
            started, cpu_started = time.perf_counter(), time.process_time()
            run_study(recipe, folder, data_dir=data_dir, device=device)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        for name, function in originals.items():
            setattr(steps, name, function)
    phases = {}
    for phase, items in spans.items():
        seconds = sum(s for _, s, _ in items)
        phases[phase] = {
            "jobs": len(items),
            "wall_s": round(seconds, 2),
            "cpu_utilisation": round(sum(c for _, _, c in items) / (seconds * cores), 3),
        }
    busy = sum(s for items in spans.values() for _, s, _ in items)
    return {
        "recipe": str(recipe_path),
        "cores": cores,
        "wall_s": round(wall, 2),
        "cpu_utilisation": round(cpu / (wall * cores), 3),
        "between_steps_s": round(wall - busy, 2),
        "phases": phases,
    }


def training_throughput(models: tuple[str, ...], tuples: int, device: torch.device) -> dict:
    """Per model: one training epoch's GFLOP/s (FLOPs counted on an identical epoch)."""
    from mmgen.models.registry import build_model
    from mmgen.train import TrainConfig, fit

    generator = torch.Generator().manual_seed(0)
    data = {m: torch.randint(0, 256, (tuples, 1, 28, 28), generator=generator) / 255.0
            for m in MODALITIES}  # fmt: skip
    data = {**data, "labels": torch.arange(tuples) % 10}
    data = {key: value.to(device) for key, value in data.items()}
    config = TrainConfig(epochs=1, batch_size=128, lr=1e-3, optimizer="adam", seed=0)
    out = {}
    for name in models:
        counted = build_model(name, MODALITIES, seed=0).to(device)
        flops = count_flops(lambda model=counted: fit(model, data, None, config))
        best = math.inf
        for _ in range(2):  # the first fit also warms the allocator and kernels
            model = build_model(name, MODALITIES, seed=0).to(device)
            start = time.perf_counter()
            fit(model, data, None, config)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - start)
        out[name] = {"epoch_s": round(best, 3), "gflop": round(flops / 1e9, 2),
                     "gflops": round(flops / best / 1e9, 2)}  # fmt: skip
    return out


def torchrun_against_one(recipe: Path, processes: int, data_dir: Path | None) -> dict:
    """``mmgen study run`` as one process and under torchrun; walls and report identity."""
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    result: dict = {"recipe": str(recipe), "processes": processes}
    with tempfile.TemporaryDirectory() as scratch:
        reports = {}
        for label, ranks in (("1 process", 1), (f"torchrun {processes} ranks", processes)):
            out = Path(scratch) / label.replace(" ", "-")
            result[label] = round(run_mmgen(["study", "run", str(recipe), "--out", str(out),
                                             "--quiet", *extra], ranks), 2)  # fmt: skip
            reports[label] = (out / "report.md").read_bytes()
        result["same_report"] = len(set(reports.values())) == 1
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--recipe", type=Path, default=root / "recipes" / "demo.toml")
    tiny = root / "benchmarks" / "tiny-study.toml"
    parser.add_argument("--torchrun-recipe", type=Path, default=tiny)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--train-tuples", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--skip-phases", action="store_true", help="only throughput and torchrun")
    parser.add_argument("--skip-torchrun", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    result: dict = {"machine": machine_description(device), "load_average": os.getloadavg()}
    peak_before = matmul_peak_gflops(device)
    if not args.skip_phases:
        result["phases"] = phase_times(args.recipe, args.device, args.data_dir, args.out)
    throughput = training_throughput(TRAIN_MODELS, args.train_tuples, device)
    peak = max(peak_before, matmul_peak_gflops(device))
    for record in throughput.values():
        record["of_peak"] = round(record["gflops"] / peak, 3)
    result["matmul_peak_gflops"] = round(peak, 1)
    result["training"] = throughput
    if not args.skip_torchrun:
        result["torchrun"] = torchrun_against_one(args.torchrun_recipe, args.processes,
                                                  args.data_dir)  # fmt: skip
    result["load_average_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
