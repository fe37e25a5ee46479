"""Benchmark ``mmgen truth``: one file and a study's files decoded once, against the fp32 peak.

Builds two CVAEs of the benchmarked architecture (``common.cvae_config``, **untrained** but with
a sharpened decoder: speed does not depend on the weights), generates a sampled file E of
``--tuples`` test tuples and its twins (ME, f = 1, and partly mixed f = ``--fractions``), and
reports, with the fp32 matmul peak measured in the same run:

* the decoder's throughput (decodes/s, GFLOP/s, fraction of the peak) per batch size, under
  ``torch.inference_mode``, channels-last (the path ``mmgen.truth`` decodes with);
* the truth of E alone (``compute_truth``) and of E, ME and the fractions together
  (``compute_truths``: each ``(class, code block)`` decoded once), wall time and rate;
* the cost model ``t = C·G·M / decode_rate + Σ_files N·C·G·P·M / scoring_rate`` (G the codes of
  both grids, M modalities, P pixels): the decode rate is the decoder's best measured here, the
  per-file cost is (together − alone)/(files − 1), whose products give the scoring rate (a lower
  bound: the per-file cost also holds reading, hashing and summarising), extrapolated to
  ``--extrapolate-points`` (the default 128) at 10,000 tuples;
* peak RSS after E alone, and in a fresh process at ``--memory-tuples`` tuples (memory flat
  in the number of tuples: compare the two).

``--compare-rounds R``: instead, the truth of E alone with the float64 scoring the library had
before (``score_float64``, kept here for comparison only) and with the library's float32
scoring, interleaved R rounds, each round's fp32 matmul peak measured beside it: wall times,
the ratio old/new, the whole truth's fraction of the peak, and the largest per-tuple difference
of ``log p(x)`` and of the mutual information between the two (against the quadrature's own
per-tuple error check).

Usage (from the repository root):

    python benchmarks/bench_truth.py [--device cpu|cuda] [--tuples 10000] [--points 6]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
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
from mmgen.shuffle import MixConfig, mix_modality  # noqa: E402
from mmgen.truth import Settings, compute_truth, compute_truths, integrate  # noqa: E402
from mmgen.truth.prior import _grid  # noqa: E402

CLASSES, MODALITIES = 10, 2


def checkpoint(folder: Path, source: str, seed: int, shape: tuple[int, int, int]) -> Path:
    model = build_cvae(cvae_config(shape), rng.stream(seed, "init"))
    with torch.no_grad():
        model.decoder.deconv[-1].weight.mul_(8.0)
    metadata = {"source": {"name": source, "class_names": [str(k) for k in range(10)]}}
    save_checkpoint(folder, model, None, metadata=metadata, history=[])
    return folder


def codes(points: int) -> int:
    """G: the codes of the two grids (``points`` and ``2·points`` per axis, radial r = 2)."""
    return sum(len(_grid(2, "radial", 2.0, p)[0]) for p in (points, 2 * points))


def decoder_throughput(
    shape: tuple[int, int, int], device: torch.device, batches: list[int], peak: float
) -> tuple[float, list[dict]]:
    """FLOPs per decode and, per batch size, the best decodes/s of 3 rounds of 1024 codes."""
    model = build_cvae(cvae_config(shape), rng.stream(0, "init")).to(device).eval()
    z = torch.randn(max(batches), 2, generator=torch.Generator().manual_seed(0)).to(device)
    labels = torch.zeros(max(batches), dtype=torch.int64, device=device)
    with torch.inference_mode():
        per_decode = count_flops(lambda: model.decode_logits(z[:64], labels[:64])) / 64
        rows = []
        for batch in batches:
            model.decode_logits(z[:batch], labels[:batch])
            best = 0.0
            for _ in range(3):
                synchronize(device)
                start, done = time.perf_counter(), 0
                while done < 1024:
                    model.decode_logits(z[:batch], labels[:batch])
                    done += batch
                synchronize(device)
                best = max(best, done / (time.perf_counter() - start))
            gflops = best * per_decode / 1e9
            rows.append(
                {
                    "batch": batch,
                    "decodes_per_s": round(best),
                    "gflops": round(gflops, 1),
                    "fraction_of_peak": round(gflops / peak, 3),
                }
            )
    return per_decode, rows


def files(root: Path, args: argparse.Namespace) -> list[Path]:
    folders = [checkpoint(root / n, n, i, args.shape) for i, n in enumerate(("mnist", "fashion"))]
    config = GenerateConfig(n_train=10, n_test=args.tuples, decode="sample")
    e = generate_dataset(folders, root / "e.h5", config, device=args.device)
    if args.single:
        return [e]
    twins = [
        mix_modality(e, root / f"f{f:g}.h5", MixConfig(seed=1, fraction=f, block_codes=0))
        for f in (1.0, *args.fractions)
    ]
    return [e, *twins]


def score_float64(scoring, result, logits, softplus, log_weight, label, tuple_chunk) -> None:
    """The scoring before the float32 rewrite (verbatim): float32 products converted to
    float64, float64 log-sum-exps over every (tuple, code) pair. For comparison only."""
    size = len(scoring.images[0])
    for start in range(0, size, tuple_chunk):
        stop = min(start + tuple_chunk, size)
        scores = [
            (x[start:stop] @ part.T - sp).double()  # (n, G_b): log p(x_m | z_j, c)
            for x, part, sp in zip(scoring.images, logits, softplus, strict=True)
        ]
        for subset in scoring.subsets:
            total = log_weight + sum(scores[m] for m in subset)
            column = result.log_mean[subset][start:stop, label]
            column.copy_(torch.logaddexp(column, torch.logsumexp(total, 1)))
            if not scoring.squares:
                continue
            column = result.log_mean_square[subset][start:stop, label]
            column.copy_(torch.logaddexp(column, torch.logsumexp(2 * total, 1)))


def scoring_kernel(model, path: Path, device: torch.device):
    """A function timing one scoring function on E's tuples against one block of 2048 decoded
    codes (both modalities decoded by ``model``, the three subsets, no squares): GFLOP/s of the
    scoring products ``2·N·G·(P + 1)·M``."""
    from mmgen.data import h5io
    from mmgen.metrics import softplus_sum
    from mmgen.truth.oracle import subsets_needed

    data = h5io.read_split(path, "test")
    images = [torch.from_numpy(data.images_float(m)).flatten(1).to(device) for m in data.images]
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2048, 2, generator=generator).to(device)
    log_weight = -0.5 * (z.double() ** 2).sum(1) - math.log(2048)
    with torch.inference_mode():
        labels = torch.zeros(2048, dtype=torch.int64, device=device)
        logits = [model.decode_logits(z, labels).flatten(1).float() for _ in range(2)]
    softplus = [softplus_sum(part, 1) for part in logits]
    scoring = integrate.Scoring(images=images, subsets=subsets_needed(2, None), squares=False)
    flops = 2 * len(images[0]) * 2048 * (images[0].shape[1] + 1) * 2

    def run(score) -> float:
        result = integrate.Integrals(
            {
                s: torch.full((len(images[0]), 1), -math.inf, dtype=torch.float64)
                for s in scoring.subsets
            },
            {},
        )
        synchronize(device)
        start = time.perf_counter()
        with torch.inference_mode():
            score(scoring, result, logits, softplus, log_weight, 0, integrate.TUPLE_CHUNK)
        synchronize(device)
        return flops / (time.perf_counter() - start) / 1e9

    return run


def compare(path: Path, args: argparse.Namespace, device: torch.device) -> dict:
    """``--compare-rounds``: old (float64) and new (float32) scoring interleaved."""
    settings = Settings(points=args.points)
    pixels = args.shape[0] * args.shape[1] * args.shape[2]
    grid = codes(args.points)
    model = build_cvae(cvae_config(args.shape), rng.stream(0, "init"))
    z, labels = torch.zeros(64, 2), torch.zeros(64, dtype=torch.int64)
    per_decode = count_flops(lambda: model.decode_logits(z, labels)) / 64
    flops = per_decode * CLASSES * grid * MODALITIES
    flops += 2 * args.tuples * CLASSES * grid * (pixels + 1) * MODALITIES
    new_score, rounds, truths = integrate._score, [], {}
    kernel = scoring_kernel(model, path, device)
    try:
        for _ in range(args.compare_rounds):
            row = {"peak_gflops": round(matmul_peak_gflops(device), 1)}
            for name, score in (("old", score_float64), ("new", new_score)):
                gflops = kernel(score)
                row[f"{name}_scoring_gflops"] = round(gflops, 1)
                row[f"{name}_scoring_fraction_of_peak"] = round(gflops / row["peak_gflops"], 3)
            for name, score in (("old", score_float64), ("new", new_score)):
                integrate._score = score
                synchronize(device)
                start = time.perf_counter()
                truths[name] = compute_truth(path, settings, device=args.device)
                synchronize(device)
                seconds = time.perf_counter() - start
                row[f"{name}_seconds"] = round(seconds, 2)
                row[f"{name}_fraction_of_peak"] = round(
                    flops / seconds / 1e9 / row["peak_gflops"], 3
                )
            row["ratio_old_over_new"] = round(row["old_seconds"] / row["new_seconds"], 2)
            rounds.append(row)
    finally:
        integrate._score = new_score
    key = "mutual_information/mnist+fashion"
    difference = {
        k: float(abs(truths["old"].per_tuple[k] - truths["new"].per_tuple[k]).max())
        for k in ("log_p", key)
    }
    return {
        "machine": machine_description(device),
        "load_average": [round(v, 2) for v in __import__("os").getloadavg()],
        "tuples": args.tuples,
        "points": [args.points, 2 * args.points],
        "codes": grid,
        "gflop_per_truth": round(flops / 1e9, 1),
        "rounds": rounds,
        "max_abs_difference_per_tuple": difference,
        "quadrature_error_check_max_per_tuple_log_p": truths["new"].summary["numerical_error"][
            "max_per_tuple_log_likelihood"
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tuples", type=int, default=10_000)
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--extrapolate-points", type=int, default=128)
    parser.add_argument(
        "--fractions", type=lambda t: [float(x) for x in t.split(",")], default=[0.25, 0.5, 0.75]
    )
    parser.add_argument(
        "--batches", type=lambda t: [int(x) for x in t.split(",")], default=[64, 256, 1024]
    )
    parser.add_argument("--memory-tuples", type=int, default=1000, help="0: skip")
    parser.add_argument("--single", action="store_true", help="E alone; print peak RSS only")
    parser.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W")
    parser.add_argument("--compare-rounds", type=int, default=0, help="old vs new scoring")
    args = parser.parse_args()
    device = torch.device(args.device)
    settings = Settings(points=args.points)
    with tempfile.TemporaryDirectory() as folder:
        if args.compare_rounds:
            args.single = True
            path = files(Path(folder), args)[0]
            print(json.dumps(compare(path, args, device), indent=2))
            return
        paths = files(Path(folder), args)
        if args.single:
            compute_truth(paths[0], settings, device=args.device)
            print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
            return
        peak = matmul_peak_gflops(device)
        per_decode, throughput = decoder_throughput(args.shape, device, args.batches, peak)
        synchronize(device)
        start = time.perf_counter()
        alone = compute_truth(paths[0], settings, device=args.device)
        synchronize(device)
        one_seconds = time.perf_counter() - start
        rss_alone = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        start = time.perf_counter()
        together = compute_truths(paths, settings, device=args.device)
        synchronize(device)
        many_seconds = time.perf_counter() - start
        peak = max(peak, matmul_peak_gflops(device))
    assert together[0].summary == alone.summary  # decode once = each file alone
    memory = None
    if args.memory_tuples:
        command = [
            sys.executable,
            __file__,
            "--single",
            "--tuples",
            str(args.memory_tuples),
            "--points",
            str(args.points),
            "--device",
            args.device,
        ]
        memory = int(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1]
        )
    pixels = args.shape[0] * args.shape[1] * args.shape[2]
    grid = codes(args.points)
    decodes = CLASSES * grid * MODALITIES
    decode_rate = max(row["decodes_per_s"] for row in throughput)
    decode_seconds = decodes / decode_rate
    madds = args.tuples * CLASSES * grid * pixels * MODALITIES  # per file
    # Two files' costs solve for the two rates: one file = D + S, k files = D + k·S.
    scoring_seconds = (many_seconds - one_seconds) / (len(paths) - 1)
    scoring_rate = 2 * madds / scoring_seconds / 1e9  # GFLOP/s of the scoring products
    big = codes(args.extrapolate_points)
    big_decode = CLASSES * big * MODALITIES / decode_rate
    big_scoring = 2 * 10_000 * CLASSES * big * pixels * MODALITIES / (scoring_rate * 1e9)
    flops_one = per_decode * decodes + 2 * madds
    result = {
        "machine": machine_description(device),
        "weights": "untrained (sharpened last layer)",
        "tuples": args.tuples,
        "points": [args.points, 2 * args.points],
        "codes": grid,
        "matmul_peak_gflops": round(peak, 1),
        "decoder": {"mflop_per_decode": round(per_decode / 1e6, 2), "by_batch": throughput},
        "one_file": {
            "seconds": round(one_seconds, 1),
            "gflops": round(flops_one / one_seconds / 1e9, 1),
            "fraction_of_peak": round(flops_one / one_seconds / 1e9 / peak, 3),
        },
        "files_together": {
            "files": len(paths),
            "seconds": round(many_seconds, 1),
            "each_alone_seconds": round(len(paths) * one_seconds, 1),
            "gflops": round(
                (per_decode * decodes + len(paths) * 2 * madds) / many_seconds / 1e9, 1
            ),
        },
        "cost_model": {
            "decode_seconds": round(decode_seconds, 1),
            "per_file_seconds": round(scoring_seconds, 1),  # scoring + reading, SHA-256, ...
            "scoring_gflops": round(scoring_rate, 1),
            "scoring_fraction_of_peak": round(scoring_rate / peak, 3),
            f"extrapolated_points_{args.extrapolate_points}_10000_tuples": {
                "codes": big,
                "decode_seconds": round(big_decode),
                "scoring_seconds_per_file": round(big_scoring),
                "one_file_seconds": round(big_decode + big_scoring),
                "five_files_together_seconds": round(big_decode + 5 * big_scoring),
                "five_files_alone_seconds": round(5 * (big_decode + big_scoring)),
            },
        },
        "peak_rss_mb": {f"{args.tuples}_tuples": rss_alone, f"{args.memory_tuples}_tuples": memory},
        "mutual_information": alone.summary["mutual_information"]["mnist+fashion"]["mean"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
