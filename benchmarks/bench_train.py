"""Training throughput of ``mmgen train-cvae`` against the textbook loop, in one run.

Three loops train the same β-CVAE (Table 2) with RMSprop at batch size 128 on real MNIST:

1. textbook: ``torchvision.datasets.MNIST`` + ``ToTensor`` + a shuffling ``DataLoader``, default
   memory layout (what the PyTorch examples do);
2. in-memory: the data set as one tensor, batches by ``index_select``, default layout;
3. mmgen: ``mmgen.train.train_epoch`` as ``train-cvae`` runs it (in-memory, channels_last).

The loops run interleaved, ``--rounds`` times each, and the best round of each is reported: the
shared 2-core machines here vary by ±15 % from minute to minute, and interleaving exposes every
loop to the same conditions. (``torch.compile`` was tried too: no gain beyond noise once the
reparameterisation draws from a seeded generator, so the trainer does not use it.)

Each figure is samples/s and GFLOP/s (FLOPs counted by torch's FlopCounterMode on one step),
the latter as a fraction of the fp32 matmul peak measured in the same run.

Usage: python benchmarks/bench_train.py [--samples 6400] [--device cpu] [--data-dir D]
       [--shape 3,32,32] [--only-mmgen]

``--shape C,H,W`` other than 1,28,28 trains on uniform random images of that shape (speed does
not depend on the pixels) and skips the textbook loop, which reads MNIST; ``--only-mmgen``
times mmgen's loop alone (quick, for interleaved comparisons of two mmgen versions).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import (
    count_flops,
    cvae_config,
    machine_description,
    matmul_peak_gflops,
    parse_shape,
    synchronize,
)
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mmgen import rng
from mmgen.cvae_training import training_tensors
from mmgen.data.sources import SourceData, load_split, resolve_root
from mmgen.models.cvae import CVAEConfig, build_cvae
from mmgen.train import TrainConfig, make_optimizer, train_epoch, train_stream

BATCH = 128


def step_flops(device: torch.device, shape: tuple[int, int, int]) -> float:
    model = build_cvae(cvae_config(shape), rng.stream(0, "init")).to(device)
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    generator = train_stream(0, "train", 0, device)
    batch = {
        "images": torch.rand(BATCH, *shape, device=device),
        "labels": torch.arange(BATCH, device=device) % 10,
    }

    def step() -> None:
        loss = model.loss_on(batch, generator)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return count_flops(step) / BATCH


def seconds_for(run, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    run(warmup=False)
    synchronize(device)
    return time.perf_counter() - start


def textbook(data_root: Path, samples: int, device: torch.device):
    """torchvision's MNIST + DataLoader; torchvision reads decompressed files, so unpack them."""
    tmp = Path(tempfile.mkdtemp())
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        source = data_root / f"{name}.gz"  # resolve_root gives the raw folder
        with gzip.open(source) as fin, open(raw / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    dataset = datasets.MNIST(tmp, train=True, download=False, transform=transforms.ToTensor())
    loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, drop_last=True)
    model = build_cvae(CVAEConfig(), rng.stream(0, "init")).to(device)
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    generator = train_stream(0, "train", 0, device)

    def run(warmup: bool) -> None:
        steps = 3 if warmup else samples // BATCH
        for i, (images, labels) in enumerate(loader):
            if i == steps:
                break
            batch = {"images": images.to(device), "labels": labels.to(device)}
            loss = model.loss_on(batch, generator)
            optimizer.zero_grad()
            loss["loss"].backward()
            optimizer.step()

    return run, lambda: shutil.rmtree(tmp)


def random_source(shape: tuple[int, int, int], size: int) -> SourceData:
    """Uniform random uint8 images of ``shape`` with 10 balanced classes (no real data)."""
    generator = rng.numpy_stream(0, "bench-images")
    return SourceData(
        name="random",
        split="train",
        images=generator.integers(0, 256, (size, *shape), dtype="uint8"),
        labels=(generator.permutation(size) % 10).astype("int64"),
        class_names=tuple(str(k) for k in range(10)),
        files={},
        root="",
    )


def in_memory(data, samples: int, device: torch.device, channels_last: bool, shape=(1, 28, 28)):
    model = build_cvae(cvae_config(shape), rng.stream(0, "init"))
    tensors = training_tensors(data, device)
    if channels_last:
        model = model.to(device, memory_format=torch.channels_last)
    else:
        model = model.to(device)
        tensors["images"] = tensors["images"].contiguous()
    optimizer = make_optimizer(model.parameters(), TrainConfig())
    subset = {k: v[:samples] for k, v in tensors.items()}
    small = {k: v[: 3 * BATCH] for k, v in tensors.items()}

    def run(warmup: bool) -> None:
        generator = train_stream(0, "train", 0, device)
        train_epoch(model, small if warmup else subset, optimizer, BATCH, generator)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6400, help="samples per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W")
    parser.add_argument("--only-mmgen", action="store_true", help="time mmgen's loop alone")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = args.shape
    mnist = shape == (1, 28, 28)
    if mnist:
        root = resolve_root("mnist", args.data_dir)
        data = load_split("mnist", "train", data_dir=root)
    else:
        data = random_source(shape, max(args.samples, 3 * BATCH))

    peak = matmul_peak_gflops(device)
    flops = step_flops(device, shape)
    mmgen_loop = "mmgen train-cvae (in-memory, channels_last)"
    loops = {mmgen_loop: in_memory(data, args.samples, device, True, shape)}
    cleanup = None
    if not args.only_mmgen:
        loops["in-memory tensors, default layout"] = in_memory(
            data, args.samples, device, False, shape
        )
        if mnist:
            run_textbook, cleanup = textbook(root, args.samples, device)
            loops["textbook (torchvision MNIST + DataLoader)"] = run_textbook
    for run in loops.values():
        run(warmup=True)
    rates = {name: 0.0 for name in loops}
    for _ in range(args.rounds):
        for name, run in loops.items():
            rates[name] = max(rates[name], args.samples / seconds_for(run, device))
    if cleanup is not None:
        cleanup()
    epoch_seconds = None
    if device.type == "cuda" and not args.only_mmgen:
        full = in_memory(data, len(data.labels), device, True, shape)
        full(warmup=True)
        epoch_seconds = seconds_for(full, device)

    baseline = rates.get("textbook (torchvision MNIST + DataLoader)", rates[mmgen_loop])
    print(f"machine: {machine_description(device)}; torch {torch.__version__}; shape {shape}")
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s; model: {flops / 1e6:.1f} MFLOP per sample")
    ratio = "× textbook" if mnist and not args.only_mmgen else "× mmgen"
    print(f"{'loop':46s} {'samples/s':>10s} {'GFLOP/s':>8s} {'% peak':>7s} {ratio:>10s}")
    for name, rate in rates.items():
        gflops = rate * flops / 1e9
        print(
            f"{name:46s} {rate:10.0f} {gflops:8.1f} {100 * gflops / peak:6.1f}% "
            f"{rate / baseline:9.2f}×"
        )
    if epoch_seconds is not None:
        print(f"full MNIST epoch (60,000 samples) with mmgen's loop: {epoch_seconds:.2f} s")
    if args.json:
        figures = {
            "machine": machine_description(device),
            "shape": list(shape),
            "peak_gflops": peak,
            "mflop_per_sample": flops / 1e6,
            "samples_per_s": rates,
            "epoch_seconds": epoch_seconds,
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
