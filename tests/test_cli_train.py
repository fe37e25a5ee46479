"""``mmgen train-cvae`` and the root command, end to end through typer's CliRunner."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from conftest import assert_one_line_error
from mmgen import __version__
from mmgen.checkpoint import holds_model, load_cvae
from mmgen.cli import app
from mmgen.cvae_training import train_cvae
from mmgen.train import TrainConfig

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_the_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "train-cvae" in result.output


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert __version__ in result.output


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mmgen", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "train-cvae" in result.stdout


def test_train_cvae_end_to_end(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    result = invoke(
        "train-cvae",
        "--source",
        "fashion-mnist",
        "--out",
        out,
        "--data-dir",
        fake_data_root,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output
    assert (out / "samples.png").is_file() and (out / "latent.png").is_file()
    resumed = invoke(
        "train-cvae",
        "--source",
        "fashion-mnist",
        "--out",
        out,
        "--data-dir",
        fake_data_root,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--resume",
        "--quiet",
    )
    assert resumed.exit_code == 0, resumed.output
    assert "2 epochs" in resumed.output


def test_data_dir_comes_from_the_environment(tmp_path, fake_data_root, monkeypatch) -> None:
    monkeypatch.setenv("MMGEN_DATA_DIR", str(fake_data_root))
    result = invoke(
        "train-cvae",
        "--source",
        "mnist",
        "--out",
        tmp_path / "c",
        "--epochs",
        "1",
        "--limit",
        "20",
        "--quiet",
    )
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--source", "svhm"], ["unknown source 'svhm'", "mnist"]),
        (["--source", "mnist", "--epochs", "0"], ["epochs must be > 0"]),
        (["--source", "mnist", "--beta", "-1"], ["beta must be >= 0"]),
        (["--source", "mnist", "--latent-dim", "0"], ["latent_dim must be > 0"]),
        (["--source", "mnist", "--limit", "-5"], ["--limit must be > 0"]),
        (["--source", "mnist", "--lr", "0"], ["lr must be > 0"]),
        (["--source", "mnist", "--resume"], ["no checkpoint to resume"]),
    ],
)
def test_user_mistakes_end_in_one_line(tmp_path, fake_data_root, args, fragments) -> None:
    result = invoke(
        "train-cvae", "--out", tmp_path / "c", "--data-dir", fake_data_root, "--quiet", *args
    )
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "c" / "weights.pt").exists()


def test_missing_data_names_the_places_searched(tmp_path, isolated_data_env) -> None:
    result = invoke("train-cvae", "--source", "mnist", "--out", tmp_path / "c", "--quiet")
    assert_one_line_error(result, "MMGEN_DATA_DIR", "--data-dir")


def test_unknown_device_is_rejected_by_the_parser(tmp_path, fake_data_root) -> None:
    result = invoke("train-cvae", "--source", "mnist", "--out", tmp_path / "c", "--device", "tpu")
    assert result.exit_code == 2
    assert "tpu" in result.output


def test_cuda_without_a_gpu_is_one_line(tmp_path, fake_data_root) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the error path needs one without")
    result = invoke(
        "train-cvae",
        "--source",
        "mnist",
        "--out",
        tmp_path / "c",
        "--data-dir",
        fake_data_root,
        "--device",
        "cuda",
        "--quiet",
    )
    assert_one_line_error(result, "no CUDA GPU")


def train_args(out, data_root, *extra: str) -> list[str]:
    return [
        "train-cvae",
        "--source",
        "mnist",
        "--out",
        str(out),
        "--data-dir",
        str(data_root),
        "--batch-size",
        "16",
        *extra,
    ]


def test_resume_names_every_changed_flag(tmp_path, fake_data_root) -> None:
    """The issue's case: an MNIST run resumed with another source, latent size and β."""
    out = tmp_path / "c"
    assert invoke(*train_args(out, fake_data_root, "--epochs", "1", "--quiet")).exit_code == 0
    args = train_args(out, fake_data_root, "--epochs", "2", "--resume", "--quiet")
    args[2] = "fashion-mnist"
    result = invoke(*args, "--latent-dim", "8", "--beta", "1")
    assert_one_line_error(
        result,
        "--source fashion-mnist (saved: mnist)",
        "--latent-dim 8 (saved: 2)",
        "--beta 1.0 (saved: 4.0)",
    )
    assert json.loads((out / "model.json").read_text())["run"]["epochs_done"] == 1


def test_a_damaged_checkpoint_is_one_line_without_unsafe_advice(tmp_path, fake_data_root) -> None:
    out = tmp_path / "c"
    assert invoke(*train_args(out, fake_data_root, "--epochs", "1", "--quiet")).exit_code == 0
    (out / "weights.pt").write_bytes((out / "weights.pt").read_bytes()[:1000])
    result = invoke(*train_args(out, fake_data_root, "--epochs", "2", "--resume", "--quiet"))
    assert_one_line_error(result, "damaged", "weights.pt")
    assert "weights_only" not in result.output


def cli(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m mmgen`` in a child process, one thread (the in-process tests use one)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mmgen", *args],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_epoch_lines(process: subprocess.Popen, count: int = 1) -> list[float]:
    """Read the child's stderr up to its ``count``-th ``epoch k/E`` line; the times of each.

    Each line is printed right after that epoch's checkpoint was saved. Fewer times come back
    when the child ended first.
    """
    times = []
    for line in process.stderr:
        if line.startswith("epoch "):
            times.append(time.monotonic())
            if len(times) == count:
                break
    return times


def test_a_second_writer_fails_and_sigterm_ends_the_first_cleanly(tmp_path, fake_data_root) -> None:
    """One running train-cvae: a second one into its folder is refused in one line; SIGTERM
    then ends the first like Ctrl-C, leaves no temporary and says how to resume."""
    out = tmp_path / "c"
    process = cli(*train_args(out, fake_data_root, "--epochs", "50"))
    try:
        assert wait_for_epoch_lines(process)
        second = invoke(*train_args(out, fake_data_root, "--epochs", "1", "--quiet"))
        assert_one_line_error(second, f"another process is writing {out}")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Interrupted (SIGTERM)" in stderr and "--resume" in stderr, stderr
    assert "Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "data"]  # no temporaries, no lock
    epochs = json.loads((out / "model.json").read_text())["run"]["epochs_done"]
    assert f"({epochs} epochs)" in stderr


def test_resume_after_kills_at_random_points_equals_an_uninterrupted_run(
    tmp_path, fake_data_root
) -> None:
    """SIGKILL lands anywhere in an epoch (training, saving, swapping); --resume finishes the run.

    A child is killed at a seeded random fraction of one epoch after an epoch's checkpoint was
    written; the fraction leans to the epoch's end, where the next checkpoint is being saved.
    Three kills, then a --resume to the end: the weights equal those of an uninterrupted run bit
    for bit, and no temporary survives.
    """
    epochs = 9
    straight = train_cvae(
        tmp_path / "straight",
        "mnist",
        train_config=TrainConfig(epochs=epochs, batch_size=16),
        data_dir=fake_data_root,
    )
    out = tmp_path / "killed"
    rng = random.Random(12)
    for _ in range(3):
        resume = ["--resume"] if holds_model(out) else []
        process = cli(*train_args(out, fake_data_root, "--epochs", str(epochs), *resume))
        times = wait_for_epoch_lines(process, 2)
        if len(times) == 2:
            time.sleep(rng.uniform(0.5, 1.0) * (times[1] - times[0]))
        process.kill()
        process.communicate(timeout=60)
    final = cli(*train_args(out, fake_data_root, "--epochs", str(epochs), "--resume", "--quiet"))
    _, stderr = final.communicate(timeout=120)
    assert final.returncode == 0, stderr
    resumed = load_cvae(out)
    assert resumed.metadata["epochs_done"] == epochs
    assert [record["epoch"] for record in resumed.history] == list(range(1, epochs + 1))
    expected = straight.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "killed", "straight"]
