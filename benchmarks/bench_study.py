"""A study's wall time by phase and the CPU utilisation of its job graph (docs/performance.md).

Runs a recipe (default ``recipes/demo.toml``) into a fresh folder in this process, timing every
step of ``mmgen.study.steps`` (train a CVAE, generate, pair, mix, evaluate) and the process's
CPU time over it. Prints JSON: per phase the wall seconds and CPU utilisation (process CPU
seconds / (wall seconds × cores)), the seconds between steps (the job graph's serial gaps), and
the whole run's utilisation.

    python benchmarks/bench_study.py [--recipe recipes/demo.toml] [--device cpu]

Skeleton: the evaluator's throughput against the fp32 matmul peak (common.matmul_peak_gflops)
and torchrun with 2 ranks against one process are still to add (issue 17, "Speed").
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from mmgen.study import steps
from mmgen.study.recipe import load_recipe
from mmgen.study.run import run_study

STEPS = {
    "cvae": "train_cvae_step",
    "generate": "generate_step",
    "pair": "pair_step",
    "mix": "mix_step",
    "evaluate": "evaluate_step",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--recipe", type=Path, default=root / "recipes" / "demo.toml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    spans: dict[str, list[tuple[float, float, float]]] = defaultdict(list)

    def timed(phase: str, function):
        def wrapper(*a, **k):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*a, **k)
            finally:
                spans[phase].append((wall, time.perf_counter() - wall, time.process_time() - cpu))

        return wrapper

    for phase, name in STEPS.items():
        setattr(steps, name, timed(phase, getattr(steps, name)))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch) / "study"
        started, cpu_started = time.perf_counter(), time.process_time()
        run_study(recipe, out, data_dir=args.data_dir, device=args.device)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    phases = {}
    for phase, items in spans.items():
        seconds = sum(s for _, s, _ in items)
        phases[phase] = {
            "jobs": len(items),
            "wall_s": round(seconds, 2),
            "cpu_utilisation": round(sum(c for _, _, c in items) / (seconds * cores), 3),
        }
    busy = sum(s for items in spans.values() for _, s, _ in items)
    print(
        json.dumps(
            {
                "recipe": str(args.recipe),
                "cores": cores,
                "wall_s": round(wall, 2),
                "cpu_utilisation": round(cpu / (wall * cores), 3),
                "between_steps_s": round(wall - busy, 2),
                "phases": phases,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
