"""PolyMNIST-E (``mmgen polymnist``): recorded crops are the crops used, seeds, sharing, errors."""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error, make_checkpoint
from mmgen import polymnist
from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.data import h5io
from mmgen.generate import GenerateConfig
from mmgen.shuffle import MixConfig, mix_modality

runner = CliRunner()
SMALL = GenerateConfig(n_train=40, n_test=20, block_codes=3)  # several blocks per split


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def cvaes(tmp_path: Path) -> tuple[Path, Path]:
    return make_checkpoint(tmp_path / "a", "mnist"), make_checkpoint(
        tmp_path / "b", "mnist", seed=1
    )


def photo(path: Path, seed: int, size: tuple[int, int] = (50, 40)) -> Path:
    """A random RGB PNG (height, width) = size: a user background."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def independent_crop(path: Path, top: int, left: int) -> np.ndarray:
    """A 28×28 crop read with PIL and sliced by hand: (3, 28, 28)."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    return pixels[top : top + 28, left : left + 28].transpose(2, 0, 1)


def read(path: Path, split: str = "train") -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as handle:
        group = handle[split]
        out = {}
        group.visititems(
            lambda name, item: (
                out.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
        return out


def test_recomposite_from_stored_nuisance_gives_the_stored_bytes(tmp_path, cvaes) -> None:
    a, b = cvaes
    backgrounds = [photo(tmp_path / f"bg{k}.png", k) for k in range(3)]
    out = polymnist.generate_polymnist(
        [a, a, b], tmp_path / "p.h5", SMALL, [str(p) for p in backgrounds], device="cpu"
    )
    rows = read(out)
    models = {"m0": load_cvae(a), "m1": load_cvae(a), "m2": load_cvae(b)}
    for m, background in zip(("m0", "m1", "m2"), backgrounds, strict=True):
        mean = models[m].decode(torch.from_numpy(rows["z"]), torch.from_numpy(rows["labels"]))
        digit = mean[:, 0].numpy() > 0.5
        for i, (image, top, left) in enumerate(rows[f"nuisance/{m}"]):
            assert image == 0
            crop = independent_crop(background, top, left)
            expected = np.where(digit[i], 255 - crop, crop).astype(np.uint8)
            assert expected.tobytes() == rows[f"images/{m}"][i].tobytes(), (m, i)
    # z is shared: m0 and m1 decode one CVAE at one code, so their digits coincide.
    d0 = polymnist.recover_digits(rows["images/m0"], stored_crops(rows, "m0", backgrounds[0]))
    d1 = polymnist.recover_digits(rows["images/m1"], stored_crops(rows, "m1", backgrounds[1]))
    assert np.array_equal(d0, d1) and d0.any()
    # ... while every modality draws its own crops.
    assert not np.array_equal(rows["nuisance/m0"], rows["nuisance/m1"])
    assert not np.array_equal(rows["nuisance/m1"], rows["nuisance/m2"])
    header = h5io.read_header(out)
    assert (
        header.nuisance["backgrounds"]["m2"]["images"][0]["sha256"]
        == hashlib.sha256(backgrounds[2].read_bytes()).hexdigest()
    )
    assert header.image_shapes == {m: (3, 28, 28) for m in ("m0", "m1", "m2")}


def stored_crops(rows, modality: str, background: Path) -> np.ndarray:
    return np.stack(
        [independent_crop(background, t, left) for _, t, left in rows[f"nuisance/{modality}"]]
    )


def test_composite_is_inverted_by_recover_digits_for_every_level() -> None:
    levels = np.arange(256, dtype=np.uint8)
    crops = np.broadcast_to(levels[None, None, :, None], (2, 3, 256, 4)).copy()
    digits = np.zeros((2, 256, 4), dtype=bool)
    digits[0, :, ::2] = True
    digits[1] = True
    assert np.array_equal(
        polymnist.recover_digits(polymnist.composite(digits, crops), crops), digits
    )


def test_same_seed_same_bytes_any_batch_size_other_seed_other_crops(tmp_path, cvaes) -> None:
    a, _ = cvaes
    # Over 1024 tuples, so that batch sizes 1 (one group of 1024) and 4096 cut it differently.
    big = GenerateConfig(n_train=1030, n_test=10, block_codes=7)
    first = polymnist.generate_polymnist([a, a], tmp_path / "1.h5", big, device="cpu")
    second = polymnist.generate_polymnist(
        [a, a], tmp_path / "2.h5", big, device="cpu", batch_size=1
    )
    other = polymnist.generate_polymnist(
        [a, a],
        tmp_path / "3.h5",
        GenerateConfig(n_train=40, n_test=20, block_codes=3, seed=1),
        device="cpu",
    )
    assert first.read_bytes() == second.read_bytes()
    assert not np.array_equal(read(first)["nuisance/m0"], read(other)["nuisance/m0"])
    header = h5io.read_header(first)  # the default backgrounds: the scikit-learn photos
    assert header.config["polymnist"]["backgrounds"] == ["sklearn:china.jpg", "sklearn:flower.jpg"]


def test_sample_decoding_stores_a_recoverable_bernoulli_digit(tmp_path, cvaes) -> None:
    a, _ = cvaes
    config = GenerateConfig(n_train=20, n_test=10, decode="sample")
    out = polymnist.generate_polymnist([a, a], tmp_path / "s.h5", config, device="cpu")
    rows = read(out)
    crops = polymnist.crop(
        polymnist.load_backgrounds("sklearn:china.jpg"), rows["nuisance/m0"], 28, 28
    )
    digit = polymnist.recover_digits(rows["images/m0"], crops)
    mean = load_cvae(a).decode(torch.from_numpy(rows["z"]), torch.from_numpy(rows["labels"]))
    p = mean[:, 0].numpy()
    # Pixels the decoder is sure of are drawn as it says; the two modalities draw apart.
    assert digit[p > 0.999].all() and not digit[p < 0.001].any()
    other = polymnist.recover_digits(
        rows["images/m1"],
        polymnist.crop(
            polymnist.load_backgrounds("sklearn:flower.jpg"), rows["nuisance/m1"], 28, 28
        ),
    )
    assert not np.array_equal(digit, other)


def test_folder_background_draws_an_image_per_tuple(tmp_path, cvaes) -> None:
    a, _ = cvaes
    folder = tmp_path / "photos"
    folder.mkdir()
    paths = [photo(folder / f"{k}.png", k, (30 + k, 29 + k)) for k in range(3)]
    out = polymnist.generate_polymnist(
        [a, a], tmp_path / "f.h5", SMALL, [str(folder)], device="cpu"
    )
    rows = read(out)
    for m in ("m0", "m1"):
        nuisance = rows[f"nuisance/{m}"]
        assert set(nuisance[:, 0]) == {0, 1, 2}
        for i, (image, top, left) in enumerate(nuisance):
            crop = independent_crop(paths[image], top, left)
            stored = rows[f"images/{m}"][i]
            assert np.array_equal(np.where(stored != crop, 255 - stored, stored), crop)


def test_shuffle_moves_crops_with_their_images(tmp_path, cvaes) -> None:
    a, b = cvaes
    parent = polymnist.generate_polymnist([a, a, b], tmp_path / "p.h5", SMALL, device="cpu")
    mixed = mix_modality(parent, tmp_path / "m.h5", MixConfig(modality="m1,m2", seed=3))
    before, after = read(parent), read(mixed)
    assert np.array_equal(before["nuisance/m0"], after["nuisance/m0"])
    for m in ("m1", "m2"):
        order = after[f"permutation/{m}"]
        assert not np.array_equal(order, np.arange(len(order)))
        assert np.array_equal(after[f"images/{m}"], before[f"images/{m}"][order])
        assert np.array_equal(after[f"nuisance/{m}"], before[f"nuisance/{m}"][order])
        assert np.array_equal(before["labels"][order], before["labels"])
    assert not np.array_equal(after["permutation/m1"], after["permutation/m2"])
    assert h5io.read_header(mixed).nuisance == h5io.read_header(parent).nuisance


def test_sklearn_photos_are_found_without_importing_sklearn(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "sklearn", raising=False)
    (china,) = polymnist.load_backgrounds("sklearn:china")
    assert "sklearn" not in sys.modules  # importing it costs 2 s (SciPy) on a 5 s run
    path = Path(str(resources.files("sklearn.datasets.images") / "china.jpg"))
    assert china.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_naive_pairing_composites_real_digits_of_one_class(tmp_path, fake_data_root) -> None:
    out = polymnist.pair_polymnist(
        tmp_path / "n.h5", 3, source="mnist", data_dir=fake_data_root, seed=2
    )
    rows = read(out)
    from mmgen.data.sources import load_split

    real = load_split("mnist", "train", data_dir=fake_data_root)
    china = Path(str(resources.files("sklearn.datasets.images") / "china.jpg"))
    flower = china.with_name("flower.jpg")
    for m, background in zip(("m0", "m1", "m2"), (china, flower, china), strict=True):
        index = rows[f"source_index/{m}"]
        assert np.array_equal(real.labels[index], rows["labels"])
        for i, (_, top, left) in enumerate(rows[f"nuisance/{m}"]):
            crop = independent_crop(background, top, left)
            digit = real.images[index[i], 0] > 127.5
            assert np.array_equal(rows[f"images/{m}"][i], np.where(digit, 255 - crop, crop))
    assert not np.array_equal(rows["source_index/m0"], rows["source_index/m1"])
    assert not np.array_equal(rows["nuisance/m0"], rows["nuisance/m2"])
    again = polymnist.pair_polymnist(
        tmp_path / "n2.h5", 3, source="mnist", data_dir=fake_data_root, seed=2
    )
    assert out.read_bytes() == again.read_bytes()


def test_cli_writes_polymnist_e(tmp_path, cvaes) -> None:
    a, b = cvaes
    result = invoke(
        "polymnist",
        "--cvae",
        a,
        "--cvae",
        a,
        "--cvae",
        b,
        "--background",
        "sklearn:flower",
        "--background",
        "sklearn:china.jpg",
        "--background",
        "sklearn:flower.jpg",
        "--n-train",
        20,
        "--n-test",
        10,
        "--out",
        tmp_path / "p.h5",
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "PolyMNIST-E: 20 train + 10 test tuples, 3 modalities" in result.output
    assert h5io.read_header(tmp_path / "p.h5").modalities == ("m0", "m1", "m2")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--background", "sklearn:china.jpg"], "1 --background for 2 modalities"),
        (["--background", "sklearn:moon", "--background", "sklearn:china"], "scikit-learn ships"),
        (["--background", "nowhere.png", "--background", "sklearn:china"], "neither a package"),
        (["--naive"], "not both"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, cvaes, extra, fragment) -> None:
    a, _ = cvaes
    result = invoke("polymnist", "--cvae", a, "--cvae", a, "--out", tmp_path / "x.h5", *extra)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "x.h5").exists()


def test_cli_refuses_small_backgrounds_and_colour_cvaes(tmp_path, cvaes) -> None:
    a, _ = cvaes
    tiny = photo(tmp_path / "tiny.png", 0, (20, 40))
    result = invoke(
        "polymnist",
        "--cvae",
        a,
        "--cvae",
        a,
        "--background",
        tiny,
        "--background",
        tiny,
        "--out",
        tmp_path / "x.h5",
    )
    assert_one_line_error(result, "smaller than the 28×28 crops")
    colour = make_checkpoint(tmp_path / "c", "svhn", image_shape=(3, 28, 28))
    result = invoke("polymnist", "--cvae", colour, "--cvae", colour, "--out", tmp_path / "x.h5")
    assert_one_line_error(result, "grey digits")


def test_card_states_each_background_licence(tmp_path, cvaes) -> None:
    a, _ = cvaes
    user = photo(tmp_path / "mine.png", 3)
    out = tmp_path / "p.h5"
    backgrounds = ["sklearn:flower", "sklearn:china.jpg", user]
    args = [arg for spec in backgrounds for arg in ("--background", spec)]
    result = invoke(
        "polymnist",
        *["--cvae", a] * 3,
        *args,
        "--n-train",
        10,
        "--n-test",
        10,
        "--out",
        out,
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert invoke("card", out).exit_code == 0
    card = json.loads((tmp_path / "p.h5.card.json").read_text())
    # scikit-learn's README.txt beside its photos: CC BY 2.0, each by its Flickr author
    licences = {m: b["licence"] for m, b in card["backgrounds"].items()}
    assert licences == {
        "m0": "CC BY 2.0, by vultilion (Flickr)",
        "m1": "CC BY 2.0, by danielbuechele (Flickr)",
        "m2": "unknown",
    }
    assert (
        "| m0 | `sklearn:flower` | CC BY 2.0, by vultilion"
        in (tmp_path / "p.h5.card.md").read_text()
    )


def test_composites_are_deflated_at_the_photo_level_and_the_twin_keeps_it(tmp_path, cvaes) -> None:
    a, _ = cvaes
    out = polymnist.generate_polymnist([a, a], tmp_path / "p.h5", SMALL, device="cpu")
    twin = mix_modality(out, tmp_path / "m.h5", MixConfig(modality="m1", seed=0))
    for path in (out, twin):
        with h5py.File(path, "r") as handle:
            for split in ("train", "test"):
                group = handle[split]
                assert {group[f"images/{m}"].compression_opts for m in ("m0", "m1")} == {
                    polymnist.PHOTO_LEVEL
                }
                assert group["z"].compression_opts == h5io.COMPRESSION_LEVEL
