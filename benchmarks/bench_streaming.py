"""Benchmark ``mmgen.data.streaming``: epoch time and peak memory against in-memory data.

Writes a synthetic mmgen file (two 1×28×28 uint8 modalities, class patterns plus noise, 2-d z,
gzip like every mmgen file) of each size, then times one shuffled epoch (batches of 256, each
batch converted to float32 tensors) in a fresh process per case, so that each peak RSS is the
case's own:

* ``numpy``: the split read into memory as uint8 numpy arrays, batches by fancy indexing;
* ``memory``: today's ``MultimodalDataset`` (float32 in memory) with ``DataLoader(shuffle)``;
* ``stream``: ``StreamingDataset`` through ``streaming_loader`` (``ChunkShuffleSampler``).

    python benchmarks/bench_streaming.py --sizes 60000 1000000

``memory`` is skipped above ``--memory-max`` tuples (a million need about 6 GB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_description  # noqa: E402

from mmgen.data.h5io import (  # noqa: E402
    create_dataset,
    read_split,
    standard_fields,
    to_unit_float,
)
from mmgen.data.header import DatasetHeader, ModalitySource  # noqa: E402

BATCH = 256
BLOCK = 8192


def write_file(path: Path, size: int, test_size: int = 1024) -> None:
    """A synthetic two-modality file of ``size`` train and ``test_size`` test tuples."""
    header = DatasetHeader(
        kind="entangled",
        modalities=("a", "b"),
        sources={m: ModalitySource(name=m) for m in ("a", "b")},
        num_classes=10,
        class_names=tuple(str(k) for k in range(10)),
        latent_dim=2,
        seed=0,
        config={},
    )
    generator = np.random.default_rng(0)
    patterns = generator.integers(0, 256, (10, 28, 28), dtype=np.uint8)
    sizes = {"train": size, "test": test_size}
    with create_dataset(path, header, sizes, standard_fields(["a", "b"], "uint8", 2)) as writer:
        for split, total in sizes.items():
            for start in range(0, total, BLOCK):
                n = min(BLOCK, total - start)
                labels = generator.integers(0, 10, n)
                noise = generator.integers(0, 32, (n, 28, 28), dtype=np.uint8)
                writer.append(
                    split,
                    {
                        "images/a": patterns[labels] // 2 + noise,
                        "images/b": patterns[::-1][labels] // 2 + noise,
                        "labels": labels,
                        "z": generator.normal(size=(n, 2)).astype(np.float32),
                        "code_index": np.arange(start, start + n),
                    },
                )


def epoch(case: str, path: Path, workers: int) -> dict[str, float]:
    """One shuffled epoch of ``case``; seconds to load, seconds of the epoch, tuples seen."""
    start = time.perf_counter()
    seen = 0
    if case == "numpy":
        data = read_split(path, "train")
        loaded = time.perf_counter()
        order = np.random.default_rng(0).permutation(len(data))
        for first in range(0, len(order), BATCH):
            rows = np.sort(order[first : first + BATCH])
            images = {m: torch.from_numpy(to_unit_float(data.images[m][rows])) for m in data.images}
            label = torch.from_numpy(data.labels[rows])
            seen += len(label) + 0 * len(images)
    else:
        from torch.utils.data import DataLoader

        from mmgen.data.h5io import MultimodalDataset
        from mmgen.data.streaming import StreamingDataset, streaming_loader

        if case == "memory":
            dataset = MultimodalDataset(path, "train")
            loader = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
        else:
            dataset = StreamingDataset(path, "train")
            loader = streaming_loader(dataset, BATCH, seed=0, num_workers=workers)
        loaded = time.perf_counter()
        for batch in loader:
            seen += len(batch["label"])
    end = time.perf_counter()
    return {"load_s": loaded - start, "epoch_s": end - loaded, "total_s": end - start, "n": seen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[60_000, 1_000_000])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--memory-max", type=int, default=200_000)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # one measurement, in its own process
        torch.set_num_threads(1)
        figures = epoch(args.case, Path(args.file), args.workers)
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"synthetic-{size}.h5"
            start = time.perf_counter()
            write_file(path, size)
            written = time.perf_counter() - start
            cases = ["numpy", "stream"] + (["memory"] if size <= args.memory_max else [])
            for case in cases:
                command = [sys.executable, __file__, "--case", case, "--file", str(path)]
                command += ["--workers", str(args.workers)]
                output = subprocess.run(command, check=True, capture_output=True, text=True)
                figures = json.loads(output.stdout)
                row = {"size": size, "case": case, "file_mb": path.stat().st_size / 2**20}
                results.append({**row, **figures, "write_s": written})
                print(json.dumps(results[-1]), flush=True)
            path.unlink()
    print(json.dumps({"machine": machine_description(torch.device("cpu")), "results": results}))


if __name__ == "__main__":
    main()
