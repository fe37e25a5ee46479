"""Benchmark one process against ``torchrun --nproc-per-node N``: generate and evaluate.

Run from the repository root (a few minutes on a 2-core CPU; the real MNIST / Fashion-MNIST
files must be found, e.g. through ``MMGEN_DATA_DIR``, for evaluate's classifiers):

    python benchmarks/bench_torchrun.py --processes 2 --tuples 20000

Each command runs once per configuration (one process with the default thread count, one
process with one thread, torchrun with N ranks of one thread each), wall clock from start to
exit (interpreter start-up and process-group set-up included), and the outputs are checked byte
for byte against each other. The CVAEs are randomly initialised (decode cost does not depend
on weights); evaluate trains on a small file generated from them and its MNIST-ME shuffle,
with the classifiers trained into a cache first so that no timed run trains them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_generate import make_checkpoints  # noqa: E402
from common import machine_description  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(args: list[str], processes: int, threads: int | None = None) -> float:
    """Seconds of ``mmgen ARGS`` as one process or under torchrun with ``processes`` ranks.

    ``threads`` sets ``OMP_NUM_THREADS`` (torchrun sets 1 per rank unless it is set).
    """
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if processes == 1:
        command = [sys.executable, "-m", "mmgen", *args]
    else:
        command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(processes), "-m",
                   "mmgen", *args]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tuples", type=int, default=20_000, help="generate: train tuples")
    parser.add_argument("--cache-dir", type=Path, default=None, help="classifier cache to reuse")
    args = parser.parse_args()
    # One process with the default thread count and with one thread (what torchrun gives each
    # rank), then torchrun: the last is the reference of the speed-ups.
    runs = [("1 process", 1, None), ("1 process, 1 thread", 1, 1),
            (f"{args.processes} processes", args.processes, None)]  # fmt: skip
    result: dict = {"machine": machine_description(torch.device("cpu")), "os_cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cvaes = make_checkpoints(tmp)
        base = [x for c in cvaes for x in ("--cvae", c)] + ["--device", "cpu", "--quiet"]
        generate = [*base, "--n-train", str(args.tuples), "--n-test", "1000"]
        timings = {}
        for label, processes, threads in runs:
            out = tmp / f"generate-{label}.h5"
            timings[label] = run(["generate", *generate, "--out", str(out)], processes, threads)
        outputs = {(tmp / f"generate-{label}.h5").read_bytes() for label, _, _ in runs}
        result["generate"] = {"tuples": args.tuples + 1000, "seconds": timings}
        result["generate"]["same"] = len(outputs) == 1

        small = tmp / "e.h5"
        run(["generate", *base, "--n-train", "2000", "--n-test", "500", "--out", str(small)], 1)
        run(["shuffle", str(small), "--out", str(tmp / "me.h5")], 1)
        cache = str(args.cache_dir or tmp / "cache")
        common = [str(small), str(tmp / "me.h5"), "--epochs", "2", "--k", "20",
                  "--prior-samples", "200", "--joint-samples", "1000", "--classifier-epochs",
                  "1", "--device", "cpu", "--cache-dir", cache, "--quiet"]  # fmt: skip
        warm = [*common, "--models", "jmvae", "--seeds", "0", "--out", str(tmp / "warm")]
        run(["evaluate", *warm], 1)  # trains the classifiers into the cache, untimed
        evaluate = [*common, "--models", "jmvae,m2vae", "--seeds", "0", "1"]
        timings = {}
        for label, processes, threads in runs:
            out = tmp / f"evaluate-{label}"
            timings[label] = run(["evaluate", *evaluate, "--out", str(out)], processes, threads)
        outputs = {(tmp / f"evaluate-{label}" / "report.json").read_bytes() for label, _, _ in runs}
        result["evaluate"] = {"jobs": 8, "seconds": timings, "same": len(outputs) == 1}
    for name in ("generate", "evaluate"):
        seconds = result[name]["seconds"]
        result[name]["speed-up"] = {
            label: seconds[label] / seconds[runs[-1][0]] for label, _, _ in runs[:-1]
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
