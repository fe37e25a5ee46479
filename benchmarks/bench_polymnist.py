"""Benchmark ``mmgen polymnist``: the whole command against its decode-only rate.

Run from the repository root (about a minute on a 2-core CPU):

    python benchmarks/bench_polymnist.py --n 5000

Decode-only is the work no PolyMNIST-E file can avoid: the keyed codes and every distinct CVAE
decoding them, thresholded (``mmgen.polymnist.digits_of``), with nothing cropped, composited,
compressed or written. The whole command adds the seeded crops, the composite and the gzip'd
HDF5 writes (on the writer thread; h5io deflates the chunks on DEFLATE_THREADS threads). Two
layouts: five CVAEs (one per modality) and one CVAE shared by five modalities (decoded once per
tuple, so compositing and compression weigh five times more). Compare both sides of a change
in the same session, alternating processes: on a shared machine the ratios move with the load.
The CVAEs are randomly initialised: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import cvae_config, machine_description  # noqa: E402

from mmgen import generate as generating  # noqa: E402
from mmgen import polymnist, rng  # noqa: E402
from mmgen.checkpoint import load_cvae, save_checkpoint  # noqa: E402
from mmgen.models.cvae import build_cvae  # noqa: E402

MODALITIES = 5


def make_checkpoints(folder: Path, count: int) -> list[str]:
    paths = []
    for seed in range(count):
        metadata = {"source": {"name": "mnist", "class_names": [], "files": {}}, "epochs_done": 0}
        model = build_cvae(cvae_config((1, 28, 28)), rng.stream(seed, "init"))
        save_checkpoint(folder / f"cvae{seed}", model, None, metadata, [])
        paths.append(str(folder / f"cvae{seed}"))
    return paths


def decode_only(folders: list[str], config: generating.GenerateConfig) -> float:
    """Tuples/s of drawing codes and decoding them with every distinct CVAE, in steps."""
    keys = [str(Path(f).resolve()) for f in folders]
    models = {k: load_cvae(k).model.eval() for k in dict.fromkeys(keys)}
    grey = [(1, 28, 28)] * len(folders)
    start = time.perf_counter()
    step = generating.DEFAULT_BATCH_SIZE
    for first in range(0, config.n_train, step):
        stop = min(first + step, config.n_train)
        drawn = generating.draw_rows(config, 2, 10, "train", first, stop, grey)
        polymnist.digits_of(config, models, keys, drawn, torch.device("cpu"))
    return config.n_train / (time.perf_counter() - start)


def whole(folders: list[str], config: generating.GenerateConfig, out: Path) -> float:
    start = time.perf_counter()
    polymnist.generate_polymnist(folders, out, config, device="cpu", overwrite=True)
    return (config.n_train + config.n_test) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="train tuples (a multiple of 10)")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many runs each")
    args = parser.parse_args()
    config = generating.GenerateConfig(n_train=args.n, n_test=10)
    results = {"machine": machine_description(torch.device("cpu")), "n": args.n}
    with tempfile.TemporaryDirectory() as tmp:
        folders = make_checkpoints(Path(tmp), MODALITIES)
        for layout, chosen in (("five CVAEs", folders), ("one shared CVAE", folders[:1] * 5)):
            decode = max(decode_only(chosen, config) for _ in range(args.rounds))
            command = max(whole(chosen, config, Path(tmp) / "p.h5") for _ in range(args.rounds))
            results[layout] = {
                "decode_only_tuples_per_s": round(decode, 1),
                "command_tuples_per_s": round(command, 1),
                "command_vs_decode_only": round(command / decode, 3),
                "file_mib": round((Path(tmp) / "p.h5").stat().st_size / 2**20, 2),
            }
            print(layout, results[layout], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
