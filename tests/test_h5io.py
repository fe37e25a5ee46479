"""``mmgen.data.h5io`` and ``mmgen.data.header``: the writer, the readers and the torch Dataset
agree on one schema; the header is validated both ways; a failing disk gives an error, never a
crash."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmgen.data import h5io, names
from mmgen.data.header import DatasetHeader, ModalitySource

MODALITIES = ("mnist", "fashion-mnist")


def header(**changes: object) -> DatasetHeader:
    base = {
        "kind": "entangled",
        "modalities": MODALITIES,
        "sources": {m: ModalitySource(name=m) for m in MODALITIES},
        "num_classes": 10,
        "class_names": tuple(str(k) for k in range(10)),
        "latent_dim": 2,
        "seed": 3,
        "config": {"n_train": 2500},
        "environment": {"device": "cpu"},
        "mmgen_version": "test",
    }
    return DatasetHeader(**{**base, **changes})


def rows(start: int, stop: int) -> dict[str, np.ndarray]:
    index = np.arange(start, stop)
    return {
        "images/mnist": (index[:, None, None] + np.zeros((1, 28, 28))).astype(np.uint8),
        "images/fashion-mnist": np.full((stop - start, 28, 28), 7, np.uint8),
        "labels": index % 10,
        "z": np.stack([index, -index], axis=1).astype(np.float32),
        "code_index": index // 10,
    }


def write(path: Path, pieces: list[int], size: int = 2500, overwrite: bool = False) -> Path:
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    with h5io.create_dataset(
        path, header(), {"train": size, "test": 10}, fields, overwrite
    ) as writer:
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
    np.testing.assert_array_equal(
        data.images["mnist"][:, 0, 0, 0], np.arange(2500).astype(np.uint8)
    )
    np.testing.assert_array_equal(data.z[:, 1], -np.arange(2500, dtype=np.float32))
    assert h5io.read_header(path) == header()
    decoded = h5io.read_attrs(path)
    assert decoded["format"] == "mmgen" and decoded["schema_version"] == h5io.SCHEMA_VERSION == 3
    assert decoded["has_latent"] is True and decoded["environment"] == {"device": "cpu"}
    with h5py.File(path, "r") as handle:
        assert handle["train"].attrs["size"] == 2500
        assert handle["train/images/mnist"].chunks == (h5io.CHUNK_ROWS, 28, 28)
        assert handle["test/labels"].chunks == (10,)


def test_bytes_do_not_depend_on_how_rows_are_appended(tmp_path: Path) -> None:
    one = write(tmp_path / "a.h5", [2500])
    many = write(tmp_path / "b.h5", [7, 993, 1024, 1, 475])
    assert hashlib.sha256(one.read_bytes()).digest() == hashlib.sha256(many.read_bytes()).digest()


def random_rows(size: int) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(0)
    return {
        "images/mnist": generator.integers(0, 256, (size, 28, 28), dtype=np.uint8),
        "images/fashion-mnist": (generator.random((size, 28, 28)) < 0.2).astype(np.uint8) * 200,
        "labels": generator.integers(0, 10, size),
        "z": generator.normal(size=(size, 2)).astype(np.float32),
        "code_index": generator.integers(-(2**40), 2**40, size),
    }


def test_chunks_hold_what_hdf5s_own_filters_store(tmp_path: Path) -> None:
    """The writer deflates chunks itself and writes them whole (write_direct_chunk): every
    stored chunk must inflate to what HDF5's own shuffle + gzip pipeline stores for the same
    rows (edge chunk padded with the fill value 0), and h5py must read the rows back."""
    size = 2 * h5io.CHUNK_ROWS + 452  # two whole chunks and an edge chunk
    data = random_rows(size)
    path = tmp_path / "d.h5"
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    with h5io.create_dataset(path, header(), {"train": size, "test": 1}, fields) as writer:
        for start, stop in ((0, 1500), (1500, size)):
            writer.append("train", {k: v[start:stop] for k, v in data.items()})
        writer.append("test", {k: v[:1] for k, v in data.items()})
    reference = h5py.File(tmp_path / "plain.h5", "w")  # HDF5 filters the rows itself
    with h5py.File(path, "r") as handle, reference:
        for split, rows in (("train", size), ("test", 1)):
            for name, array in data.items():
                ours = handle[f"{split}/{name}"]
                shuffle = array.dtype.itemsize > 1
                plain = reference.create_dataset(
                    f"{split}/{name}",
                    data=array[:rows],
                    chunks=ours.chunks,
                    compression="gzip",
                    compression_opts=4,
                    shuffle=shuffle,
                )
                assert (ours.compression, ours.compression_opts) == ("gzip", 4)
                assert ours.shuffle == shuffle
                np.testing.assert_array_equal(ours[()], array[:rows])
                assert ours.id.get_num_chunks() == plain.id.get_num_chunks() == -(-rows // 1024)
                for index in range(plain.id.get_num_chunks()):
                    offset = plain.id.get_chunk_info(index).chunk_offset
                    mask, stored = ours.id.read_direct_chunk(offset)
                    assert mask == 0  # every filter applied
                    reference_chunk = plain.id.read_direct_chunk(offset)[1]
                    expected = zlib.decompress(reference_chunk)
                    assert zlib.decompress(stored) == expected, (split, name, offset)
                    # The zlib header's level class (FLEVEL): deflated at the recorded level.
                    assert stored[1] >> 6 == reference_chunk[1] >> 6


def test_a_field_is_deflated_at_its_own_level(tmp_path: Path) -> None:
    """PolyMNIST-E's composites at level 1, the rest at 4: recorded and applied per field."""
    import dataclasses

    size = 1500
    data = random_rows(size)
    fields = tuple(
        dataclasses.replace(f, level=1) if f.path == "images/mnist" else f
        for f in h5io.standard_fields(MODALITIES, "uint8", 2)
    )
    path = tmp_path / "d.h5"
    with h5io.create_dataset(path, header(), {"train": size, "test": 1}, fields) as writer:
        writer.append("train", data)
        writer.append("test", {k: v[:1] for k, v in data.items()})
    with h5py.File(path, "r") as handle:
        for name, level, flevel in (("images/mnist", 1, 0), ("images/fashion-mnist", 4, 1)):
            dataset = handle[f"train/{name}"]
            assert dataset.compression_opts == level
            np.testing.assert_array_equal(dataset[()], data[name])
            stored = dataset.id.read_direct_chunk((0,) * dataset.ndim)[1]
            assert stored[1] >> 6 == flevel  # zlib's level class: 0 fastest (1), 1 fast (2-5)
            assert stored == zlib.compress(data[name][:1024].reshape(-1), level)


def test_chunks_are_deflated_on_the_writers_threads(tmp_path: Path, monkeypatch) -> None:
    threads = []
    encode = h5io.encode_chunk

    def recording(rows: np.ndarray, chunk_rows: int, level: int) -> bytes:
        threads.append(threading.current_thread().name)
        return encode(rows, chunk_rows, level)

    monkeypatch.setattr(h5io, "encode_chunk", recording)
    write(tmp_path / "d.h5", [2500])
    assert len(threads) == 3 * 5 + 5  # 3 train chunks and 1 test chunk of 5 fields
    assert all(name.startswith("mmgen-deflate") for name in threads)


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
    write(path, [2500], overwrite=True)
    assert h5io.read_header(path).kind == "entangled"


def test_a_second_writer_to_the_same_output_fails(tmp_path: Path) -> None:
    """Both runs checked that ``out`` was free; the one finishing second must not replace it."""
    path = tmp_path / "d.h5"
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    with pytest.raises(FileExistsError, match="appeared while this run was writing"):
        with h5io.create_dataset(path, header(), {"train": 20, "test": 10}, fields) as writer:
            write(path, [20], size=20)  # the other run finishes first
            writer.append("train", rows(0, 20))
            writer.append("test", rows(0, 10))
    assert h5io.read_split(path, "train").images["mnist"][19, 0, 0, 0] == 19  # the first result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_read_only_folder_is_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root may write anywhere and a read-only mount needs privileges: fake what access(2) says.
    monkeypatch.setattr(h5io.os, "access", lambda path, mode: Path(path) != tmp_path)
    with pytest.raises(PermissionError, match=f"{tmp_path} is read-only or not writable"):
        h5io.check_output(tmp_path / "new" / "d.h5", overwrite=False)
    h5io.check_output(tmp_path.parent / "d.h5", overwrite=False)


def test_float_images_are_not_silently_stored_as_uint8(tmp_path: Path) -> None:
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    bad = {**rows(0, 10), "images/mnist": np.full((10, 28, 28), 0.5, np.float32)}
    with pytest.raises(ValueError, match="refusing to store float32 values as uint8"):
        with h5io.create_dataset(
            tmp_path / "d.h5", header(), {"train": 10, "test": 10}, fields
        ) as writer:
            writer.append("train", bad)
    too_large = {**rows(0, 10), "images/mnist": np.full((10, 28, 28), 256, np.int64)}
    with pytest.raises(ValueError, match="int64 values as uint8"):
        with h5io.create_dataset(
            tmp_path / "d.h5", header(), {"train": 10, "test": 10}, fields
        ) as writer:
            writer.append("train", too_large)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_is_an_error_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing like a full disk: HDF5 must never see it (h5py 3.16 / HDF5 2.0 crash the
    process when a file whose write failed is released; this test would die with it)."""
    budget = {"bytes": 20_000}
    real_open = open

    class FullDisk:
        def __init__(self, raw) -> None:
            self.raw = raw

        def write(self, data) -> int:
            if budget["bytes"] < len(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            budget["bytes"] -= len(data)
            return self.raw.write(data)

        def __getattr__(self, name: str):
            return getattr(self.raw, name)

    monkeypatch.setattr(h5io, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    path = tmp_path / "d.h5"
    fields = h5io.standard_fields(MODALITIES, "uint8", 2)
    appended = 0
    with pytest.raises(OSError, match=r"could not write .*d\.h5: No space left on device"):
        with h5io.create_dataset(path, header(), {"train": 25_000, "test": 10}, fields) as writer:
            for start in range(0, 25_000, 1000):
                writer.append("train", rows(start, start + 1000))
                appended += 1
    assert appended < 20  # stopped at the failed write, not after all the work
    assert list(tmp_path.iterdir()) == []


def test_temporaries_of_killed_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    stale = tmp_path / f".d.h5.tmp-{dead}-abcd1234"
    alive = tmp_path / f".d.h5.tmp-{h5io.os.getpid()}-efgh5678"
    other_file = tmp_path / f".e.h5.tmp-{dead}-ijkl9012"
    for path in (stale, alive, other_file):
        path.write_bytes(b"x" * 100)
    write(tmp_path / "d.h5", [2500])
    assert not stale.exists()
    assert alive.exists() and other_file.exists()


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


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda f: f.attrs.__delitem__("kind"), "lacks the root attribute(s) kind"),
        (lambda f: f.attrs.__setitem__("schema_version", 7), "schema version 7"),
        (lambda f: f.attrs.__setitem__("num_classes", 9), "num_classes is 9 but 10 class"),
        (lambda f: f.attrs.__setitem__("has_latent", False), "has_latent is False"),
        (lambda f: f.attrs.__setitem__("sources", "{}"), "no source name for 'mnist'"),
        (lambda f: f.attrs.__setitem__("kind", "blended"), "unknown kind 'blended'"),
        (lambda f: f.__delitem__("train"), "has no 'train' split"),
        (lambda f: f.__delitem__("test/z"), "the test split lacks z"),
        (lambda f: f.__delitem__("test/images/mnist"), "lacks images/mnist"),
    ],
)
def test_damaged_headers_and_layouts_are_one_line_errors(tmp_path: Path, damage, fragment) -> None:
    path = write(tmp_path / "d.h5", [2500])
    with h5py.File(path, "r+") as handle:
        damage(handle)
    for read in (h5io.read_header, lambda p: h5io.read_split(p, "test")):
        with pytest.raises(ValueError, match=f"{path}.*") as error:
            read(path)
        assert fragment in str(error.value) and "\n" not in str(error.value)


def test_a_damaged_chunk_names_the_dataset(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", [2500])
    with h5py.File(path, "r") as handle:
        offset = handle["train/images/mnist"].id.get_chunk_info(1).byte_offset
    with open(path, "r+b") as raw:  # overwrite the compressed chunk with garbage
        raw.seek(offset)
        raw.write(b"\xff" * 64)
    with pytest.raises(ValueError, match="cannot read /train/images/mnist.*damaged"):
        h5io.read_split(path, "train")
    with h5io.open_dataset(path) as handle, pytest.raises(ValueError, match="damaged"):
        h5io.verify_readable(handle, path)


def test_schema_1_files_still_read(tmp_path: Path) -> None:
    """A file in exactly the layout mmgen wrote before the typed header (schema 1)."""
    path = tmp_path / "v1.h5"
    sources = {
        "mnist": {"name": "mnist", "class_names": ["0", "1"], "files": {},
                  "checkpoint": "runs/cvae-mnist", "checkpoint_sha256": "ab" * 32},
        "scan.v2": {"name": "idx:/data/scan.v2", "class_names": ["0", "1"], "files": {},
                    "checkpoint": "runs/cvae-scan", "checkpoint_sha256": "cd" * 32},
    }  # fmt: skip
    attrs = {
        "format": "mmgen", "schema_version": 1, "mmgen_version": "0.1.0", "kind": "entangled",
        "modalities": json.dumps(["mnist", "scan.v2"]), "sources": json.dumps(sources),
        "num_classes": 2, "class_names": json.dumps(["0", "1"]), "latent_dim": 2,
        "has_latent": True, "seed": 4, "config": json.dumps({"n_train": 4, "radius": 2.0}),
    }  # fmt: skip
    with h5py.File(path, "w") as handle:
        handle.attrs.update(attrs)
        for split in ("train", "test"):
            group = handle.create_group(split)
            group.attrs["size"] = 4
            for m in ("mnist", "scan.v2"):
                group[f"images/{m}"] = np.full((4, 28, 28), 51, np.uint8)
            group["labels"] = np.array([0, 1, 0, 1], np.int64)
            group["z"] = np.zeros((4, 2), np.float32)
            group["code_index"] = np.array([0, 0, 1, 1], np.int64)
    read = h5io.read_header(path)
    assert read.schema_version == 1 and read.modalities == ("mnist", "scan.v2")
    assert read.sources["scan.v2"].checkpoint == "runs/cvae-scan" and read.environment == {}
    assert read.config == {"n_train": 4, "radius": 2.0} and read.class_names == ("0", "1")
    assert read.has_latent and read.seed == 4
    assert read.image_shapes == {"mnist": (1, 28, 28), "scan.v2": (1, 28, 28)}  # no shape stored
    data = h5io.read_split(path, "test")
    assert data.images["scan.v2"].shape == (4, 1, 28, 28)  # readers give (N, C, H, W)
    np.testing.assert_allclose(data.images_float("scan.v2"), 0.2)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"kind": "naive"}, "naive dataset cannot have latent_dim 2"),
        ({"latent_dim": 0}, "entangled dataset cannot have latent_dim 0"),
        ({"class_names": ("a",)}, "num_classes is 10 but 1 class names"),
        ({"modalities": ("mnist", "a+b")}, "invalid modality name 'a+b'"),
        ({"seed": 2**64}, "--seed 18446744073709551616 is out of range"),
        ({"config": {"radius": float("inf")}}, "standard JSON cannot store"),
        ({"parent": {"path": "x"}}, "entangled dataset has no parent"),
    ],
)
def test_header_validation(changes: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment.replace("+", r"\+")):
        header(**changes)
    assert dataclasses.replace(header(), seed=5).seed == 5


def test_modality_names_share_one_rule() -> None:
    assert names.derive_modality_names(
        ["mnist", "mnist", "idx:/data/my digits/", "mnist", "idx:/data/scan.v2", "idx:a+b"]
    ) == ["mnist", "mnist-2", "my-digits", "mnist-3", "scan-v2", "a-b"]
    with pytest.raises(ValueError, match="reserved"):
        names.derive_modality_names(["mnist", "idx:/tmp/labels"])
    with pytest.raises(ValueError, match="distinct"):
        names.check_modality_names(["a", "a"])
    for bad in ("z", "images", "a+b", "scan.v2", "-x", "", "a/b", "é"):
        with pytest.raises(ValueError, match="invalid modality name"):
            names.check_modality_name(bad)
    names.check_modality_names(["fashion-mnist", "mnist_2", "A9"])


def test_torch_dataset_items(tmp_path: Path) -> None:
    path = write(tmp_path / "d.h5", [2500])
    dataset = h5io.MultimodalDataset(path, "test")
    item = dataset[3]
    assert len(dataset) == 10 and dataset.modalities == list(MODALITIES)
    assert item["images"]["fashion-mnist"].shape == (1, 28, 28)
    assert item["images"]["fashion-mnist"].dtype == torch.float32
    assert torch.allclose(item["images"]["fashion-mnist"], torch.tensor(7 / 255))
    assert item["label"] == 3 and item["z"].tolist() == [3.0, -3.0]


SHAPES = {"grey": (1, 28, 28), "colour": (3, 32, 32), "digits": (1, 8, 8)}


def shaped_header() -> DatasetHeader:
    sources = {m: ModalitySource(name=m, image_shape=shape) for m, shape in SHAPES.items()}
    return header(modalities=tuple(SHAPES), sources=sources)


def shaped_rows(start: int, stop: int) -> dict[str, np.ndarray]:
    index = np.arange(start, stop)
    images = {
        f"images/{m}": ((index[:, None] * 7 + np.arange(np.prod(shape))) % 251)
        .astype(np.uint8)
        .reshape(len(index), *shape)
        for m, shape in SHAPES.items()
    }
    grey = {m for m, shape in SHAPES.items() if shape[0] == 1}
    stored = {k: v[:, 0] if k.removeprefix("images/") in grey else v for k, v in images.items()}
    return {**stored, "labels": index % 10, "z": np.zeros((len(index), 2), np.float32),
            "code_index": index}  # fmt: skip


def test_each_modality_is_stored_and_read_at_its_own_shape(tmp_path: Path) -> None:
    path = tmp_path / "shapes.h5"
    fields = h5io.standard_fields(shaped_header().image_shapes, "uint8", 2)
    with h5io.create_dataset(path, shaped_header(), {"train": 30, "test": 10}, fields) as writer:
        writer.append("train", shaped_rows(0, 30))
        writer.append("test", shaped_rows(30, 40))
    with h5py.File(path, "r") as handle:  # grey as (N, H, W), as before; colour (N, C, H, W)
        assert handle["train/images/grey"].shape == (30, 28, 28)
        assert handle["train/images/digits"].shape == (30, 8, 8)
        assert handle["train/images/colour"].shape == (30, 3, 32, 32)
        sources = json.loads(handle.attrs["sources"])
        assert "image_shape" not in sources["grey"]  # 1×28×28 files keep their header bytes
        assert sources["colour"]["image_shape"] == [3, 32, 32]
    assert h5io.read_header(path).image_shapes == SHAPES
    data = h5io.read_split(path, "test")
    expected = shaped_rows(30, 40)
    for m, shape in SHAPES.items():
        assert data.images[m].shape == (10, *shape)
        np.testing.assert_array_equal(data.images[m].reshape(10, -1),
                                      expected[f"images/{m}"].reshape(10, -1))  # fmt: skip
    item = h5io.MultimodalDataset(path, "train")[4]
    assert {m: tuple(v.shape) for m, v in item["images"].items()} == SHAPES
    np.testing.assert_allclose(
        item["images"]["colour"].numpy(), shaped_rows(4, 5)["images/colour"][0] / 255.0
    )


def test_images_that_disagree_with_the_recorded_shape_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "shapes.h5"
    fields = h5io.standard_fields(shaped_header().image_shapes, "uint8", 2)
    with h5io.create_dataset(path, shaped_header(), {"train": 3, "test": 1}, fields) as writer:
        writer.append("train", shaped_rows(0, 3))
        writer.append("test", shaped_rows(3, 4))
    with h5py.File(path, "r+") as handle:
        sources = json.loads(handle.attrs["sources"])
        sources["colour"]["image_shape"] = [3, 28, 28]
        handle.attrs["sources"] = json.dumps(sources)
    with pytest.raises(ValueError, match="'colour' have rows of shape .*records 3×28×28"):
        h5io.read_split(path, "train")
    with pytest.raises(ValueError, match="three positive integers"):
        ModalitySource(name="x", image_shape=(3, 0, 32))
