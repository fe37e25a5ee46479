"""``mmgen.h5io``: the writer, the readers and the torch Dataset agree on one schema."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmgen import h5io

MODALITIES = ["mnist", "fashion-mnist"]


def attrs(**changes: object) -> dict[str, object]:
    base = {
        "mmgen_version": "test",
        "kind": "entangled",
        "modalities": MODALITIES,
        "sources": {m: {"name": m} for m in MODALITIES},
        "num_classes": 10,
        "class_names": [str(k) for k in range(10)],
        "latent_dim": 2,
        "has_latent": True,
        "seed": 3,
        "config": {"n_train": 2500},
    }
    return {**base, **changes}


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    index = np.arange(start, stop)
    return {
        "images/mnist": (index[:, None, None] + np.zeros((1, 28, 28))).astype(np.uint8),
        "images/fashion-mnist": np.full((stop - start, 28, 28), 7, np.uint8),
        "labels": index % 10,
        "z": np.stack([index, -index], axis=1).astype(np.float32),
        "code_index": index // 10,
    }


def write(path: Path, pieces: list[int], size: int = 2500) -> Path:
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    with h5io.create_dataset(path, attrs(), {"train": size, "test": 10}, fields) as writer:
        start = 0
        for piece in pieces:
            writer.append("train", rows(start, start + piece))
            start += piece
        writer.append("test", rows(0, 10))
    return path


def test_written_file_reads_back(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", [1000, 1500])
    data = h5io.read_split(path, "train")
    assert len(data) == 2500
    np.testing.assert_array_equal(data.labels, np.arange(2500) % 10)
    np.testing.assert_array_equal(data.images["mnist"][:, 0, 0], np.arange(2500).astype(np.uint8))
    np.testing.assert_array_equal(data.z[:, 1], -np.arange(2500, dtype=np.float32))
    decoded = h5io.read_attrs(path)
    assert decoded["format"] == "mmgen" and decoded["schema_version"] == h5io.SCHEMA_VERSION
    assert decoded["modalities"] == MODALITIES and decoded["config"] == {"n_train": 2500}
    assert decoded["has_latent"] is True and decoded["seed"] == 3
    with h5py.File(path, "r") as handle:
        assert handle["train"].attrs["size"] == 2500
        assert handle["train/images/mnist"].chunks == (h5io.CHUNK_ROWS, 28, 28)
        assert handle["test/labels"].chunks == (10,)


def test_bytes_do_not_depend_on_how_rows_are_appended(tmp_path: Path) -> None:
    one = write(tmp_path / "a.h5", [2500])
    many = write(tmp_path / "b.h5", [7, 993, 1024, 1, 475])
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(many.read_bytes()).digest()


def test_a_short_or_overfull_split_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2000 of its 2500 rows"):
        write(tmp_path / "short.h5", [2000])
    with pytest.raises(ValueError, match="exceed the split size"):
        write(tmp_path / "long.h5", [2000, 501])
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "d.h5"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="--overwrite"):
        write(path, [2500])
    assert path.read_text() == "keep me"
    with pytest.raises(IsADirectoryError, match="folder"):
        h5io.check_output(tmp_path, overwrite=True)


def test_open_dataset_refuses_other_files(tmp_path: Path) -> None:
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not an mmgen dataset"):
        h5io.open_dataset(plain)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an HDF5 file"):
        h5io.open_dataset(text)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        h5io.open_dataset(tmp_path / "missing.h5")


def test_modality_names_are_unique_and_safe() -> None:
    assert h5io.modality_names(["mnist", "mnist", "idx:/data/my digits/", "mnist"]) == [
        "mnist",
        "mnist-2",
        "my-digits",
        "mnist-3",
    ]
    with pytest.raises(ValueError, match="reserved"):
        h5io.modality_names(["mnist", "idx:/tmp/labels"])
    with pytest.raises(ValueError, match="unique"):
        h5io.check_modality_names(["a", "a"])
    with pytest.raises(ValueError, match="invalid modality name 'z'"):
        h5io.check_modality_names(["z", "a"])


def test_torch_dataset_items(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", [2500])
    dataset = h5io.MultimodalDataset(path, "test")
    item = dataset[3]
    assert len(dataset) == 10 and dataset.modalities == MODALITIES
    assert item["images"]["fashion-mnist"].shape == (1, 28, 28)
    assert item["images"]["fashion-mnist"].dtype == torch.float32
    assert torch.allclose(item["images"]["fashion-mnist"], torch.tensor(7 / 255))
    assert item["label"] == 3 and item["z"].tolist() == [3.0, -3.0]
