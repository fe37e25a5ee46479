"""Sources that torchvision reads: tiny files in each loader's exact on-disk format.

SVHN (``.mat`` written by ``scipy.io.savemat``), CIFAR-10/100 (pickled batches), KMNIST, QMNIST
and EMNIST (IDX files). torchvision checks the MD5s of the real SVHN and CIFAR files on every
load; the tiny files cannot match them, so the tests replace the expected MD5 lists *on
torchvision's classes* (``monkeypatch``) with the tiny files' MD5s. The check itself stays on.
"""

from __future__ import annotations

import hashlib
import string
from pathlib import Path

import numpy as np
import pytest

from conftest import write_idx
from mmgen.data.sources import load_split
from tiny_sources import levels, md5, pickle_to

datasets = pytest.importorskip("torchvision.datasets")


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env: Path) -> Path:
    return isolated_data_env


# --- SVHN -------------------------------------------------------------------------------------


def test_svhn_reads_colour_images_channels_first(svhn_root: tuple[Path, dict]) -> None:
    root, written = svhn_root
    for split in ("train", "test"):
        data = load_split("svhn", split, data_dir=root)
        x, digits = written[split]
        assert data.image_shape == (3, 32, 32) and data.images.dtype == np.uint8
        np.testing.assert_array_equal(data.images, x.transpose(3, 2, 0, 1))  # (N, C, H, W)
        np.testing.assert_array_equal(data.labels, digits)  # SVHN's label 10 is the digit 0
        assert data.class_names == tuple(string.digits)
        assert data.files == {f"{split}_32x32.mat": sha256(root / "SVHN" / f"{split}_32x32.mat")}


def test_svhn_with_another_md5_is_refused_on_one_line(svhn_root: tuple[Path, dict]) -> None:
    root, _ = svhn_root
    path = root / "SVHN" / "test_32x32.mat"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ValueError) as error:
        load_split("svhn", "test", data_dir=root)
    message = str(error.value)
    assert "\n" not in message and "MD5" in message and "--download" in message


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- CIFAR ------------------------------------------------------------------------------------


def test_cifar10_reads_pickled_batches(cifar10_root: tuple[Path, dict]) -> None:
    root, batches = cifar10_root
    train = load_split("cifar10", "train", data_dir=root)
    expected = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    assert train.image_shape == (3, 32, 32) and len(train.labels) == 15
    # torchvision stores HWC; mmgen's (N, C, H, W) is the archive's own row layout again.
    np.testing.assert_array_equal(train.images, expected.reshape(-1, 3, 32, 32))
    labels = [label for k in range(1, 6) for label in batches[f"data_batch_{k}"][1]]
    np.testing.assert_array_equal(train.labels, labels)
    assert train.class_names[:3] == ("plane", "car", "bird")  # from batches.meta
    assert set(train.files) == {*(f"data_batch_{k}" for k in range(1, 6)), "batches.meta"}
    test = load_split("cifar10", "test", data_dir=root)
    np.testing.assert_array_equal(test.images, batches["test_batch"][0].reshape(-1, 3, 32, 32))
    assert set(test.files) == {"test_batch", "batches.meta"}


def test_cifar10_classes_by_name(cifar10_root: tuple[Path, dict]) -> None:
    root, batches = cifar10_root
    data = load_split("cifar10", "train", data_dir=root, classes=["truck", "plane", "cat"])
    labels = np.array([label for k in range(1, 6) for label in batches[f"data_batch_{k}"][1]])
    keep = np.isin(labels, [9, 0, 3])
    np.testing.assert_array_equal(data.labels, [{9: 0, 0: 1, 3: 2}[k] for k in labels[keep]])
    expected = np.concatenate([batches[f"data_batch_{k}"][0] for k in range(1, 6)])
    np.testing.assert_array_equal(data.images, expected.reshape(-1, 3, 32, 32)[keep])
    assert data.class_names == ("truck", "plane", "cat")
    assert data.identity()["classes"] == [9, 0, 3]


def test_cifar100_classes_by_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    fine = {"train": np.arange(40) % 20, "test": np.arange(10) % 20 + 5}
    data = {split: levels(rng, len(fine[split]), 3072) for split in fine}
    for split in fine:
        entry = {"data": data[split], "fine_labels": [int(k) for k in fine[split]],
                 "coarse_labels": [0] * len(fine[split])}  # fmt: skip
        pickle_to(folder / split, entry)
    names = [f"class{k:02d}" for k in range(100)]
    pickle_to(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["x"] * 20})
    for attribute, split in (("train_list", "train"), ("test_list", "test")):
        monkeypatch.setattr(datasets.CIFAR100, attribute, [[split, md5(folder / split)]])
    meta = {**datasets.CIFAR100.meta, "md5": md5(folder / "meta")}
    monkeypatch.setattr(datasets.CIFAR100, "meta", meta)

    train = load_split("cifar100", "train", data_dir=tmp_path / "data", classes=["7", "2", "11"])
    keep = np.isin(fine["train"], [7, 2, 11])
    np.testing.assert_array_equal(
        train.labels, [{7: 0, 2: 1, 11: 2}[k] for k in fine["train"][keep]]
    )
    np.testing.assert_array_equal(train.images, data["train"].reshape(-1, 3, 32, 32)[keep])
    assert train.class_names == ("class07", "class02", "class11") and train.num_classes == 3
    full = load_split("cifar100", "test", data_dir=tmp_path / "data")
    assert full.num_classes == 100 and "classes" not in full.identity()


# --- the MNIST family beyond MNIST: KMNIST, QMNIST, EMNIST ---------------------------------


def test_kmnist_raw_files_read_by_torchvision(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    folder = tmp_path / "data" / "KMNIST" / "raw"
    images = {split: levels(rng, 6, 28, 28) for split in ("train", "t10k")}
    for split, array in images.items():
        write_idx(folder / f"{split}-images-idx3-ubyte", array)
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(6, dtype=np.uint8)[::-1])
    data = load_split("kmnist", "test", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(data.images[:, 0], images["t10k"])
    np.testing.assert_array_equal(data.labels, [5, 4, 3, 2, 1, 0])
    assert data.class_names == tuple(datasets.KMNIST.classes) and data.image_shape == (1, 28, 28)


@pytest.mark.parametrize("gz", [False, True])  # torchvision reads raw files, mmgen's reader .gz
def test_qmnist_takes_the_class_column(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(4)
    folder = tmp_path / "data" / "QMNIST" / "raw"
    written = {}
    for split in ("train", "test"):
        images = levels(rng, 5, 28, 28)
        labels = rng.integers(0, 1000, size=(5, 8)).astype(np.int32)  # writer, series, ...
        labels[:, 0] = [3, 1, 4, 1, 5]
        write_idx(folder / f"qmnist-{split}-images-idx3-ubyte", images, gz=gz)
        write_idx(folder / f"qmnist-{split}-labels-idx2-int", labels, gz=gz)
        written[split] = images
    data = load_split("qmnist", "train", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(data.images[:, 0], written["train"])
    np.testing.assert_array_equal(data.labels, [3, 1, 4, 1, 5])
    assert data.class_names == tuple(string.digits)


@pytest.fixture
def emnist_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """EMNIST letters as NIST writes them: images transposed, labels 1..26 (0 unused, "N/A")."""
    rng = np.random.default_rng(5)
    folder = tmp_path / "data" / "EMNIST" / "raw"
    upright = levels(rng, 8, 28, 28)
    labels = np.array([1, 2, 3, 26, 1, 2, 5, 4], dtype=np.uint8)
    for split in ("train", "test"):
        prefix = f"emnist-letters-{split}"
        write_idx(folder / f"{prefix}-images-idx3-ubyte", upright.transpose(0, 2, 1).copy())
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path / "data", upright, labels


def test_emnist_letters_upright_and_from_zero(emnist_root) -> None:
    root, upright, labels = emnist_root
    data = load_split("emnist-letters", "train", data_dir=root)
    np.testing.assert_array_equal(data.images[:, 0], upright)  # transposed back
    np.testing.assert_array_equal(data.labels, labels.astype(np.int64) - 1)
    assert data.class_names == tuple(string.ascii_lowercase)  # torchvision's, without "N/A"


def test_emnist_letters_classes_by_name(emnist_root) -> None:
    root, upright, labels = emnist_root
    data = load_split("emnist-letters", "test", data_dir=root, classes=["c", "a", "b"])
    keep = np.isin(labels, [1, 2, 3])
    np.testing.assert_array_equal(data.labels, [{3: 0, 1: 1, 2: 2}[k] for k in labels[keep]])
    np.testing.assert_array_equal(data.images[:, 0], upright[keep])
    assert data.class_names == ("c", "a", "b") and data.identity()["classes"] == [2, 0, 1]


def test_unknown_or_repeated_classes_are_one_clear_error(emnist_root) -> None:
    root, _, _ = emnist_root
    with pytest.raises(
        ValueError, match=r"has no class 'A'; valid names: a, b, c, .*, z \(or indices 0..25\)"
    ):
        load_split("emnist-letters", "test", data_dir=root, classes=["a", "A"])
    with pytest.raises(ValueError, match="class 'b' of emnist-letters is chosen twice"):
        load_split("emnist-letters", "test", data_dir=root, classes=["a", "b", "b"])
    with pytest.raises(ValueError, match="class '1' of emnist-letters is chosen twice"):
        load_split("emnist-letters", "test", data_dir=root, classes=["b", "1"])  # b is index 1


def test_missing_torchvision_source_names_every_place(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_split("cifar10", "train", data_dir=tmp_path / "given")
    message = str(error.value)
    assert "\n" not in message
    assert f"--data-dir {tmp_path / 'given' / 'cifar-10-batches-py'} (no such folder)" in message
    assert "MMGEN_DATA_DIR (not set)" in message and "cache" in message
    assert "data_batch_1" in message and "--download" in message and "Debian" not in message
