"""Benchmark ``mmgen evaluate``'s measurement phase: the importance-weighted bound against the
machine's limits, then the whole phase at the reference settings.

Part 1, interleaved ``--rounds`` times on the same JMVAE (two modalities) and test points, the
best round of each reported (the shared 2-core machines vary by ±15 % minute to minute):

(a) per-point loop: one test point at a time, its ``K`` codes decoded at once, the target
    expanded ``K`` times into ``binary_cross_entropy_with_logits`` (MultiVae's likelihood metric);
(b) previous: ``importance_weighted_bound`` as it was before issue 7 (kept here verbatim as the
    reference: ``12000 // K`` points per chunk, targets expanded, BCE on every pixel);
(c) mmgen: ``mmgen.metrics.importance_weighted_bound`` (x·l by a batched product, one softplus
    per logit, cache-sized chunks).

The limit per test point is ``decoder FLOPs / fp32 matmul peak + softplus count / softplus
rate``: FLOPs counted by ``FlopCounterMode`` on the decode of ``K`` codes, the peak and the
softplus rate (the softplus-and-sum of one cache-sized block of logits, the faster of
``F.softplus`` and ``mmgen.metrics.softplus_sum``) measured in the same run.

Part 2 times ``evaluate_model`` (everything ``mmgen evaluate`` measures after training) for
``--datasets`` synthetic datasets × the five registry models, in a fresh process per test size,
at the reference settings (K = 1000, N_w = 5000, 10,000 joint-coherence samples, 10 ELBO and 64
JSD draws per point) and reports the time and the peak RSS. What is timed: models built by the
registry (untrained: speed does not depend on the weights), synthetic uniform grey-level images
(``--train-tuples`` train, ``--phase-tuples`` test), untrained classifiers of the real
architecture (``ImageClassifier`` with the default ``ClassifierConfig``).

Usage (from the repository root):

    python benchmarks/bench_evaluate.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    best_rate,
    count_flops,
    machine_description,
    matmul_peak_gflops,
    synchronize,
)

from mmgen import metrics  # noqa: E402
from mmgen.objectives import (  # noqa: E402
    bernoulli_log_likelihood,
    iw_log_mean_exp,
    log_normal,
    log_standard_normal,
    reparameterize,
)
from mmgen.rng import stream  # noqa: E402

MODALITIES = ("a", "b")
PIXELS = 28 * 28


# ----- the two references ---------------------------------------------------------------------
@torch.no_grad()
def previous_importance_weighted_bound(
    model, images, k: int, generator: torch.Generator, max_elements: int = 12_000
) -> torch.Tensor:
    """``mmgen.metrics.importance_weighted_bound`` before issue 7, kept as the reference."""
    scored = tuple(model.modalities)
    proposal = metrics.covering_subset(model, scored)
    points = max(1, max_elements // k)
    sample_chunk = min(k, max_elements)
    size = len(next(iter(images.values())))
    results = []
    for start in range(0, size, points):
        chunk = {m: x[start : start + points] for m, x in images.items()}
        mu, logvar = model.encode({m: chunk[m] for m in proposal}, proposal)  # (B, d)
        batch, latent_dim = mu.shape
        log_w_parts = []
        for done in range(0, k, sample_chunk):
            count = min(sample_chunk, k - done)
            z = reparameterize(  # (count, B, d)
                mu.expand(count, batch, latent_dim),
                logvar.expand(count, batch, latent_dim),
                generator,
            )
            logits = model.decode_logits(z.reshape(count * batch, latent_dim))
            log_likelihood = sum(
                bernoulli_log_likelihood(
                    logits[m],
                    chunk[m].unsqueeze(0).expand(count, *chunk[m].shape).reshape(logits[m].shape),
                )
                for m in scored
            ).view(count, batch)
            log_w_parts.append(log_likelihood + log_standard_normal(z) - log_normal(z, mu, logvar))
        results.append(iw_log_mean_exp(torch.cat(log_w_parts), dim=0))
    return torch.cat(results)


@torch.no_grad()
def per_point_bound(model, images, k: int, generator: torch.Generator) -> torch.Tensor:
    """One test point at a time, its ``K`` codes decoded at once (MultiVae's likelihood loop)."""
    scored = tuple(model.modalities)
    proposal = metrics.covering_subset(model, scored)
    size = len(next(iter(images.values())))
    results = []
    for index in range(size):
        point = {m: x[index : index + 1] for m, x in images.items()}
        mu, logvar = model.encode({m: point[m] for m in proposal}, proposal)  # (1, d)
        z = reparameterize(mu.expand(k, -1), logvar.expand(k, -1), generator)  # (K, d)
        logits = model.decode_logits(z)
        log_likelihood = sum(
            bernoulli_log_likelihood(logits[m], point[m].expand_as(logits[m])) for m in scored
        )
        log_w = log_likelihood + log_standard_normal(z) - log_normal(z, mu, logvar)
        results.append(iw_log_mean_exp(log_w, dim=0))
    return torch.stack(results)


# ----- inputs ---------------------------------------------------------------------------------
def synthetic_split(size: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Uniform grey levels ``{m: (N, 1, 28, 28)}``, labels and true codes: the shapes of a file."""
    generator = stream(seed, "bench-evaluate", size)
    split = {
        m: (torch.randint(0, 256, (size, 1, 28, 28), generator=generator) / 255.0).to(device)
        for m in MODALITIES
    }
    split["labels"] = (torch.arange(size) % 10).to(device)
    split["z"] = torch.randn(size, 2, generator=generator)
    return split


def build(name: str, device: torch.device):
    from mmgen.models.registry import build_model

    return build_model(name, MODALITIES, seed=0).to(device).eval()


# ----- part 1: the IW bound -------------------------------------------------------------------
def softplus_rate(device: torch.device) -> dict[str, float]:
    """Elements/s of ``F.softplus`` on one cache-sized block, and with the sum the bound needs."""
    block = torch.randn(metrics.CODES_PER_CHUNK, PIXELS, device=device)
    elements = block.numel()

    def softplus() -> int:
        for _ in range(20):
            F.softplus(block)
        return 20 * elements

    def softplus_sum() -> int:
        for _ in range(20):
            F.softplus(block).sum(1)
        return 20 * elements

    def mmgen_softplus_sum() -> int:
        for _ in range(20):
            metrics.softplus_sum(block, 1)
        return 20 * elements

    rates = {
        "softplus_elements_per_s": best_rate(softplus, device, repeats=5),
        "softplus_sum_elements_per_s": best_rate(softplus_sum, device, repeats=5),
        "mmgen_softplus_sum_elements_per_s": best_rate(mmgen_softplus_sum, device, repeats=5),
    }
    # The limit takes the faster of the two ways to the same sum: the machine's, not torch's.
    rates["best_softplus_sum_elements_per_s"] = max(
        rates["softplus_sum_elements_per_s"], rates["mmgen_softplus_sum_elements_per_s"]
    )
    return rates


def iw_comparison(device: torch.device, k: int, points: int, rounds: int) -> dict:
    model = build("jmvae", device)
    images = {m: x for m, x in synthetic_split(points, 1, device).items() if m in MODALITIES}
    contenders = {
        "per_point": per_point_bound,
        "previous": previous_importance_weighted_bound,
        "mmgen": metrics.importance_weighted_bound,
    }
    rates = dict.fromkeys(contenders, 0.0)
    values: dict[str, float] = {}
    for _ in range(rounds):
        for name, bound in contenders.items():
            generator = stream(0, "bench-iw", device=device)
            synchronize(device)
            start = time.perf_counter()
            result = bound(model, images, k, generator)
            synchronize(device)
            rates[name] = max(rates[name], points / (time.perf_counter() - start))
            values[name] = float(result.mean())
    peak = matmul_peak_gflops(device)
    elementwise = softplus_rate(device)
    z = torch.randn(k, model.config.latent_dim, device=device)
    flops = count_flops(lambda: model.decode_logits(z))

    def decode() -> int:
        with torch.no_grad():
            for _ in range(10):
                model.decode_logits(z)
        return 10

    # The decoder as it runs in the bound (matmuls, biases, tanh): the part no metric can skip.
    decode_seconds = 1.0 / best_rate(decode, device, repeats=5)
    softplus_count = k * PIXELS * len(MODALITIES)
    matmul_seconds = flops / (peak * 1e9)
    softplus_seconds = softplus_count / elementwise["best_softplus_sum_elements_per_s"]
    limit = 1.0 / (matmul_seconds + softplus_seconds)
    floor = 1.0 / (decode_seconds + softplus_seconds)
    return {
        "k": k,
        "points": points,
        "rounds": rounds,
        "points_per_s": rates,
        "mean_bound": values,
        "mmgen_vs_per_point": rates["mmgen"] / rates["per_point"],
        "mmgen_vs_previous": rates["mmgen"] / rates["previous"],
        "matmul_peak_gflops": peak,
        **elementwise,
        "decoder_gflop_per_point": flops / 1e9,
        "softplus_per_point": softplus_count,
        "limit_ms_per_point": {
            "decoder_matmuls": 1e3 * matmul_seconds,
            "softplus": 1e3 * softplus_seconds,
        },
        "limit_points_per_s": limit,
        "fraction_of_limit": {name: rate / limit for name, rate in rates.items()},
        "decode_ms_per_point": 1e3 * decode_seconds,
        "decode_gflops": flops / decode_seconds / 1e9,
        "decode_plus_softplus_points_per_s": floor,
        "fraction_of_decode_plus_softplus": {name: rate / floor for name, rate in rates.items()},
        "mmgen_decoder_gflops": rates["mmgen"] * flops / 1e9,
    }


# ----- part 2: the whole measurement phase ----------------------------------------------------
def measurement_phase(
    device: torch.device,
    test_tuples: int,
    train_tuples: int,
    datasets: int,
    joint_samples: int,
    k: int,
) -> dict[str, dict[str, float]]:
    """Seconds of ``evaluate_model`` per dataset and model at the reference settings."""
    from mmgen.classifiers import ClassifierConfig, ImageClassifier, TrainedClassifier
    from mmgen.evaluate import DEFAULT_MODELS, EvaluateConfig, evaluate_model

    config = EvaluateConfig(device=str(device), joint_samples=joint_samples, k=k)
    classifiers = {}
    for index, modality in enumerate(MODALITIES):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(index)
            network = ImageClassifier(10, ClassifierConfig()).to(device)
        classifiers[modality] = TrainedClassifier(
            network, modality, tuple(map(str, range(10))), 0.0, {}, Path("."), False
        )
    seconds: dict[str, dict[str, float]] = {}
    for dataset in range(datasets):
        train = synthetic_split(train_tuples, 10 + dataset, device)
        test = synthetic_split(test_tuples, 20 + dataset, device)
        true_z = (train.pop("z"), test.pop("z"))
        seconds[f"dataset-{dataset}"] = {}
        for name in DEFAULT_MODELS:
            model = build(name, device)
            synchronize(device)
            start = time.perf_counter()
            evaluate_model(model, train, test, classifiers, config.measure_settings(), true_z)
            synchronize(device)
            took = seconds[f"dataset-{dataset}"][name] = time.perf_counter() - start
            print(f"  {test_tuples} tuples, set {dataset}, {name}: {took:.1f} s", file=sys.stderr)
    return seconds


def phase_child(args: argparse.Namespace) -> None:
    import resource

    device = torch.device(args.device)
    start = time.perf_counter()
    seconds = measurement_phase(
        device, args.phase_child, args.train_tuples, args.datasets, args.joint_samples, args.k
    )
    record = {
        "test_tuples": args.phase_child,
        "k": args.k,
        "joint_samples": args.joint_samples,
        "train_tuples": args.train_tuples,
        "datasets": args.datasets,
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - start,
        "per_model_seconds": seconds,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        record["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    print(json.dumps(record))


def whole_phase(args: argparse.Namespace) -> list[dict]:
    """One fresh process per test size, so that each peak RSS is its own."""
    records = []
    for size in args.phase_tuples:
        child = subprocess.run(
            [sys.executable, __file__, "--device", args.device, "--phase-child", str(size),
             "--train-tuples", str(args.train_tuples), "--datasets", str(args.datasets),
             "--joint-samples", str(args.joint_samples), "--threads", str(args.threads),
             "--k", str(args.phase_k or args.k)],
            stdout=subprocess.PIPE, text=True, check=True,
        )  # fmt: skip
        records.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(records[-1]), flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke run in under a minute")
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200, help="test points of part 1")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase-tuples", type=int, nargs="*", default=[10_000, 1_000])
    parser.add_argument("--train-tuples", type=int, default=10_000)
    parser.add_argument("--datasets", type=int, default=3)
    parser.add_argument("--joint-samples", type=int, default=10_000)
    parser.add_argument("--phase-k", type=int, help="K of part 2 (default: --k)")
    parser.add_argument("--skip-iw", action="store_true", help="part 2 only")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--phase-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.phase_child is not None:
        phase_child(args)
        return
    if args.quick:
        args.points, args.rounds = 16, 2
        args.phase_tuples, args.train_tuples, args.datasets = [100], 200, 1
        args.joint_samples, args.phase_k = 500, 100
    device = torch.device(args.device)
    report: dict = {
        "machine": machine_description(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if not args.skip_iw:
        report["iw"] = iw = iw_comparison(device, args.k, args.points, args.rounds)
        print(json.dumps(report, indent=2), flush=True)
        print(
            f"K = {iw['k']}: per-point {iw['points_per_s']['per_point']:.1f}, previous "
            f"{iw['points_per_s']['previous']:.1f}, mmgen {iw['points_per_s']['mmgen']:.1f} "
            f"points/s; mmgen = {iw['mmgen_vs_previous']:.2f}x previous, "
            f"{iw['mmgen_vs_per_point']:.2f}x per-point, "
            f"{100 * iw['fraction_of_limit']['mmgen']:.0f} % of the limit "
            f"({iw['limit_points_per_s']:.0f} points/s), "
            f"{100 * iw['fraction_of_decode_plus_softplus']['mmgen']:.0f} % of decode + softplus "
            f"({iw['decode_plus_softplus_points_per_s']:.0f} points/s)",
            flush=True,
        )
    if args.phase_tuples:
        report["phase"] = whole_phase(args)
        largest = max(report["phase"], key=lambda r: r["test_tuples"])
        smallest = min(report["phase"], key=lambda r: r["test_tuples"])
        report["phase_memory_ratio"] = largest["maxrss_mib"] / smallest["maxrss_mib"]
        print(json.dumps(report, indent=2))
        print(
            f"measurement phase, {largest['test_tuples']} test tuples x {args.datasets} datasets "
            f"x 5 models: {largest['seconds'] / 60:.1f} min, peak RSS "
            f"{largest['maxrss_mib']:.0f} MiB = {report['phase_memory_ratio']:.2f}x that at "
            f"{smallest['test_tuples']} tuples"
        )


if __name__ == "__main__":
    main()
