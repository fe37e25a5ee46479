"""Real-data classifiers: training on fake sources, the on-disk cache, and a real-data check."""

from __future__ import annotations

import shutil

import pytest
import torch

import legacy_folders
from mmgen import classifiers
from mmgen.classifiers import ClassifierConfig, load_or_train_classifier, train_classifier
from mmgen.config import load_json
from mmgen.data.sources import load_split

QUICK = ClassifierConfig(epochs=10, batch_size=16, lr=3e-3, channels=(8, 16), feature_dim=32)


def test_trains_on_a_fake_source_then_loads_from_the_cache(
    tmp_path, fake_data_root, monkeypatch
) -> None:
    cache = tmp_path / "cache"
    first = load_or_train_classifier("mnist", fake_data_root, cache, QUICK, device="cpu")
    assert not first.loaded
    assert first.test_accuracy > 0.8  # each fake class is an obvious block
    assert (first.path / classifiers.WEIGHTS_FILE).is_file()
    record = load_json(first.path / "model.json")
    assert record["kind"] == "classifier" and record["config"]["num_classes"] == 10
    info = record["run"]
    assert info["test_accuracy"] == first.test_accuracy and info["device"] == "cpu"
    assert set(info["files"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    assert first.path.parent == cache and first.path.name.startswith("mnist-")

    def no_training(*args, **kwargs):
        raise AssertionError("a cached classifier must not be trained again")

    monkeypatch.setattr(classifiers, "train_classifier", no_training)
    second = load_or_train_classifier("mnist", fake_data_root, cache, QUICK, device="cpu")
    assert second.loaded and second.path == first.path
    assert second.test_accuracy == first.test_accuracy
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(second.classify(images), first.classify(images))
    assert second.features(images).shape == (5, QUICK.feature_dim)
    assert second.summary()["loaded_from_cache"] is True


def test_the_cache_key_follows_the_config_and_the_files(tmp_path, fake_data_root) -> None:
    train = load_split("mnist", "train", data_dir=fake_data_root)
    test = load_split("mnist", "test", data_dir=fake_data_root)
    other = load_split("fashion-mnist", "test", data_dir=fake_data_root)
    key = classifiers.cache_key(train, test, QUICK)
    assert key == classifiers.cache_key(train, test, QUICK)
    assert key != classifiers.cache_key(train, test, ClassifierConfig(epochs=5))
    assert key != classifiers.cache_key(train, other, QUICK)


def test_the_default_cache_lives_under_xdg_cache_home(isolated_data_env) -> None:
    assert classifiers.classifier_cache_dir() == isolated_data_env / "mmgen" / "classifiers"


def test_a_damaged_cache_entry_is_retrained(tmp_path, fake_data_root, caplog) -> None:
    cache = tmp_path / "cache"
    first = load_or_train_classifier("fashion-mnist", fake_data_root, cache, QUICK, device="cpu")
    (first.path / classifiers.WEIGHTS_FILE).write_bytes(b"not a torch file")
    again = load_or_train_classifier("fashion-mnist", fake_data_root, cache, QUICK, device="cpu")
    assert not again.loaded
    assert "damaged" in caplog.text
    assert load_or_train_classifier("fashion-mnist", fake_data_root, cache, QUICK, "cpu").loaded


def test_missing_source_files_raise_with_the_fix(tmp_path, isolated_data_env) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir"):
        load_or_train_classifier("mnist", tmp_path / "nothing", tmp_path / "cache", QUICK, "cpu")


def test_a_first_format_cache_entry_still_loads(tmp_path, fake_data_root, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = load_or_train_classifier("mnist", fake_data_root, cache, QUICK, device="cpu")
    # Rewrite the entry as the first releases wrote it: weights.pt with the config, info.json.
    info = {key: value for key, value in first.info.items() if key != "environment"}
    shutil.rmtree(first.path)
    legacy_folders.write_classifier(first.path, first.model, 10, QUICK, info)

    def no_training(*args, **kwargs):
        raise AssertionError("a first-format cache entry must load, not retrain")

    monkeypatch.setattr(classifiers, "train_classifier", no_training)
    again = load_or_train_classifier("mnist", fake_data_root, cache, QUICK, device="cpu")
    assert again.loaded and again.test_accuracy == first.test_accuracy
    images = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.classify(images), first.classify(images), rtol=0, atol=0)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="classifier epochs must be > 0, got 0"):
        ClassifierConfig(epochs=0)
    with pytest.raises(ValueError, match="two widths"):
        ClassifierConfig(channels=(8,))


@pytest.mark.slow
def test_real_mnist_slice_is_learnt(real_data_dir) -> None:
    """2,000 real digits, two epochs: well above chance on 1,000 test digits."""
    train = load_split("mnist", "train", data_dir=real_data_dir, limit=2000)
    test = load_split("mnist", "test", data_dir=real_data_dir, limit=1000)
    _, history = train_classifier(
        train, test, ClassifierConfig(epochs=2, batch_size=32), torch.device("cpu")
    )
    assert history[-1]["test_accuracy"] > 0.85
