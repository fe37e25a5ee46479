"""Benchmark issue 18's refactor (the house): the same small workload timed on two checkouts.

What changed there that could move speed: the product of experts in log-precision (logsumexp)
arithmetic (MVAE, MoPoE), ``metrics.mixture_kl`` drawing point by point from a per-pair
generator (MMVAE, MoPoE posterior divergences), ``mmgen.metrics`` a package, ``evaluate.py``
split into runner / measure / report. This script times, for one untrained model per kind in
``--models`` (default jmvae, mvae, mmvae, mopoe), on synthetic two-modality 1×28×28 data:

- ``train``: one epoch of ``mmgen.train.fit`` (Adam, batch 128) on ``--train-tuples`` tuples,
  with its test-set pass (best of ``--train-repeats`` fits in the child; ``--train-only``
  skips the measurement);
- ``measure``: the whole measurement of ``evaluate_model`` (everything ``mmgen evaluate``
  measures after training) on ``--test-tuples`` test tuples at small sample counts (``--k``,
  ``--prior-samples``, ``--joint-samples``), with untrained classifiers of the real
  architecture (speed does not depend on the weights).

Each side runs in its own fresh process with its own ``src`` first on ``PYTHONPATH`` and calls
its own API (``mmgen.measure.evaluate_model(..., MeasureSettings, ...)`` where it exists, else
``mmgen.evaluate.evaluate_model(..., EvaluateConfig, ...)``). Rounds interleave the two sides
model by model, alternating which goes first; the best round of each is reported (the shared
machine's load varies minute to minute).

Usage (from the repository root):

    python benchmarks/bench_house.py --base /path/to/old/checkout [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MODALITIES = ("a", "b")
HERE = Path(__file__).resolve()


# ----- the child: one side, one model ---------------------------------------------------------
def synthetic_split(size: int, seed: int):
    """Uniform grey levels ``{m: (N, 1, 28, 28)}``, labels, and true 2-D codes."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    split = {m: torch.randint(0, 256, (size, 1, 28, 28), generator=generator) / 255.0
             for m in MODALITIES}  # fmt: skip
    split["labels"] = torch.arange(size) % 10
    return split, torch.randn(size, 2, generator=generator)


def child(args: argparse.Namespace) -> None:
    import torch

    import mmgen
    from mmgen.classifiers import ClassifierConfig, ImageClassifier, TrainedClassifier
    from mmgen.models.registry import build_model
    from mmgen.train import TrainConfig, fit

    torch.set_num_threads(args.threads)
    counts = {"k": args.k, "prior_samples": args.prior_samples,
              "joint_samples": args.joint_samples}  # fmt: skip
    try:  # after issue 18: mmgen.measure with its own settings
        from mmgen.measure import MeasureSettings, evaluate_model

        settings = MeasureSettings(seed=0, **counts)
    except ImportError:  # before: evaluate.py held it, configured by EvaluateConfig
        from mmgen.evaluate import EvaluateConfig, evaluate_model

        settings = EvaluateConfig(device="cpu", **counts)

    classifiers = {}
    for index, modality in enumerate(MODALITIES):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(index)
            network = ImageClassifier(10, ClassifierConfig()).eval()
        classifiers[modality] = TrainedClassifier(
            network, modality, tuple(map(str, range(10))), 0.0, {}, Path("."), False
        )
    train, train_z = synthetic_split(args.train_tuples, 10)
    test, test_z = synthetic_split(args.test_tuples, 20)
    codes = {"z": (train_z, test_z)}
    config = TrainConfig(epochs=1, batch_size=128, lr=1e-3, optimizer="adam", seed=0)

    train_s = []
    for _ in range(args.train_repeats):  # the same fresh model each time: best of the repeats
        model = build_model(args.child, MODALITIES, seed=0)
        start = time.perf_counter()
        fit(model, train, test, config)
        train_s.append(time.perf_counter() - start)
    model.eval()
    record = {"mmgen": str(Path(mmgen.__file__).parent), "train_s": min(train_s),
              "measure_s": float("nan"), "log_likelihood": float("nan")}  # fmt: skip
    if not args.train_only:
        start = time.perf_counter()
        figures, _ = evaluate_model(model, train, test, classifiers, settings, codes)
        record["measure_s"] = time.perf_counter() - start
        record["log_likelihood"] = figures["log_likelihood"]
    print(json.dumps(record))


# ----- the parent: interleaved rounds ---------------------------------------------------------
def run_side(src: Path, model: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(args.threads)}
    command = [sys.executable, str(HERE), "--child", model, "--threads", str(args.threads),
               "--k", str(args.k), "--prior-samples", str(args.prior_samples),
               "--joint-samples", str(args.joint_samples),
               "--train-tuples", str(args.train_tuples), "--test-tuples", str(args.test_tuples),
               "--train-repeats", str(args.train_repeats)]  # fmt: skip
    if args.train_only:
        command.append("--train-only")
    done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(record["mmgen"]) != src / "mmgen":
        raise SystemExit(f"child imported {record['mmgen']}, not {src / 'mmgen'}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="checkout before the change (its src is used)")
    parser.add_argument("--head", type=Path, default=HERE.parent.parent)
    parser.add_argument("--models", nargs="+", default=["jmvae", "mvae", "mmvae", "mopoe"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-tuples", type=int, default=500)
    parser.add_argument("--test-tuples", type=int, default=200)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--prior-samples", type=int, default=500)
    parser.add_argument("--joint-samples", type=int, default=1000)
    parser.add_argument("--train-repeats", type=int, default=1, help="best of N fits per child")
    parser.add_argument("--train-only", action="store_true", help="skip the measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.base is None:
        parser.error("--base is required")
    sides = {"base": args.base.resolve() / "src", "head": args.head.resolve() / "src"}
    runs: dict[str, dict[str, list[dict]]] = {m: {"base": [], "head": []} for m in args.models}
    for round_index in range(args.rounds):
        for model_index, model in enumerate(args.models):
            order = ("base", "head") if (round_index + model_index) % 2 == 0 else ("head", "base")
            for side in order:
                record = run_side(sides[side], model, args)
                runs[model][side].append(record)
                print(f"round {round_index + 1} {model:6s} {side}: train "
                      f"{record['train_s']:.2f} s, measure {record['measure_s']:.2f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
    summary = {}
    for model, by_side in runs.items():
        best = {side: {part: min(r[part] for r in records) for part in ("train_s", "measure_s")}
                for side, records in by_side.items()}  # fmt: skip
        summary[model] = {
            **{
                f"{side}_{part}": value
                for side, parts in best.items()
                for part, value in parts.items()
            },
            "ratio_train": best["head"]["train_s"] / best["base"]["train_s"],
            "ratio_measure": best["head"]["measure_s"] / best["base"]["measure_s"],
            "log_likelihood": {
                side: records[-1]["log_likelihood"] for side, records in by_side.items()
            },
        }
    print(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "child"},
                      "runs": runs, "best": summary}, indent=2, default=str))  # fmt: skip
    print("model   part     base s  head s  head/base")
    for model, row in summary.items():
        for part in ("train", "measure"):
            print(
                f"{model:7s} {part:8s} {row[f'base_{part}_s']:6.2f}  {row[f'head_{part}_s']:6.2f}"
                f"  {row[f'ratio_{part}']:.2f}"
            )


if __name__ == "__main__":
    main()
