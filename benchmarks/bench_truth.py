"""Benchmark ``mmgen truth``: the ground truth of a test split at d = 2 against the fp32 peak.

Builds two CVAEs of the benchmarked architecture (``common.cvae_config``, untrained but with
a sharpened decoder: speed does not depend on the weights), generates a sampled file of
``--tuples`` test tuples, times ``mmgen.truth.compute_truth`` (quadrature on ``--points`` and
``2·--points`` cells per axis, every tuple scored under every class) and reports:

* the wall time and peak RSS (memory is flat in the number of tuples: compare two ``--tuples``);
* the work: decoder FLOPs (``FlopCounterMode`` on one block of codes, times the blocks) and the
  scoring products ``2·N·C·G·P`` per modality and grid, and their rate as a fraction of the fp32
  matmul peak measured in the same run.

Usage (from the repository root; the issue's figure is ``--tuples 10000`` on a GPU):

    python benchmarks/bench_truth.py [--device cpu|cuda] [--tuples 10000] [--points 128]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    count_flops,
    cvae_config,
    machine_description,
    matmul_peak_gflops,
    parse_shape,
    synchronize,
)

from mmgen import rng  # noqa: E402
from mmgen.checkpoint import save_checkpoint  # noqa: E402
from mmgen.generate import GenerateConfig, generate_dataset  # noqa: E402
from mmgen.models.cvae import build_cvae  # noqa: E402
from mmgen.truth import Settings, compute_truth  # noqa: E402
from mmgen.truth.prior import CODE_BLOCK, _grid  # noqa: E402


def checkpoint(folder: Path, source: str, seed: int, shape: tuple[int, int, int]) -> Path:
    model = build_cvae(cvae_config(shape), rng.stream(seed, "init"))
    with torch.no_grad():
        model.decoder.deconv[-1].weight.mul_(8.0)
    metadata = {"source": {"name": source, "class_names": [str(k) for k in range(10)]}}
    save_checkpoint(folder, model, None, metadata=metadata, history=[])
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tuples", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=128)
    parser.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        folders = [
            checkpoint(root / n, n, i, args.shape) for i, n in enumerate(("mnist", "fashion"))
        ]
        config = GenerateConfig(n_train=10, n_test=args.tuples, decode="sample")
        path = generate_dataset(folders, root / "e.h5", config, device=args.device)
        peak = matmul_peak_gflops(device)
        synchronize(device)
        start = time.perf_counter()
        truth = compute_truth(path, Settings(points=args.points), device=args.device)
        synchronize(device)
        seconds = time.perf_counter() - start
        peak_after = matmul_peak_gflops(device)
    model = build_cvae(cvae_config(args.shape), rng.stream(0, "init")).to(device).eval()
    z = torch.zeros(CODE_BLOCK, 2, device=device)
    labels = torch.zeros(CODE_BLOCK, dtype=torch.int64, device=device)
    with torch.no_grad():
        decode_flops = count_flops(lambda: model.decode_logits(z, labels)) / CODE_BLOCK
    pixels = args.shape[0] * args.shape[1] * args.shape[2]
    codes = sum(len(_grid(2, "radial", 2.0, p)[0]) for p in (args.points, 2 * args.points))
    classes, modalities = 10, 2
    decoding = decode_flops * codes * classes * modalities
    scoring = 2 * args.tuples * classes * codes * pixels * modalities
    rate = (decoding + scoring) / seconds / 1e9
    best_peak = max(peak, peak_after)
    result = {
        "machine": machine_description(device),
        "tuples": args.tuples,
        "points": [args.points, 2 * args.points],
        "codes": codes,
        "seconds": round(seconds, 2),
        "decode_tflop": round(decoding / 1e12, 3),
        "scoring_tflop": round(scoring / 1e12, 3),
        "gflops": round(rate, 1),
        "matmul_peak_gflops": round(best_peak, 1),
        "fraction_of_peak": round(rate / best_peak, 3),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "mutual_information": truth.summary["mutual_information"]["mnist+fashion"]["mean"],
        "numerical_error": truth.summary["mutual_information"]["mnist+fashion"]["numerical_error"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
