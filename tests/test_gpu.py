"""The GPU path (issue 9, item 8): every test here runs on a CUDA GPU and skips without one.

What a GPU changes: kernels that are not deterministic unless asked (``--deterministic``), TF32
matrix products that are on by default on recent GPUs, random generators that live on a device,
and the environment record of every artifact. ``make gpu-check`` runs this file and the
benchmarks with ``--device cuda`` in one command.

``MMGEN_TEST_DEVICE=cpu pytest tests/test_gpu.py`` runs the same tests on the CPU: a check of
the tests themselves on a machine without a GPU (the GPU-only assertions then hold trivially).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import make_checkpoint
from mmgen import metrics, rng
from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.device import deterministic, environment, resolve_device
from mmgen.models.cvae import CVAE, CVAEConfig
from mmgen.models.registry import build_model
from mmgen.train import TrainConfig, make_optimizer
from test_evaluate import write_mmgen_file

DEVICE = os.environ.get("MMGEN_TEST_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")

pytestmark = pytest.mark.skipif(
    ON_GPU and not torch.cuda.is_available(),
    reason=f"needs a CUDA GPU: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees "
    "none; run `make gpu-check` on a machine with one, or MMGEN_TEST_DEVICE=cpu to test the "
    "tests",
)
runner = CliRunner()


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def generate(cvaes: list[Path], out: Path, device: str, *extra: str) -> Path:
    flags = [item for folder in cvaes for item in ("--cvae", folder)]
    invoke("generate", *flags, "--out", out, "--n-train", 300, "--n-test", 100,
           "--device", device, "--quiet", *extra)  # fmt: skip
    return out


def images_of(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        return {
            f"{split}/{name}": handle[split]["images"][name][:]
            for split in ("train", "test")
            for name in handle[split]["images"]
        }


@pytest.fixture
def cvaes(tmp_path: Path) -> list[Path]:
    return [
        make_checkpoint(tmp_path / "cvae-mnist", "mnist", seed=0),
        make_checkpoint(tmp_path / "cvae-fashion", "fashion-mnist", seed=1),
    ]


def test_auto_picks_the_gpu() -> None:
    if ON_GPU:
        assert resolve_device("auto").type == "cuda"
        record = environment(resolve_device(DEVICE))
        assert record["device_name"] == torch.cuda.get_device_name()
        assert record["cuda"] == torch.version.cuda and record["cudnn"]


def test_generate_twice_with_deterministic_gives_the_same_bytes(tmp_path, cvaes) -> None:
    first = generate(cvaes, tmp_path / "1.h5", DEVICE, "--deterministic")
    second = generate(cvaes, tmp_path / "2.h5", DEVICE, "--deterministic")
    assert first.read_bytes() == second.read_bytes()


def test_generate_on_the_gpu_decodes_what_the_cpu_decodes(tmp_path, cvaes) -> None:
    # Codes are drawn on the CPU: only the decoder's float rounding may differ, by one grey level.
    on_device = images_of(generate(cvaes, tmp_path / "d.h5", DEVICE, "--deterministic"))
    on_cpu = images_of(generate(cvaes, tmp_path / "c.h5", "cpu"))
    assert on_device.keys() == on_cpu.keys()
    for key, images in on_device.items():
        difference = np.abs(images.astype(np.int16) - on_cpu[key].astype(np.int16))
        assert difference.max() <= 1, key
        assert (difference > 0).mean() < 0.01, key


def test_a_metric_with_a_model_and_generator_on_the_gpu(tmp_path) -> None:
    device = torch.device(DEVICE)
    model = build_model("m2vae", ("a", "b"), seed=0).eval()
    draw = rng.stream(0, "images")
    images = {m: (torch.rand(64, 1, 28, 28, generator=draw) > 0.7).float() for m in "ab"}
    with torch.no_grad(), deterministic():
        on_cpu = metrics.importance_weighted_bound(model, images, 200, rng.stream(0, "iw"))
        model.to(device)
        images = {m: x.to(device) for m, x in images.items()}
        bounds = [
            metrics.importance_weighted_bound(
                model, images, 200, rng.stream(0, "iw", device=device)
            )
            for _ in range(2)
        ]
    assert bounds[0].device.type == device.type
    torch.testing.assert_close(bounds[0], bounds[1], rtol=0, atol=0)  # same key, same numbers
    # Another device's generator draws other codes from the same q(z|a,b): the means of 64
    # bounds agree to within their Monte-Carlo spread (about 0.05 nats between CPU seeds).
    assert abs(bounds[0].mean().item() - on_cpu.mean().item()) < 0.5


def test_a_training_step_on_the_gpu_matches_the_cpu() -> None:
    device = torch.device(DEVICE)
    with deterministic():
        model = CVAE(CVAEConfig())
        draw = rng.stream(0, "batch")
        batch = {
            "images": torch.rand(32, 1, 28, 28, generator=draw),
            "labels": torch.arange(32) % 10,
        }
        z = torch.randn(32, 2, generator=draw)
        with torch.no_grad():
            on_cpu = model.decode(z, batch["labels"])
        model.to(device, memory_format=torch.channels_last)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            on_device = model.decode(z.to(device), batch["labels"])
        # TF32 (10-bit mantissa) would miss this by about 1e-3; deterministic() turns it off.
        torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=0, atol=1e-5)
        before = [p.detach().clone() for p in model.parameters()]
        optimizer = make_optimizer(model.parameters(), TrainConfig())
        loss = model.loss_on(batch, rng.stream(0, "step", device=device))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss) and loss.device.type == device.type
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)


def test_train_cvae_twice_with_deterministic_gives_the_same_weights(
    tmp_path, fake_data_root
) -> None:
    weights = []
    for run in ("one", "two"):
        invoke("train-cvae", "--source", "mnist", "--data-dir", fake_data_root, "--out",
               tmp_path / run, "--epochs", 1, "--limit", 40, "--batch-size", 16, "--device",
               DEVICE, "--deterministic", "--quiet")  # fmt: skip
        weights.append(load_cvae(tmp_path / run, torch.device("cpu")).model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name


def test_evaluate_on_the_gpu_measures_and_records_the_device(tmp_path, fake_data_root) -> None:
    out = tmp_path / "report"
    invoke("evaluate", write_mmgen_file(tmp_path / "mnist-e.h5"), "--out", out,
           "--models", "m2vae,tvae", "--epochs", 1, "--k", 8, "--prior-samples", 20,
           "--joint-samples", 50, "--batch-size", 16, "--classifier-epochs", 1,
           "--data-dir", fake_data_root, "--cache-dir", tmp_path / "cache",
           "--device", DEVICE, "--deterministic", "--quiet")  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    record = report["environment"]
    assert record["device"].startswith(DEVICE)
    assert record["torch"] == torch.__version__
    assert record["deterministic"] is True
    assert record["tf32"] is False and record["cudnn_tf32"] is False
    if ON_GPU:
        assert record["device_name"] == torch.cuda.get_device_name()
        assert record["cuda"] == torch.version.cuda
    for model in ("m2vae", "tvae"):
        figures = report["datasets"]["mnist-e"]["models"][model]
        assert np.isfinite(figures["log_likelihood"])
        assert all(np.isfinite(value) for value in figures["elbo"].values())
