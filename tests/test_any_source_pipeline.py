"""A new user's path with sources other than MNIST: train-cvae → generate → shuffle → inspect.

SVHN (3×32×32, ``.mat``), CIFAR-10 with ``--classes`` (3×32×32, pickled batches) and an image
folder (1×8×8 PNGs) in their exact on-disk formats (fixtures of ``tiny_sources.py``), through the
command line as documented in docs/sources.md; the generated file keeps each modality at its own
shape and its class mapping.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.data import h5io
from test_sources_files import write_pngs

runner = CliRunner()
QUICK = ("--epochs", "1", "--batch-size", "4", "-q")


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env: Path) -> Path:
    return isolated_data_env


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def grey_folder(root: Path) -> Path:
    """ROOT/{train,test}/{airplane,cat,ship}/*.png: 8×8 grey images, each class its own level."""
    generator = np.random.default_rng(3)
    for split, count in (("train", 4), ("test", 2)):
        images = {name: [np.clip(generator.normal(60 * k + 40, 20, (8, 8)), 0, 255).astype(np.uint8)
                         for _ in range(count)]
                  for k, name in enumerate(("airplane", "cat", "ship"))}  # fmt: skip
        write_pngs(root, split, images)
    return root


def test_svhn_trains_a_colour_cvae(tmp_path: Path, svhn_root) -> None:
    root, _ = svhn_root
    result = invoke("train-cvae", "--source", "svhn", "--data-dir", root,
                    "--out", tmp_path / "svhn", *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    checkpoint = load_cvae(tmp_path / "svhn")
    assert checkpoint.image_shape == (3, 32, 32)
    assert checkpoint.config.num_classes == 10 and checkpoint.source["name"] == "svhn"


def test_cifar10_classes_and_a_folder_make_one_mixed_shape_file(tmp_path: Path, cifar10_root):
    root, _ = cifar10_root
    cifar = invoke("train-cvae", "--source", "cifar10", "--classes", "plane,cat,ship",
                   "--data-dir", root, "--out", tmp_path / "cifar", *QUICK)  # fmt: skip
    assert cifar.exit_code == 0, cifar.output
    checkpoint = load_cvae(tmp_path / "cifar")
    assert checkpoint.source["classes"] == [0, 3, 8]
    assert checkpoint.source["class_names"] == ["plane", "cat", "ship"]
    assert checkpoint.image_shape == (3, 32, 32) and checkpoint.config.num_classes == 3

    folder = grey_folder(tmp_path / "pics")
    grey = invoke("train-cvae", "--source", f"folder:{folder}", "--out", tmp_path / "grey",
                  *QUICK)  # fmt: skip
    assert grey.exit_code == 0, grey.output
    assert load_cvae(tmp_path / "grey").image_shape == (1, 8, 8)

    out = tmp_path / "mixed-e.h5"
    generated = invoke("generate", "--cvae", tmp_path / "cifar", "--cvae", tmp_path / "grey",
                       "--out", out, "--n-train", 6, "--n-test", 3, "--seed", 0, "-q",
                       "--allow-collapsed")  # one epoch on a few images: collapsed  # fmt: skip
    assert generated.exit_code == 0, generated.output
    header = h5io.read_header(out)
    assert header.image_shapes == {"cifar10": (3, 32, 32), "pics": (1, 8, 8)}
    with h5py.File(out, "r") as file:
        assert file["train/images/cifar10"].shape == (6, 3, 32, 32)
        assert file["train/images/pics"].shape == (6, 8, 8)  # grey: stored (N, H, W)
    split = h5io.read_split(out, "train")
    assert split.images["cifar10"].shape == (6, 3, 32, 32)
    assert split.images["pics"].shape == (6, 1, 8, 8)

    shuffled = invoke("shuffle", out, "--out", tmp_path / "mixed-me.h5", "-q")
    assert shuffled.exit_code == 0, shuffled.output
    picture = invoke("inspect", out, "--out", tmp_path / "mixed.png", "--cvae", tmp_path / "cifar",
                     "--cvae", tmp_path / "grey")  # fmt: skip
    assert picture.exit_code == 0, picture.output
    assert "3×32×32" in picture.output and "1×8×8" in picture.output
    assert (tmp_path / "mixed.png").stat().st_size > 0


def test_a_folder_of_odd_sized_images_is_refused_on_one_line(tmp_path: Path) -> None:
    generator = np.random.default_rng(0)
    for split in ("train", "test"):
        write_pngs(tmp_path / "odd", split,
                   {"a": [generator.integers(0, 256, (6, 5), np.uint8)]})  # fmt: skip
    result = invoke("train-cvae", "--source", f"folder:{tmp_path / 'odd'}",
                    "--out", tmp_path / "c", *QUICK)  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "even" in result.output and not (tmp_path / "c").exists()


def test_default_beta_is_four_per_784_pixels_and_resume_keeps_it(
    tmp_path: Path, fake_data_root: Path
) -> None:
    mnist = invoke("train-cvae", "--source", "mnist", "--data-dir", fake_data_root,
                   "--out", tmp_path / "mnist", *QUICK)  # fmt: skip
    assert mnist.exit_code == 0, mnist.output
    assert load_cvae(tmp_path / "mnist").config.beta == 4.0  # the released MNIST-E's, exactly

    folder = grey_folder(tmp_path / "pics")
    first = invoke("train-cvae", "--source", f"folder:{folder}", "--out", tmp_path / "grey",
                   *QUICK)  # fmt: skip
    assert first.exit_code == 0, first.output
    assert load_cvae(tmp_path / "grey").config.beta == pytest.approx(4 * 64 / 784)
    resumed = invoke("train-cvae", "--source", f"folder:{folder}", "--out", tmp_path / "grey",
                     "--resume", "--epochs", "2", "--batch-size", "4", "-q")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output  # shape and β from the data, not refused
    assert load_cvae(tmp_path / "grey").metadata["epochs_done"] == 2
    other = invoke("train-cvae", "--source", f"folder:{folder}", "--out", tmp_path / "grey",
                   "--resume", "--epochs", "3", "--beta", "4", *QUICK[2:])  # fmt: skip
    assert other.exit_code == 2 and "--beta 4.0 (saved: 0.326" in other.output
