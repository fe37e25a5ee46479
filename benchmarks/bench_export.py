"""Benchmark ``mmgen export``: the polymnist and hf exports against PIL / pyarrow alone.

Writes a synthetic two-modality file (1×28×28 uint8, class patterns plus noise) of ``--size``
tuples in all (6/7 train, 1/7 test, as MNIST's 60,000 + 10,000), then times:

* ``export polymnist``: mmgen's export (PNG folders + MultiVae tensors + card);
* ``pil alone``: the same images written as PNG files into the same folders with PIL;
* ``export hf``: mmgen's parquet export (+ card);
* ``pyarrow alone``: the same images PNG-encoded with PIL and written with pyarrow as one
  parquet file per split (binary column per modality, label column), no ``datasets``.

    python benchmarks/bench_export.py --size 70000
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from bench_streaming import write_file  # noqa: E402
from common import machine_description  # noqa: E402

from mmgen.data.h5io import read_split  # noqa: E402
from mmgen.export import export  # noqa: E402


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def pil_alone(path: Path, out: Path) -> None:
    for split in ("train", "test"):
        data = read_split(path, split)
        for k, m in enumerate(data.images):
            folder = out / split / f"m{k}"
            folder.mkdir(parents=True)
            for i, (image, label) in enumerate(zip(data.images[m], data.labels, strict=True)):
                Image.fromarray(image[0]).save(folder / f"{i}.{label}.png")


def pyarrow_alone(path: Path, out: Path) -> None:
    out.mkdir()
    for split in ("train", "test"):
        data = read_split(path, split)
        columns = {m: pa.array([png(image[0]) for image in data.images[m]]) for m in data.images}
        columns["label"] = pa.array(data.labels)
        pq.write_table(pa.table(columns), out / f"{split}.parquet")


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=70_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = root / "synthetic.h5"
        write_file(path, args.size * 6 // 7, test_size=args.size - args.size * 6 // 7)
        figures = {
            "export_polymnist_s": timed(export, path, "polymnist", root / "poly"),
            "pil_alone_s": timed(pil_alone, path, root / "pil"),
            "export_hf_s": timed(export, path, "hf", root / "hf"),
            "pyarrow_alone_s": timed(pyarrow_alone, path, root / "arrow"),
        }
        for name in ("poly", "pil", "hf", "arrow"):
            shutil.rmtree(root / name)
    figures["polymnist_ratio"] = figures["export_polymnist_s"] / figures["pil_alone_s"]
    figures["hf_ratio"] = figures["export_hf_s"] / figures["pyarrow_alone_s"]
    print(json.dumps({"size": args.size, "machine": machine_description(torch.device("cpu")),
                      **figures}))  # fmt: skip


if __name__ == "__main__":
    main()
