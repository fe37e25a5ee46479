"""Shared test helpers: tiny fake MNIST-like data on disk, an isolated data environment, and the
real data folder for the tests marked ``slow``.

Fixtures:
    fake_data_root: a data root in torchvision's layout (``MNIST/raw`` gzipped,
        ``FashionMNIST/raw`` raw) with 60 train / 30 test 28×28 images per source, 10 balanced
        classes, each class a distinct pattern that a small model learns in a few steps.
        Use it as ``data_dir`` (the CLI's ``--data-dir``).
    isolated_data_env: no ``MMGEN_DATA_DIR`` / ``MMGEN_MIRRORS``, an empty temporary user cache
        and Debian folder, so a test never reads or writes the user's real data.
    real_data_dir: the folder named by ``MMGEN_DATA_DIR`` when it holds both real sources;
        skips otherwise.

``write_idx``, ``fake_images`` and ``make_checkpoint`` are plain functions:
``from conftest import make_checkpoint``.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mmgen import rng
from mmgen.checkpoint import save_checkpoint
from mmgen.models.cvae import CVAEConfig, build_cvae
from tiny_sources import cifar10_root, svhn_root  # noqa: F401 (fixtures for every module)

# The tests run tiny tensors, for which thread start-up costs more than it saves (about 3× the
# suite's time on the 2-core CI machines).
torch.set_num_threads(1)

FAKE_NUM_TRAIN = 60
FAKE_NUM_TEST = 30
FAKE_NUM_CLASSES = 10
IDX_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}
STANDARD_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` (uint8 or int32) as an IDX file; with ``gz``, gzip it and append ``.gz``.

    Returns:
        The path written (``path`` or ``path.gz``).
    """
    array = np.asarray(array)
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path = Path(path)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data, compresslevel=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def fake_images(labels: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """Return (N, 28, 28) uint8 images whose class is obvious from a pattern, plus noise.

    Args:
        labels: (N,) classes in 0..9.
        style: ``"blocks"`` (class k lights a 7×7 block at cell k of a 4×4 grid) or
            ``"stripes"`` (class k lights a 2-row band at rows 4 + 2k .. 5 + 2k).
        rng: the source of the background noise and the brightness jitter.
    """
    images = rng.integers(0, 40, size=(len(labels), 28, 28), dtype=np.uint8)
    bright = rng.integers(200, 256, size=(len(labels), 1, 1), dtype=np.uint8)
    pattern = np.zeros((FAKE_NUM_CLASSES, 28, 28), dtype=bool)
    for label in range(FAKE_NUM_CLASSES):
        if style == "blocks":
            row, col = divmod(label, 4)
            pattern[label, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7] = True
        else:
            pattern[label, 4 + 2 * label : 6 + 2 * label, 4:24] = True
    mask = pattern[labels]  # (N, 28, 28)
    return np.where(mask, bright, images).astype(np.uint8)


def write_fake_source(folder: Path, style: str, gz: bool, seed: int) -> None:
    """Write the four standard IDX files of a fake source into ``folder``."""
    rng = np.random.default_rng(seed)
    for split, size in (("train", FAKE_NUM_TRAIN), ("test", FAKE_NUM_TEST)):
        labels = (np.arange(size) % FAKE_NUM_CLASSES).astype(np.uint8)  # balanced, interleaved
        images_name, labels_name = STANDARD_FILES[split]
        write_idx(folder / images_name, fake_images(labels, style, rng), gz=gz)
        write_idx(folder / labels_name, labels, gz=gz)


@pytest.fixture
def fake_data_root(tmp_path: Path) -> Path:
    """A fake data root: ``MNIST/raw`` (gzipped, blocks) and ``FashionMNIST/raw`` (raw, stripes).

    Each source: 60 train / 30 test images, labels ``i % 10`` (balanced, every prefix of 10
    holds each class once).
    """
    root = tmp_path / "data"
    write_fake_source(root / "MNIST" / "raw", style="blocks", gz=True, seed=0)
    write_fake_source(root / "FashionMNIST" / "raw", style="stripes", gz=False, seed=1)
    return root


@pytest.fixture
def isolated_data_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Hide every real data location; return the temporary cache base (``XDG_CACHE_HOME``)."""
    from mmgen.data.sources import places

    monkeypatch.delenv("MMGEN_DATA_DIR", raising=False)
    monkeypatch.delenv("MMGEN_MIRRORS", raising=False)
    cache_base = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_base))
    monkeypatch.setattr(places, "DEBIAN_DATASETS_DIR", tmp_path / "debian-datasets")
    return cache_base


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real data root from ``MMGEN_DATA_DIR``; skips when it is unset or lacks the files.

    Session-scoped so that it reads the variable before ``isolated_data_env`` hides it.
    """
    value = os.environ.get("MMGEN_DATA_DIR")
    if not value:
        pytest.skip("real data: set MMGEN_DATA_DIR to a folder with MNIST/raw and FashionMNIST/raw")
    root = Path(value)
    for folder in ("MNIST", "FashionMNIST"):
        for names in STANDARD_FILES.values():
            for name in names:
                raw = root / folder / "raw" / name
                if not raw.is_file() and not raw.with_name(name + ".gz").is_file():
                    pytest.skip(f"real data: MMGEN_DATA_DIR={value} lacks {folder}/raw/{name}[.gz]")
    return root


def make_checkpoint(
    folder: Path,
    source: str,
    latent_dim: int = 2,
    num_classes: int = 10,
    seed: int = 0,
    image_shape: tuple[int, int, int] = (1, 28, 28),
) -> Path:
    """A randomly initialised CVAE checkpoint whose decoder output visibly depends on ``z``."""
    config = CVAEConfig(latent_dim=latent_dim, num_classes=num_classes, image_shape=image_shape)
    model = build_cvae(config, rng.stream(seed, "init"))
    with torch.no_grad():  # a fresh decoder is nearly constant; sharpen it so z matters
        for layer in (model.decoder.dense[0], model.decoder.dense[2]):
            layer.weight.mul_(4.0)
        model.decoder.deconv[-1].weight.mul_(8.0)
    metadata = {
        "source": {
            "name": source,
            "class_names": [f"{source}-{k}" for k in range(num_classes)],
            "files": {},
        },
        "epochs_done": 0,
    }
    save_checkpoint(folder, model, None, metadata=metadata, history=[])
    return folder


def assert_one_line_error(result, *fragments: str) -> None:
    """A user mistake seen through CliRunner: exit code 2, one ``Error:`` line, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
