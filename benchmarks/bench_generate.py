"""Benchmark ``mmgen generate``: decode throughput vs the matmul peak, the whole command vs decode,
peak memory at two sizes, and gzip vs lzf on the images.

Run from the repository root (a minute or two on a 2-core CPU):

    python benchmarks/bench_generate.py --device cpu --sizes 5000 50000

``--shape 3,32,32`` times CVAEs of another image shape (decoded images, no real data);
``--decode-only`` prints the decode figures alone (quick, for interleaved comparisons).

The CVAEs are randomly initialised: speed and memory do not depend on the weights. Compression
is measured on real MNIST / Fashion-MNIST images when ``MMGEN_DATA_DIR`` holds them (decoded
means are smoother, so they compress at least as well), else on decoded images.
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

import h5py
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import (  # noqa: E402
    best_rate,
    count_flops,
    cvae_config,
    machine_description,
    matmul_peak_gflops,
    parse_shape,
)

from mmgen import rng  # noqa: E402
from mmgen.checkpoint import save_checkpoint  # noqa: E402
from mmgen.generate import DECODE_ROWS, to_storage  # noqa: E402
from mmgen.models.cvae import CVAE, FEATURES, build_cvae  # noqa: E402
from mmgen.nn import one_hot  # noqa: E402

CHILD = """
import json, resource, sys, time
from mmgen.generate import GenerateConfig, generate_dataset
folders, out, n, device = sys.argv[1:3], sys.argv[3], int(sys.argv[4]), sys.argv[5]
config = GenerateConfig(n_train=n, n_test=10)
start = time.perf_counter()
generate_dataset(folders, out, config, device=device)
seconds = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "maxrss_kib": peak_kib}))
"""


def make_checkpoints(folder: Path, shape: tuple[int, int, int]) -> list[str]:
    paths = []
    for seed, name in enumerate(("mnist", "fashion-mnist")):
        metadata = {"source": {"name": name, "class_names": [], "files": {}}, "epochs_done": 0}
        model = build_cvae(cvae_config(shape), rng.stream(seed, "init"))
        save_checkpoint(folder / name, model, None, metadata, [])
        paths.append(str(folder / name))
    return paths


def nchw_decode(model: CVAE, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The decoder without its channels-last inference layout, for comparison."""
    decoder = model.decoder
    one = one_hot(labels, model.config.num_classes, z.dtype)
    grid = getattr(decoder, "grid", (14, 14))  # mmgen before #10 had Table 2's 14×14 only
    hidden = decoder.dense(torch.cat([z, one], dim=1)).view(-1, FEATURES, *grid)
    return torch.sigmoid(decoder.deconv(hidden))


def decode_rates(
    device: torch.device, peak: float, shape: tuple[int, int, int]
) -> dict[str, float]:
    """Images/s and GFLOP/s of an NCHW decode and of the generate path (the model's decode)."""
    model = build_cvae(cvae_config(shape), rng.stream(0, "init")).to(device).eval()
    z = torch.randn(DECODE_ROWS, 2, generator=rng.stream(0, "bench-z")).to(device)
    labels = torch.arange(DECODE_ROWS, device=device) % 10
    flops_per_image = count_flops(lambda: model.decode_logits(z[:64], labels[:64])) / 64
    results = {"flops_per_image": flops_per_image}

    def naive() -> int:
        with torch.no_grad():
            nchw_decode(model, z, labels)
        return DECODE_ROWS

    def generate_path() -> int:
        with torch.inference_mode():
            to_storage(model.decode(z, labels), "uint8")
        return DECODE_ROWS

    for name, fn in (("naive", naive), ("decode_only", generate_path)):
        fn()  # warm up
        rate = best_rate(fn, device, repeats=5)
        results[f"{name}_images_per_s"] = rate
        results[f"{name}_gflops"] = rate * flops_per_image / 1e9
        results[f"{name}_fraction_of_peak"] = rate * flops_per_image / 1e9 / peak
    return results


def whole_command(folders: list[str], sizes: list[int], device: str, tmp: Path) -> list[dict]:
    """Run generate in a fresh process per size: tuples/s and the RSS high-water mark."""
    results = []
    for size in sizes:
        out = tmp / f"bench-{size}.h5"
        child = subprocess.run(
            [sys.executable, "-c", CHILD, *folders, str(out), str(size), device],
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads(child.stdout.strip().splitlines()[-1])
        total = size + 10
        results.append(
            {
                "tuples": total,
                "seconds": record["seconds"],
                "tuples_per_s": total / record["seconds"],
                "maxrss_mib": record["maxrss_kib"] / 1024,
                "file_mib": out.stat().st_size / 2**20,
            }
        )
        out.unlink()
    return results


def compression(
    tmp: Path, device: torch.device, shape: tuple[int, int, int]
) -> dict[str, dict[str, float]]:
    """Size and write time of 10,000 × 2 images under gzip-4 and lzf."""
    images = None
    data_dir = os.environ.get("MMGEN_DATA_DIR")
    if data_dir and shape == (1, 28, 28):
        from mmgen.data.sources import load_split

        try:
            images = [
                load_split(name, "train", data_dir=data_dir, limit=10_000).images.reshape(
                    -1, 28, 28
                )  # stored as (N, 28, 28), whatever the mmgen version reads
                for name in ("mnist", "fashion-mnist")
            ]
            origin = "real MNIST + Fashion-MNIST"
        except (FileNotFoundError, ValueError):
            images = None
    if images is None:
        origin = "decoded by random CVAEs"
        images = []
        for seed in range(2):
            model = build_cvae(cvae_config(shape), rng.stream(seed, "init")).to(device).eval()
            with torch.inference_mode():
                z = torch.randn(10_000, 2, device=device)
                labels = torch.arange(10_000, device=device) % 10
                images.append(to_storage(model.decode(z, labels), "uint8"))
    raw = sum(a.nbytes for a in images)
    results: dict[str, dict[str, float]] = {"origin": origin, "raw_mib": raw / 2**20}  # type: ignore[dict-item]
    for name, options in (("gzip-4", {"compression": "gzip", "compression_opts": 4}),
                          ("lzf", {"compression": "lzf"})):  # fmt: skip
        path = tmp / f"{name}.h5"
        start = time.perf_counter()
        with h5py.File(path, "w") as handle:
            for index, array in enumerate(images):
                chunks = (1024, *array.shape[1:])
                handle.create_dataset(str(index), data=array, chunks=chunks, **options)
        seconds = time.perf_counter() - start
        results[name] = {
            "mib": path.stat().st_size / 2**20,
            "ratio": raw / path.stat().st_size,
            "write_mib_per_s": raw / 2**20 / seconds,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--shape", type=parse_shape, default=(1, 28, 28), help="C,H,W")
    parser.add_argument("--decode-only", action="store_true", help="time decoding alone")
    args = parser.parse_args()
    device = torch.device(args.device)
    peak = matmul_peak_gflops(device)
    report = {"machine": machine_description(device), "matmul_peak_gflops": peak}
    report["shape"] = list(args.shape)
    report["decode"] = decode_rates(device, peak, args.shape)
    print(json.dumps(report, indent=2), flush=True)
    if args.decode_only:
        return
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        folders = make_checkpoints(tmp, args.shape)
        report["compression"] = compression(tmp, device, args.shape)
        print(json.dumps(report["compression"], indent=2), flush=True)
        report["generate"] = whole_command(folders, args.sizes, args.device, tmp)
    images_per_tuple = 2
    for record in report["generate"]:
        record["fraction_of_decode_only"] = (
            record["tuples_per_s"] * images_per_tuple / report["decode"]["decode_only_images_per_s"]
        )
    first, last = report["generate"][0], report["generate"][-1]
    report["memory_ratio_largest_vs_smallest"] = last["maxrss_mib"] / first["maxrss_mib"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
