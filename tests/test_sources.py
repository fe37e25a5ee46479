"""mmgen.data.sources: IDX reading and validation, folder resolution, download, registry.

The other sources' formats: test_sources_torchvision.py, test_sources_files.py."""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import FAKE_NUM_TEST, FAKE_NUM_TRAIN, STANDARD_FILES, write_fake_source, write_idx
from mmgen.data.sources import (
    SOURCES,
    SourceData,
    get_source,
    load_split,
    places,
    read_idx,
    resolve_root,
)
from mmgen.data.sources.mnist import IdxFolderSource

ALL_FILES = [name for names in STANDARD_FILES.values() for name in names]


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env: Path) -> Path:
    return isolated_data_env


def decompressed_sha256(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(gzip.decompress(data) if path.suffix == ".gz" else data).hexdigest()


# --- reading IDX files ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_raw_and_gzip(tmp_path: Path, gz: bool) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    wide = np.array([[-1, 70000], [3, 4]], dtype=np.int32)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "images", images, gz=gz)), images)
    read = read_idx(write_idx(tmp_path / "wide", wide, gz=gz))
    np.testing.assert_array_equal(read, wide)
    assert read.dtype == np.int32 and read.flags.writeable


def test_read_idx_detects_gzip_by_content(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, gz=True).rename(tmp_path / "labels-no-suffix")
    np.testing.assert_array_equal(read_idx(path), labels)


def test_read_idx_rejects_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(ValueError, match=r"not-idx is not an IDX file \(magic number 01020801"):
        read_idx(path)


def test_read_idx_rejects_unknown_type_code(tmp_path: Path) -> None:
    path = tmp_path / "odd"
    path.write_bytes(b"\x00\x00\x07\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(ValueError, match="unknown IDX type code 0x07"):
        read_idx(path)


def test_read_idx_rejects_truncated_and_overlong_files(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    with pytest.raises(ValueError, match=r"is truncated: its header declares 3×28×28 values"):
        read_idx(path)
    path.write_bytes(data[:10])
    with pytest.raises(ValueError, match="truncated inside its header"):
        read_idx(path)
    path.write_bytes(data + b"\x00")
    with pytest.raises(ValueError, match="has trailing bytes"):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "images", np.ones((3, 28, 28), np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"images\.gz is not a valid gzip file"):
        read_idx(path)


# --- loading splits ---------------------------------------------------------------------------


def test_load_split_reads_gzip_and_raw_sources(fake_data_root: Path) -> None:
    mnist = load_split("mnist", "train", data_dir=fake_data_root)  # gzipped files
    fashion = load_split("fashion-mnist", "test", data_dir=fake_data_root)  # raw files
    assert mnist.images.shape == (FAKE_NUM_TRAIN, 1, 28, 28) and mnist.images.dtype == np.uint8
    assert fashion.images.shape == (FAKE_NUM_TEST, 1, 28, 28)
    assert mnist.image_shape == fashion.image_shape == (1, 28, 28)
    assert mnist.labels.dtype == np.int64
    np.testing.assert_array_equal(mnist.labels, np.arange(FAKE_NUM_TRAIN) % 10)
    assert mnist.class_names == tuple("0123456789") and mnist.num_classes == 10
    assert fashion.class_names[0] == "T-shirt/top" and fashion.num_classes == 10
    assert mnist.root == str(fake_data_root / "MNIST" / "raw")
    raw_folder = fake_data_root / "MNIST" / "raw"
    assert mnist.files == {
        name: decompressed_sha256(raw_folder / f"{name}.gz") for name in STANDARD_FILES["train"]
    }


def test_identity_is_json_ready(fake_data_root: Path) -> None:
    data = load_split("mnist", "test", data_dir=fake_data_root, limit=5)
    identity = json.loads(json.dumps(data.identity()))
    assert identity == {
        "name": "mnist",
        "split": "test",
        "root": str(fake_data_root / "MNIST" / "raw"),
        "files": data.files,
        "num_images": 5,
    }


def test_limit_keeps_the_first_examples(fake_data_root: Path) -> None:
    full = load_split("fashion-mnist", "train", data_dir=fake_data_root)
    head = load_split("fashion-mnist", "train", data_dir=fake_data_root, limit=7)
    np.testing.assert_array_equal(head.images, full.images[:7])
    np.testing.assert_array_equal(head.labels, full.labels[:7])
    assert head.files == full.files  # checksums identify the whole files
    head.images[0, 0, 0, 0] = 1  # writable, independent of the file buffer
    more = load_split("fashion-mnist", "train", data_dir=fake_data_root, limit=10_000)
    assert len(more.labels) == FAKE_NUM_TRAIN


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(fake_data_root: Path, limit: int) -> None:
    with pytest.raises(ValueError, match=f"positive number of examples, got {limit}"):
        load_split("mnist", "train", data_dir=fake_data_root, limit=limit)


def test_unknown_split_lists_the_valid_ones(fake_data_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'valid'; valid splits: train, test"):
        load_split("mnist", "valid", data_dir=fake_data_root)


def test_images_and_labels_must_agree_in_count(fake_data_root: Path) -> None:
    folder = fake_data_root / "FashionMNIST" / "raw"
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(FAKE_NUM_TEST - 1, np.uint8))
    with pytest.raises(ValueError, match=f"holds {FAKE_NUM_TEST} images but .* holds 29 labels"):
        load_split("fashion-mnist", "test", data_dir=fake_data_root)


@pytest.mark.parametrize("gz", [False, True])  # read by torchvision / by mmgen's IDX reader
def test_images_of_any_size_read_as_one_channel(fake_data_root: Path, gz: bool) -> None:
    folder = fake_data_root / "FashionMNIST" / "raw"
    images = np.arange(FAKE_NUM_TEST * 32 * 20, dtype=np.uint32).reshape(FAKE_NUM_TEST, 32, 20)
    for name in ("t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"):
        (folder / name).unlink(missing_ok=True)
    write_idx(folder / "t10k-images-idx3-ubyte", (images % 251).astype(np.uint8), gz=gz)
    data = load_split("fashion-mnist", "test", data_dir=fake_data_root)
    assert data.image_shape == (1, 32, 20)
    np.testing.assert_array_equal(data.images[:, 0], images % 251)
    tensors = data.as_tensors()
    assert tensors["images"].shape == (FAKE_NUM_TEST, 1, 32, 20)
    np.testing.assert_allclose(tensors["images"].numpy()[:, 0], (images % 251) / 255.0, rtol=1e-6)


def test_images_must_be_unsigned_bytes(fake_data_root: Path) -> None:
    folder = fake_data_root / "MNIST" / "raw"
    write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((FAKE_NUM_TEST, 28, 28), np.int32))
    with pytest.raises(ValueError, match=r"holds int32 data of shape \(30, 28, 28\); mmgen needs"):
        load_split("mnist", "test", data_dir=fake_data_root)


def test_labels_out_of_range_are_rejected(fake_data_root: Path) -> None:
    labels = np.arange(FAKE_NUM_TEST, dtype=np.uint8) % 10
    labels[4] = 10
    write_idx(fake_data_root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte", labels)
    with pytest.raises(ValueError, match=r"holds label 10 in its test split but has 10 classes"):
        load_split("fashion-mnist", "test", data_dir=fake_data_root)


def test_missing_file_is_named(fake_data_root: Path) -> None:
    (fake_data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"MNIST/raw \(lacks t10k-labels-idx1-ubyte\)"):
        load_split("mnist", "train", data_dir=fake_data_root)


# --- registry and idx: folders ----------------------------------------------------------------


def test_get_source_knows_the_registry() -> None:
    assert set(SOURCES) >= {"mnist", "fashion-mnist", "kmnist", "qmnist", "emnist-digits",
                            "emnist-letters", "svhn", "cifar10", "cifar100", "digits"}  # fmt: skip
    assert get_source("mnist") is SOURCES["mnist"]
    assert all(SOURCES[name].can_download for name in SOURCES if name != "digits")


@pytest.mark.parametrize("spec", ["cifar", "MNIST", ""])
def test_unknown_source_lists_the_choices(spec: str) -> None:
    with pytest.raises(ValueError, match=f"unknown source '{spec}'; valid sources: mnist, "):
        get_source(spec)


def test_idx_spec_needs_a_path() -> None:
    for prefix in ("idx:", "folder:", "npz:"):
        with pytest.raises(ValueError, match=f"{prefix}' names no path; write {prefix}PATH"):
            get_source(prefix)


def test_idx_folder_derives_classes_from_labels(tmp_path: Path, fake_data_root: Path) -> None:
    folder = tmp_path / "kuzushiji"
    write_fake_source(folder, style="blocks", gz=False, seed=3)
    labels = np.full(FAKE_NUM_TEST, 2, dtype=np.uint8)
    labels[-1] = 11  # only in the test split: the train split must still see 12 classes
    write_idx(folder / "t10k-labels-idx1-ubyte", labels)
    source = get_source(f"idx:{folder}")
    assert isinstance(source, IdxFolderSource) and not source.can_download
    data = load_split(source, "train", data_dir=fake_data_root)  # data_dir is ignored
    assert data.root == str(folder) and data.name == f"idx:{folder}"
    assert data.class_names == tuple(str(k) for k in range(12))


def test_idx_folder_not_found_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_split(f"idx:{tmp_path / 'nowhere'}", "train", download=True)
    message = str(error.value)
    assert "\n" not in message and "no such folder" in message
    assert "train-images-idx3-ubyte" in message and "--download" not in message


# --- where the files are found ----------------------------------------------------------------


def copy_root(root: Path, destination: Path) -> Path:
    shutil.copytree(root, destination)
    return destination


def test_data_dir_beats_env_beats_cache(
    fake_data_root: Path, tmp_path: Path, isolated_data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_root = copy_root(fake_data_root, tmp_path / "env-root")
    copy_root(fake_data_root, isolated_data_env / "mmgen")
    monkeypatch.setenv("MMGEN_DATA_DIR", str(env_root))
    cache = isolated_data_env / "mmgen" / "MNIST" / "raw"
    assert resolve_root("mnist", data_dir=fake_data_root) == fake_data_root / "MNIST" / "raw"
    assert resolve_root("mnist") == env_root / "MNIST" / "raw"
    # An explicit data_dir that lacks the files falls through to the next place.
    assert resolve_root("mnist", data_dir=tmp_path / "empty") == env_root / "MNIST" / "raw"
    monkeypatch.delenv("MMGEN_DATA_DIR")
    assert resolve_root("mnist") == cache


def test_debian_flat_layout(fake_data_root: Path, tmp_path: Path) -> None:
    debian = places.DEBIAN_DATASETS_DIR / "fashion-mnist"  # a temporary folder in tests
    shutil.copytree(fake_data_root / "FashionMNIST" / "raw", debian)
    for name in ALL_FILES[:2]:  # a mix of gzipped and raw files
        path = debian / name
        path.with_name(f"{name}.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    assert resolve_root("fashion-mnist") == debian
    data = load_split("fashion-mnist", "train")
    assert data.root == str(debian) and len(data.labels) == FAKE_NUM_TRAIN


def test_not_found_names_every_place_on_one_line(
    tmp_path: Path, isolated_data_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MMGEN_DATA_DIR", str(tmp_path / "env-root"))
    with pytest.raises(FileNotFoundError) as error:
        resolve_root("fashion-mnist", data_dir=tmp_path / "given")
    message = str(error.value)
    assert "\n" not in message
    for place in (
        tmp_path / "given" / "FashionMNIST" / "raw",
        tmp_path / "env-root" / "FashionMNIST" / "raw",
        isolated_data_env / "mmgen" / "FashionMNIST" / "raw",
        places.DEBIAN_DATASETS_DIR / "fashion-mnist",
    ):
        assert str(place) in message
    for fix in ("--data-dir ROOT", "MMGEN_DATA_DIR=ROOT", "--download"):
        assert fix in message
    monkeypatch.delenv("MMGEN_DATA_DIR")
    with pytest.raises(FileNotFoundError, match=r"--data-dir \(not set\); MMGEN_DATA_DIR \(not"):
        resolve_root("fashion-mnist")


# --- download ---------------------------------------------------------------------------------


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def mirror(tmp_path: Path, fake_data_root: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP mirror serving the fake MNIST's .gz files; yields (base URL, its folder)."""
    folder = shutil.copytree(fake_data_root / "MNIST" / "raw", tmp_path / "mirror" / "MNIST")
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "mirror"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def fake_md5s(mirror: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """torchvision's MNIST with the MD5s of the fake files: torchvision checks every download
    against its published MD5s, which the tiny fake files cannot match."""
    import torchvision.datasets

    _, folder = mirror
    md5 = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.glob("*.gz")}
    resources = [(name, md5[name]) for name, _ in torchvision.datasets.MNIST.resources]
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    return md5


def cache_contents(cache: Path) -> list[str]:
    return sorted(path.name for path in cache.iterdir()) if cache.is_dir() else []


def test_download_fetches_and_verifies(
    mirror: tuple[str, Path], fake_md5s: dict[str, str], isolated_data_env: Path
) -> None:
    url, _ = mirror
    data = load_split("mnist", "test", download=True, mirrors=[f"{url}/MNIST/"])
    cache = isolated_data_env / "mmgen" / "MNIST" / "raw"
    assert data.root == str(cache)
    # torchvision keeps each .gz beside the file it extracts
    assert cache_contents(cache) == sorted([*ALL_FILES, *(f"{n}.gz" for n in ALL_FILES)])
    assert cache_contents(isolated_data_env / "mmgen") == ["MNIST"]  # no staging folder left
    np.testing.assert_array_equal(data.labels, np.arange(FAKE_NUM_TEST) % 10)


def test_no_download_unless_asked(mirror: tuple[str, Path], fake_md5s: dict[str, str]) -> None:
    url, _ = mirror
    with pytest.raises(FileNotFoundError, match="mnist files not found"):
        load_split("mnist", "test", mirrors=[f"{url}/MNIST/"])


def test_download_mirrors_from_env(
    mirror: tuple[str, Path], fake_md5s: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = mirror
    monkeypatch.setenv("MMGEN_MIRRORS", f"http://127.0.0.1:9/dead, {url}/{{folder}}")
    assert load_split("mnist", "train", download=True).labels.shape == (FAKE_NUM_TRAIN,)


def test_download_checksum_mismatch_leaves_nothing(
    mirror: tuple[str, Path],
    fake_md5s: dict[str, str],
    isolated_data_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torchvision.datasets

    url, _ = mirror
    resources = [(name, "0" * 32 if name.startswith("t10k-images") else md5)
                 for name, md5 in torchvision.datasets.MNIST.resources]  # fmt: skip
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    with pytest.raises(FileNotFoundError) as error:
        resolve_root("mnist", download=True, mirrors=[f"{url}/MNIST"])
    message = str(error.value)
    assert "\n" not in message and "could not download mnist through torchvision" in message
    assert "t10k-images-idx3-ubyte.gz" in message
    # Nothing half-written: neither the files before the bad one nor a staging folder.
    # nothing left, not even the empty folders made for the download (issue 20, item 10)
    assert not (isolated_data_env / "mmgen" / "MNIST").exists()


def test_download_of_a_file_the_server_lacks_fails_on_one_line(
    mirror: tuple[str, Path], fake_md5s: dict[str, str]
) -> None:
    url, folder = mirror
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as error:
        resolve_root("mnist", download=True, mirrors=[f"{url}/MNIST"])
    message = str(error.value)
    assert "\n" not in message and "t10k-labels-idx1-ubyte.gz" in message and "404" in message


def test_download_without_network_fails_on_one_line() -> None:
    with pytest.raises(FileNotFoundError) as error:
        resolve_root("mnist", download=True, mirrors=["http://127.0.0.1:9/"])
    message = str(error.value)
    assert "\n" not in message and "could not download" in message and "127.0.0.1:9" in message


# --- real data --------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("spec, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_real_data_matches_published_checksums(real_data_dir: Path, spec: str, folder: str) -> None:
    sums_path = real_data_dir / "SHA256SUMS.uncompressed"
    if not sums_path.is_file():
        pytest.skip(f"real data: {sums_path} is missing")
    published = dict(
        reversed(line.split()) for line in sums_path.read_text().splitlines() if line.strip()
    )
    for split in ("train", "test"):
        data: SourceData = load_split(spec, split, data_dir=real_data_dir, limit=1000)
        assert data.images.shape == (1000, 1, 28, 28) and data.num_classes == 10
        assert np.bincount(data.labels, minlength=10).min() > 50  # every class present
        for name, sha in data.files.items():
            assert published[f"{folder}/raw/{name}"] == sha
