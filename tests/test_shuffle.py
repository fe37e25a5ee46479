"""``mmgen.shuffle``: the mixed (MNIST-ME) and naive baselines."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import make_checkpoint, write_idx
from mmgen import rng
from mmgen.data import h5io
from mmgen.data.sources import load_split
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.pair import PairConfig, pair_indices, pair_sources
from mmgen.shuffle import MixConfig, class_permutation, mix_modality


@pytest.fixture
def entangled(tmp_path: Path) -> Path:
    folders = [
        make_checkpoint(tmp_path / "a", "mnist", seed=0),
        make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1),
    ]
    config = GenerateConfig(n_train=300, n_test=100)
    return generate_dataset(folders, tmp_path / "e.h5", config, device="cpu")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_class_permutation_stays_within_classes() -> None:
    labels = np.repeat(np.arange(5), 40)
    permutation = class_permutation(labels, np.random.default_rng(0))
    assert sorted(permutation) == list(range(200))
    np.testing.assert_array_equal(labels[permutation], labels)
    assert (permutation == np.arange(200)).mean() < 0.2


def test_mix_permutes_one_modality_within_each_class(tmp_path: Path, entangled: Path) -> None:
    out = mix_modality(entangled, tmp_path / "m.h5", MixConfig(seed=5))
    attrs, source_attrs = h5io.read_attrs(out), h5io.read_attrs(entangled)
    assert attrs["kind"] == "mixed" and attrs["seed"] == 5
    assert attrs["config"] == {"modality": "fashion-mnist", "seed": 5, "block_codes": 256}
    assert attrs["parent"]["sha256"] == sha256(entangled)
    assert attrs["parent"]["path"] == str(entangled.resolve())  # found from anywhere
    assert attrs["parent"]["config"] == source_attrs["config"]
    for key in ("modalities", "sources", "num_classes", "latent_dim", "has_latent"):
        assert attrs[key] == source_attrs[key]
    with h5py.File(out, "r") as mixed, h5py.File(entangled, "r") as original:
        for split in ("train", "test"):
            labels = original[split]["labels"][:]
            permutation = mixed[split]["permutation/fashion-mnist"][:]
            before = original[split]["images/fashion-mnist"][:]
            after = mixed[split]["images/fashion-mnist"][:]
            np.testing.assert_array_equal(after, before[permutation])
            # The very permutation of the generator used before mmgen.rng: same bytes.
            former = np.random.default_rng([5, {"train": 0, "test": 1}[split]])
            np.testing.assert_array_equal(permutation, class_permutation(labels, former))
            np.testing.assert_array_equal(labels[permutation], labels)
            # Each class keeps its multiset of images; the pairing really changed.
            for label in range(10):
                chosen = labels == label
                assert sorted(map(bytes, after[chosen])) == sorted(map(bytes, before[chosen]))
            assert (permutation == np.arange(len(labels))).mean() < 0.3
            assert not np.array_equal(after, before)
            for name in ("images/mnist", "labels", "z", "code_index"):
                np.testing.assert_array_equal(mixed[split][name][:], original[split][name][:])


def test_mix_is_seeded_and_checks_its_input(tmp_path: Path, entangled: Path) -> None:
    first = mix_modality(entangled, tmp_path / "m1.h5", MixConfig(modality="mnist"))
    second = mix_modality(entangled, tmp_path / "m2.h5", MixConfig(modality="mnist"))
    assert sha256(first) == sha256(second)
    with pytest.raises(ValueError, match="unknown --modality 'svhn'"):
        mix_modality(entangled, tmp_path / "x.h5", MixConfig(modality="svhn"))
    with pytest.raises(ValueError, match="mixed file"):
        mix_modality(first, tmp_path / "x.h5")
    with pytest.raises(FileExistsError):
        mix_modality(entangled, first)
    assert not (tmp_path / "x.h5").exists()
    for overwrite in (False, True):  # not "pass --overwrite", which would then be refused
        with pytest.raises(ValueError, match="is the input file"):
            mix_modality(entangled, entangled, overwrite=overwrite)


@pytest.mark.parametrize("seed", [0, 5, 2**40, 2**63 - 1])
def test_keyed_streams_equal_the_former_generators(seed: int) -> None:
    """The shuffles moved to mmgen.rng without changing a byte of their output."""
    for split in (0, 1):
        np.testing.assert_array_equal(
            rng.numpy_stream(seed, split).permutation(500),
            np.random.default_rng([seed, split]).permutation(500),
        )
    for source, label in ((-1, 0), (0, 3), (2, 9)):
        np.testing.assert_array_equal(
            rng.numpy_stream(seed, 1, source + 1, label).permutation(500),
            np.random.default_rng([seed, 1, source + 1, label]).permutation(500),
        )


def test_pair_keeps_classes_aligned(tmp_path: Path, fake_data_root: Path) -> None:
    config = PairConfig(sources=("mnist", "fashion-mnist"), seed=1)
    out = pair_sources(tmp_path / "n.h5", config, data_dir=fake_data_root)
    attrs = h5io.read_attrs(out)
    assert attrs["kind"] == "naive" and attrs["has_latent"] is False and attrs["latent_dim"] == 0
    assert attrs["modalities"] == ["mnist", "fashion-mnist"]
    assert attrs["sources"]["mnist"]["root"] == str((fake_data_root / "MNIST" / "raw").resolve())
    with h5py.File(out, "r") as handle:
        for split, size in (("train", 60), ("test", 30)):
            group = handle[split]
            assert "z" not in group and "code_index" not in group
            labels = group["labels"][:]
            assert len(labels) == size
            for name in attrs["modalities"]:
                source = load_split(name, split, data_dir=fake_data_root)
                index = group[f"source_index/{name}"][:]
                np.testing.assert_array_equal(source.labels[index], labels)
                stored = group[f"images/{name}"][:]  # grey: (N, 28, 28) as before
                np.testing.assert_array_equal(source.images[index, 0], stored)
                assert len(set(index.tolist())) == size  # each real image used once
            assert not np.array_equal(labels, np.sort(labels))  # classes interleaved
    # The very pairing of the generators used before mmgen.rng: same bytes.
    train = [load_split(name, "train", data_dir=fake_data_root) for name in attrs["modalities"]]
    former = pair_indices(
        [d.labels for d in train], 10, lambda m, c: np.random.default_rng([1, 0, m + 1, c])
    )
    with h5py.File(out, "r") as handle:
        np.testing.assert_array_equal(handle["train/source_index/mnist"][:], former[0])
        np.testing.assert_array_equal(handle["train/source_index/fashion-mnist"][:], former[1])
    again = pair_sources(tmp_path / "n2.h5", config, data_dir=fake_data_root)
    assert sha256(again) == sha256(out)
    assert h5io.read_split(out, "train").z is None


def test_pair_uses_the_smallest_class_count(tmp_path: Path, fake_data_root: Path) -> None:
    # A third source whose class 0 has 2 train images instead of 6, and no class 9.
    folder = tmp_path / "few"
    for split, count in (("train", 60), ("test", 30)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        labels[labels == 9] = 8
        labels[np.flatnonzero(labels == 0)[2:]] = 1
        prefix = "train" if split == "train" else "t10k"
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((count, 28, 28), np.uint8))
        labels[-1] = 9 if split == "test" else labels[-1]  # 10 classes in both splits' files
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
    config = PairConfig(sources=("mnist", f"idx:{folder}"), seed=0)
    out = pair_sources(tmp_path / "n.h5", config, data_dir=fake_data_root)
    counts = np.bincount(h5io.read_split(out, "train").labels, minlength=10)
    assert counts.tolist() == [2, 6, 6, 6, 6, 6, 6, 6, 6, 0]


def test_pair_refuses_sources_with_different_classes(tmp_path: Path, fake_data_root) -> None:
    folder = tmp_path / "five"
    for prefix, count in (("train", 20), ("t10k", 10)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte", np.zeros((count, 28, 28), np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 5).astype(np.uint8))
    config = PairConfig(sources=("mnist", f"idx:{folder}"))
    with pytest.raises(ValueError, match="disagree on the number of classes"):
        pair_sources(tmp_path / "n.h5", config, data_dir=fake_data_root)
    with pytest.raises(ValueError, match="at least two sources"):
        PairConfig(sources=("mnist",))


def test_pair_names_an_unknown_source_before_searching_for_files() -> None:
    from mmgen.pair import PairConfig

    with pytest.raises(ValueError, match="unknown source 'svhm'"):
        PairConfig(sources=("mnist", "svhm"))
