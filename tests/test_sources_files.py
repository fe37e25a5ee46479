"""Sources from the user's own files (``folder:PATH`` PNG trees, ``npz:PATH`` arrays) and the
8×8 digits that scikit-learn ships (``digits``)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmgen import rng
from mmgen.data.sources import load_split


@pytest.fixture(autouse=True)
def _isolated(isolated_data_env: Path) -> Path:
    return isolated_data_env


# --- folder:PATH ------------------------------------------------------------------------------


def write_pngs(root: Path, split: str, images: dict[str, list[np.ndarray]]) -> None:
    for class_name, arrays in images.items():
        (root / split / class_name).mkdir(parents=True, exist_ok=True)
        for k, array in enumerate(arrays):
            Image.fromarray(array).save(root / split / class_name / f"{k:03d}.png")


@pytest.fixture
def colour_folder(tmp_path: Path) -> tuple[Path, dict]:
    """PATH/{train,test}/{cat,ant,bee}/*.png, 6×5 RGB; class folders deliberately not sorted."""
    generator = np.random.default_rng(0)
    written = {}
    for split, count in (("train", 3), ("test", 2)):
        images = {name: [generator.integers(0, 256, (6, 5, 3), np.uint8) for _ in range(count)]
                  for name in ("cat", "ant", "bee")}  # fmt: skip
        write_pngs(tmp_path / "pics", split, images)
        written[split] = images
    return tmp_path / "pics", written


def test_folder_reads_classes_sorted_as_image_folder(colour_folder: tuple[Path, dict]) -> None:
    path, written = colour_folder
    data = load_split(f"folder:{path}", "train")
    assert data.class_names == ("ant", "bee", "cat")  # sorted, as ImageFolder does
    assert data.image_shape == (3, 6, 5)
    np.testing.assert_array_equal(data.labels, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    expected = [
        a.transpose(2, 0, 1) for name in ("ant", "bee", "cat") for a in written["train"][name]
    ]
    np.testing.assert_array_equal(data.images, np.stack(expected))
    assert list(data.files) == ["train/"] and len(data.files["train/"]) == 64
    assert data.identity()["image_format"] == {"mode": "RGB", "size": [5, 6]}
    test = load_split(f"folder:{path}", "test", classes=["cat", "ant"])
    np.testing.assert_array_equal(test.labels, [1, 1, 0, 0])
    np.testing.assert_array_equal(test.images[2], written["test"]["cat"][0].transpose(2, 0, 1))


def test_folder_grey_images_have_one_channel(tmp_path: Path) -> None:
    grey = [np.full((4, 4), 17 * k, np.uint8) for k in range(3)]
    for split in ("train", "test"):
        write_pngs(tmp_path / "g", split, {"a": grey, "b": grey[:1]})
    data = load_split(f"folder:{tmp_path / 'g'}", "test")
    assert data.image_shape == (1, 4, 4)
    np.testing.assert_array_equal(data.images[:, 0], np.stack([*grey, grey[0]]))


def test_folder_image_of_another_size_is_named(colour_folder: tuple[Path, dict]) -> None:
    path, _ = colour_folder
    odd = path / "test" / "bee" / "odd.png"
    Image.fromarray(np.zeros((7, 5, 3), np.uint8)).save(odd)
    with pytest.raises(ValueError) as error:
        load_split(f"folder:{path}", "train")  # the other split's odd image counts too
    message = str(error.value)
    assert "\n" not in message and str(odd) in message and "5×7 RGB" in message
    assert "share one size and mode" in message


def test_folder_image_of_another_mode_is_named(colour_folder: tuple[Path, dict]) -> None:
    path, _ = colour_folder
    odd = path / "train" / "ant" / "grey.png"
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(odd)
    with pytest.raises(ValueError, match=rf"{odd} is 5×6 L but .* is 5×6 RGB"):
        load_split(f"folder:{path}", "test")


def test_folder_splits_need_the_same_classes(colour_folder: tuple[Path, dict]) -> None:
    path, written = colour_folder
    write_pngs(path, "test", {"dog": written["test"]["cat"]})
    with pytest.raises(
        ValueError,
        match=r"train/ has classes \['ant', 'bee', 'cat'\] but test/ has \['ant', .*'dog'\]",
    ):
        load_split(f"folder:{path}", "train")


def test_folder_missing_split_says_the_layout(tmp_path: Path) -> None:
    write_pngs(tmp_path / "half", "train", {"a": [np.zeros((2, 2), np.uint8)]})
    with pytest.raises(FileNotFoundError) as error:
        load_split(f"folder:{tmp_path / 'half'}", "train")
    message = str(error.value)
    assert "\n" not in message and "(lacks test/)" in message and "/test/<class>/" in message


# --- npz:PATH ---------------------------------------------------------------------------------


def save_npz(path: Path, x_train, y_train, x_test, y_test, **more) -> Path:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, **more)
    return path


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    generator = np.random.default_rng(1)
    channels = 1 if layout == "NHW" else 3
    chw = generator.integers(0, 256, (4, channels, 5, 7), np.uint8)  # what mmgen should read
    stored = {"NHW": chw[:, 0], "NHWC": chw.transpose(0, 2, 3, 1), "NCHW": chw}[layout]
    path = save_npz(tmp_path / "a.npz", stored, [0, 1, 2, 1], stored[:2], [2, 0])
    data = load_split(f"npz:{path}", "train")
    np.testing.assert_array_equal(data.images, chw)
    np.testing.assert_array_equal(data.labels, [0, 1, 2, 1])
    assert data.class_names == ("0", "1", "2") and data.image_shape == (channels, 5, 7)
    assert list(data.files) == ["a.npz"]


def test_npz_floats_round_as_generate_does(tmp_path: Path) -> None:
    x = np.array([0.0, 0.5, 1.0, 0.2, 0.002, 0.998], np.float32).reshape(1, 2, 3)
    path = save_npz(tmp_path / "f.npz", x, [1], x, [0], class_names=np.array(["no", "yes"]))
    data = load_split(f"npz:{path}", "test")
    np.testing.assert_array_equal(data.images.ravel(), [0, 128, 255, 51, 1, 254])  # round(255·x)
    assert data.class_names == ("no", "yes")


def test_npz_bad_arrays_are_one_clear_error(tmp_path: Path) -> None:
    x = np.zeros((2, 4, 4), np.uint8)
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=x, y_train=[0, 1])
    with pytest.raises(ValueError, match=r"lacks the arrays x_test, y_test; it holds x_train"):
        load_split(f"npz:{path}", "train")
    save_npz(path, np.full((2, 4, 4), 1.5), [0, 1], x, [0, 1])
    with pytest.raises(ValueError, match=r"x_train holds floats outside \[0, 1\]"):
        load_split(f"npz:{path}", "train")
    save_npz(path, np.zeros((2, 4, 4, 5), np.uint8), [0, 1], x, [0, 1])
    with pytest.raises(ValueError, match=r"shape \(2, 4, 4, 5\); give \(N, H, W\) grey"):
        load_split(f"npz:{path}", "train")
    save_npz(path, x, [0, 1, 1], x, [0, 1])
    with pytest.raises(ValueError, match=r"must be \(2,\) integer labels"):
        load_split(f"npz:{path}", "train")


# --- digits (scikit-learn) --------------------------------------------------------------------


def test_digits_split_is_stratified_seeded_and_scaled() -> None:
    pytest.importorskip("sklearn", reason="digits needs the [digits] extra (scikit-learn)")
    from sklearn.datasets import load_digits

    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert train.image_shape == test.image_shape == (1, 8, 8)
    assert len(train.labels) + len(test.labels) == 1797 and len(test.labels) == 359
    counts = np.bincount(np.concatenate([train.labels, test.labels]), minlength=10)
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.round(counts * 0.2))
    # The rule of the docs, recomputed here: per class, the first 20 % of a keyed permutation.
    bunch = load_digits()
    generator = rng.numpy_stream(0, "digits-split")
    is_test = np.zeros(1797, bool)
    for label in range(10):
        members = generator.permutation(np.flatnonzero(bunch.target == label))
        is_test[members[: round(0.2 * len(members))]] = True
    expected = np.round(bunch.images[is_test] * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(test.images[:, 0], expected)
    np.testing.assert_array_equal(test.labels, bunch.target[is_test])
    assert train.images.max() == 255 and train.class_names == tuple(string.digits)
    assert "split_rule" in train.identity() and list(train.files) == ["digits.csv.gz"]


def test_a_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a)
    )
    with pytest.raises(ValueError) as error:
        load_split("digits", "train")
    message = str(error.value)
    assert "\n" not in message and "pip install 'mmgen-entangled[digits]'" in message
