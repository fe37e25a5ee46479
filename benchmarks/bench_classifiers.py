"""Benchmark the coherence classifiers' inference: NCHW (PyTorch's default) against channels-last.

``mmgen evaluate``'s joint coherence classifies every decoded prior sample once per modality
(10,000 × |M| images per model at the reference settings). ``TrainedClassifier`` runs its
convolutions channels-last; this measures that against the same network in NCHW, interleaved
``--rounds`` times on the same untrained ``ImageClassifier`` (speed does not depend on the weights),
and reports images/s, the ratio and the achieved GFLOP/s against the fp32 matmul peak measured in
the same run.

Usage (from the repository root):

    python benchmarks/bench_classifiers.py [--shape 1,28,28] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    best_rate,
    count_flops,
    machine_description,
    matmul_peak_gflops,
    parse_shape,
)

from mmgen.classifiers import ClassifierConfig, ImageClassifier, TrainedClassifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W")
    parser.add_argument("--batch", type=int, default=1000, help="images per call (evaluate's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)  # untrained weights and images: speed only
    nchw = ImageClassifier(10, ClassifierConfig(), image_shape=args.shape).to(device).eval()
    trained = TrainedClassifier(
        model=ImageClassifier(10, ClassifierConfig(), image_shape=args.shape).to(device),
        source="bench",
        class_names=tuple(str(k) for k in range(10)),
        test_accuracy=0.0,
        info={},
        path=Path("."),
        loaded=True,
    )
    trained.model.load_state_dict(nchw.state_dict())
    images = torch.rand(args.batch, *args.shape, generator=generator).to(device)
    flops = count_flops(lambda: nchw(images)) / args.batch
    print(machine_description(device), f"shape={args.shape}")
    peak = matmul_peak_gflops(device)
    best = {"nchw": 0.0, "channels_last": 0.0}
    with torch.no_grad():
        difference = (nchw(images) - trained.classify(images)).abs().max().item()
        for _ in range(args.rounds):  # interleaved: the machine's load moves both alike
            best["nchw"] = max(best["nchw"], best_rate(lambda: len(nchw(images)), device, 1))
            rate = best_rate(lambda: len(trained.classify(images)), device, 1)
            best["channels_last"] = max(best["channels_last"], rate)
    for name, rate in best.items():
        gflops = rate * flops / 1e9
        print(f"{name:>14}: {rate:8.0f} images/s  {gflops:6.1f} GFLOP/s "
              f"({gflops / peak:5.1%} of the {peak:.0f} GFLOP/s matmul peak)")  # fmt: skip
    ratio = best["channels_last"] / best["nchw"]
    print(f"channels_last / nchw: {ratio:.2f}×; {flops / 1e6:.2f} MFLOP per image; "
          f"largest logit difference {difference:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
