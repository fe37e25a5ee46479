"""The sources as a new user meets them on the command line: ``--classes``, missing data."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from typer.testing import CliRunner

from conftest import assert_one_line_error
from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.data import h5io
from mmgen.data.sources import load_split

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_missing_svhn_is_one_line_naming_every_place(tmp_path: Path, isolated_data_env) -> None:
    result = invoke("train-cvae", "--source", "svhn", "--data-dir", tmp_path / "data",
                    "--out", tmp_path / "c", "-q")  # fmt: skip
    assert_one_line_error(
        result,
        "svhn files not found",
        str(tmp_path / "data" / "SVHN"),
        "MMGEN_DATA_DIR (not set)",
        str(isolated_data_env / "mmgen" / "SVHN"),
        "train_32x32.mat",
        "--download",
    )
    assert not (tmp_path / "c").exists()


def test_train_cvae_records_the_chosen_classes(
    tmp_path: Path, fake_data_root: Path, isolated_data_env
) -> None:
    result = invoke("train-cvae", "--source", "fashion-mnist", "--classes", "Bag,1,Coat",
                    "--data-dir", fake_data_root, "--out", tmp_path / "c", "--epochs", "1",
                    "--batch-size", "16", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    checkpoint = load_cvae(tmp_path / "c")
    assert checkpoint.config.num_classes == 3
    assert checkpoint.source["classes"] == [8, 1, 4]
    assert checkpoint.source["class_names"] == ["Bag", "Trouser", "Coat"]
    again = invoke("train-cvae", "--source", "fashion-mnist", "--classes", "Bag,1",
                   "--data-dir", fake_data_root, "--out", tmp_path / "c", "--epochs", "2",
                   "--batch-size", "16", "-q", "--resume")  # fmt: skip
    assert_one_line_error(again, "--resume: --classes chooses classes [8, 1]", "[8, 1, 4]")


def test_train_cvae_unknown_class_lists_the_valid_ones(
    tmp_path: Path, fake_data_root: Path, isolated_data_env
) -> None:
    result = invoke("train-cvae", "--source", "fashion-mnist", "--classes", "Bag,Hat",
                    "--data-dir", fake_data_root, "--out", tmp_path / "c", "-q")  # fmt: skip
    assert_one_line_error(result, "has no class 'Hat'; valid names: T-shirt/top, Trouser")


def test_pair_with_classes(tmp_path: Path, fake_data_root: Path, isolated_data_env) -> None:
    out = tmp_path / "n.h5"
    result = invoke("pair", "--source", "mnist", "--source", "fashion-mnist", "--classes", "7,2",
                    "--data-dir", fake_data_root, "--out", out, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    header = h5io.read_header(out)
    assert header.num_classes == 2 and header.sources["mnist"].class_names == ("7", "2")
    assert header.sources["fashion-mnist"].class_names == ("Sneaker", "Pullover")
    assert header.config["classes"] == [["7", "2"], ["7", "2"]]
    with h5py.File(out, "r") as handle:
        labels = handle["train/labels"][:]
        index = handle["train/source_index/mnist"][:]
        images = handle["train/images/mnist"][:]
    # source_index counts the rows kept by --classes, in the source's order
    chosen = load_split("mnist", "train", data_dir=fake_data_root, classes=["7", "2"])
    full = load_split("mnist", "train", data_dir=fake_data_root)
    assert set(np.unique(labels)) == {0, 1}
    np.testing.assert_array_equal(chosen.labels[index], labels)
    np.testing.assert_array_equal(chosen.images[index, 0], images)
    # new label 0 is MNIST's 7 and 1 its 2
    np.testing.assert_array_equal(full.images[full.labels == 7], chosen.images[chosen.labels == 0])
    np.testing.assert_array_equal(full.images[full.labels == 2], chosen.images[chosen.labels == 1])


def test_pair_classes_given_once_per_source_or_once(
    tmp_path: Path, fake_data_root: Path, isolated_data_env
) -> None:
    result = invoke("pair", "--source", "mnist", "--source", "fashion-mnist", "--classes", "1",
                    "--classes", "2", "--classes", "3", "--data-dir", fake_data_root,
                    "--out", tmp_path / "n.h5", "-q")  # fmt: skip
    assert_one_line_error(result, "--classes is given 3 times for 2 sources")
