"""``mmgen train-cvae`` and the root command, end to end through typer's CliRunner."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error
from mmgen import __version__
from mmgen.cli import app

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
        (["--source", "svhn"], ["unknown source 'svhn'", "mnist"]),
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
    import torch

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
