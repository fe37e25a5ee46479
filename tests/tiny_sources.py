"""Tiny files in the exact on-disk formats that torchvision's SVHN and CIFAR-10 readers load.

The fixtures are registered for every test module by ``conftest.py``. torchvision checks the
MD5s of the real SVHN and CIFAR files on every load; the tiny files cannot match them, so the
fixtures replace the expected MD5 lists *on torchvision's classes* (``monkeypatch``) with the
tiny files' MD5s. The check itself stays on.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("torchvision.datasets")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def levels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def pickle_to(path: Path, entry: dict) -> None:
    path.write_bytes(pickle.dumps(entry))


@pytest.fixture
def svhn_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """ROOT/SVHN/{train,test}_32x32.mat as Stanford writes them: X (32, 32, 3, N), y (N, 1)."""
    scipy_io = pytest.importorskip("scipy.io", reason="svhn needs the [svhn] extra (scipy)")
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "SVHN"
    folder.mkdir(parents=True)
    written, split_list = {}, dict(datasets.SVHN.split_list)
    for split, count in (("train", 10), ("test", 4)):  # every digit trained (issue 20)
        x = levels(rng, 32, 32, 3, count)
        digits = np.arange(count) % 10
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        path = folder / f"{split}_32x32.mat"
        scipy_io.savemat(path, {"X": x, "y": y})
        written[split] = (x, digits)
        url, name, _ = split_list[split]
        split_list[split] = [url, name, md5(path)]  # the tiny file's MD5 in place of the real one
    monkeypatch.setattr(datasets.SVHN, "split_list", split_list)
    return tmp_path / "data", written


@pytest.fixture
def cifar10_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """ROOT/cifar-10-batches-py/ as the Toronto archive: rows of 3072 levels (R, G, B planes)."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for index, (name, _) in enumerate([*datasets.CIFAR10.train_list, *datasets.CIFAR10.test_list]):
        data = levels(rng, 3, 3 * 32 * 32)
        labels = [int(k) for k in rng.integers(0, 10, size=3)]
        if index < len(datasets.CIFAR10.train_list):  # every class trained (issue 20)
            labels = [(3 * index + k) % 10 for k in range(3)]
        pickle_to(folder / name, {"batch_label": name, "data": data, "labels": labels})
        batches[name] = (data, labels)
    names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    pickle_to(folder / "batches.meta", {"label_names": names, "num_vis": 3072})
    # torchvision checks the real files' MD5s: give it the tiny files' instead.
    for attribute in ("train_list", "test_list"):
        tiny = [[name, md5(folder / name)] for name, _ in getattr(datasets.CIFAR10, attribute)]
        monkeypatch.setattr(datasets.CIFAR10, attribute, tiny)
    meta = {**datasets.CIFAR10.meta, "md5": md5(folder / "batches.meta")}
    monkeypatch.setattr(datasets.CIFAR10, "meta", meta)
    return tmp_path / "data", batches


