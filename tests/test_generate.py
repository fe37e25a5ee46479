"""``mmgen.generate``: truncated sampling, keyed blocks, and the entangled file it writes."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import make_checkpoint
from mmgen import generate, rng
from mmgen.checkpoint import load_cvae
from mmgen.data import h5io
from mmgen.generate import (
    GenerateConfig,
    draw_block,
    generate_dataset,
    sample_truncated_normal,
)

SMALL = GenerateConfig(n_train=200, n_test=100)


@pytest.fixture
def checkpoints(tmp_path: Path) -> list[Path]:
    """Two checkpoints: ``mnist`` and ``fashion-mnist``, latent size 2, 10 classes."""
    return [
        make_checkpoint(tmp_path / "cvae-mnist", "mnist", seed=0),
        make_checkpoint(tmp_path / "cvae-fashion", "fashion-mnist", seed=1),
    ]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("n_train", 0, "n_train"),
        ("n_test", -5, "n_test"),
        ("radius", 0.0, "radius"),
        ("truncation", "ball", "radial, box"),
        ("labels", "random", "grid, independent"),
        ("dtype", "int16", "uint8, float32"),
        ("n_train", 10**20, "--n-train 100000000000000000000 is too large"),
        ("radius", float("inf"), "--radius must be a finite"),
        ("seed", 2**64, "--seed 18446744073709551616 is out of range"),
        ("seed", -(2**63) - 1, "--seed -9223372036854775809 is out of range"),
    ],
)
def test_config_rejects_bad_values(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        GenerateConfig(**{field: value})


def test_radial_rejection_keeps_the_truncated_normal() -> None:
    radius = 1.5
    z = sample_truncated_normal(20_000, 2, "radial", radius, rng.stream(0))
    norms = z.norm(dim=1)
    assert z.shape == (20_000, 2) and z.dtype == torch.float32
    assert norms.max() <= radius
    # Not clipped: no pile-up at the boundary.
    assert (norms > radius - 1e-3).float().mean() < 0.005
    # In 2-D, P(‖z‖ ≤ s | ‖z‖ ≤ r) = (1 - exp(-s²/2)) / (1 - exp(-r²/2)).
    for s in (0.5, 1.0, 1.3):
        expected = (1 - math.exp(-(s**2) / 2)) / (1 - math.exp(-(radius**2) / 2))
        assert abs((norms <= s).float().mean().item() - expected) < 0.015


def test_box_rejection_keeps_every_coordinate_inside() -> None:
    radius = 1.0
    z = sample_truncated_normal(20_000, 3, "box", radius, rng.stream(1))
    assert z.abs().max() <= radius
    assert (z.abs() > radius - 1e-3).float().mean() < 0.005
    # E|z_i| of N(0, 1) truncated to [-r, r] = sqrt(2/π) (1 - exp(-r²/2)) / erf(r/√2).
    expected = math.sqrt(2 / math.pi) * (1 - math.exp(-0.5)) / math.erf(1 / math.sqrt(2))
    assert abs(z.abs().mean().item() - expected) < 0.01


def test_a_region_too_small_to_sample_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="larger --radius"):
        sample_truncated_normal(10, 64, "radial", 2.0, rng.stream(0))


def test_blocks_are_keyed_by_position_and_prefix_stable() -> None:
    small = GenerateConfig(n_train=30, n_test=10)
    large = GenerateConfig(n_train=3000, n_test=10)
    first = draw_block(small, 2, 10, "train", 0)
    again = draw_block(large, 2, 10, "train", 0)
    assert torch.equal(first.z, again.z[: len(first.z)])
    assert torch.equal(first.labels, torch.arange(10).repeat(3))
    assert torch.equal(first.code_index, torch.arange(3).repeat_interleave(10))
    other = draw_block(large, 2, 10, "train", 1)
    assert not torch.equal(other.z[:10], again.z[:10])
    test = draw_block(large, 2, 10, "test", 0)
    assert not torch.equal(test.z[:10], again.z[:10])


def test_fast_decoding_path_matches_the_training_layout(checkpoints: list[Path]) -> None:
    """Without autograd the decoder runs channels-last: the same logits as the NCHW path."""
    model = load_cvae(checkpoints[0]).model
    z, labels = torch.randn(37, 2), torch.arange(37) % 10
    with torch.enable_grad():
        expected = model.decode_logits(z, labels).detach()
    with torch.inference_mode():
        actual = model.decode_logits(z, labels)
    assert actual.shape == (37, 1, 28, 28) and expected.std() > 0.1
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_entangled_file_schema_and_attributes(
    tmp_path: Path, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # relative checkpoint paths, as a user types them
    relative = [Path(folder.name) for folder in checkpoints]
    out = generate_dataset(relative, Path("e.h5"), SMALL, device="cpu")
    attrs = h5io.read_attrs(out)
    assert attrs["format"] == "mmgen" and attrs["schema_version"] == h5io.SCHEMA_VERSION
    assert attrs["kind"] == "entangled" and attrs["has_latent"] is True
    assert attrs["modalities"] == ["mnist", "fashion-mnist"]
    assert attrs["latent_dim"] == 2 and attrs["num_classes"] == 10 and attrs["seed"] == 0
    assert GenerateConfig(**attrs["config"]) == SMALL
    for name, folder in zip(attrs["modalities"], checkpoints, strict=True):
        assert attrs["sources"][name]["checkpoint_sha256"] == load_cvae(folder).sha256
        assert attrs["sources"][name]["name"] == name
        # Absolute: a reader elsewhere finds the checkpoint from the file alone.
        assert attrs["sources"][name]["checkpoint"] == str(folder.resolve()) != str(folder.name)
    assert attrs["environment"]["device"] == "cpu" and attrs["environment"]["torch"]
    assert h5io.read_header(out).class_names == tuple(f"mnist-{k}" for k in range(10))
    with h5py.File(out, "r") as handle:
        for split, size in (("train", 200), ("test", 100)):
            group = handle[split]
            assert group.attrs["size"] == size
            assert group["images/mnist"].shape == (size, 28, 28)
            assert group["images/mnist"].dtype == np.uint8
            assert group["images/mnist"].compression == h5io.COMPRESSION
            assert group["labels"].dtype == np.int64
            assert group["z"].shape == (size, 2) and group["z"].dtype == np.float32
            assert group["code_index"].shape == (size,)
    assert not list(tmp_path.glob(".e.h5.tmp-*"))


def test_grid_labels_are_balanced_and_splits_share_no_code(
    tmp_path: Path, checkpoints: list[Path]
) -> None:
    out = generate_dataset(checkpoints, tmp_path / "e.h5", SMALL, device="cpu")
    train, test = h5io.read_split(out, "train"), h5io.read_split(out, "test")
    assert np.bincount(train.labels).tolist() == [20] * 10
    assert np.bincount(test.labels).tolist() == [10] * 10
    with h5py.File(out, "r") as handle:
        code_index = handle["train/code_index"][:]
    # Every code appears once with every class, and carries one z.
    for code in np.unique(code_index):
        rows = code_index == code
        assert sorted(train.labels[rows]) == list(range(10))
        assert np.all(train.z[rows] == train.z[rows][0])
    train_codes = {tuple(row) for row in train.z.tolist()}
    test_codes = {tuple(row) for row in test.z.tolist()}
    assert len(train_codes) == 20 and len(test_codes) == 10
    assert not train_codes & test_codes
    assert np.linalg.norm(train.z, axis=1).max() <= 2.0
    # The images depend on the code, not only on the class.
    same_class = train.images_float("mnist")[train.labels == 3]
    assert same_class.std(axis=0).mean() > 1e-3


def test_same_seed_gives_identical_bytes(tmp_path: Path, checkpoints: list[Path]) -> None:
    first = generate_dataset(checkpoints, tmp_path / "a.h5", SMALL, device="cpu")
    second = generate_dataset(checkpoints, tmp_path / "b.h5", SMALL, device="cpu")
    assert sha256(first) == sha256(second)
    other = GenerateConfig(n_train=200, n_test=100, seed=1)
    third = generate_dataset(checkpoints, tmp_path / "c.h5", other, device="cpu")
    assert sha256(third) != sha256(first)


def test_batch_size_does_not_change_the_data(
    tmp_path: Path, checkpoints: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small decoder groups, so that a small file spans several of them and every batch size
    # cuts the split into different steps.
    monkeypatch.setattr(generate, "DECODE_ROWS", 64)
    config = GenerateConfig(n_train=400, n_test=100, dtype="float32", block_codes=16)
    paths = [
        generate_dataset(checkpoints, tmp_path / f"b{size}.h5", config, "cpu", batch_size=size)
        for size in (10, 130, 4096)
    ]
    reference = h5io.read_split(paths[0], "train")
    for path in paths[1:]:
        data = h5io.read_split(path, "train")
        for name in reference.images:
            np.testing.assert_array_equal(data.images[name], reference.images[name])
        np.testing.assert_array_equal(data.z, reference.z)
    assert sha256(paths[0]) == sha256(paths[1]) == sha256(paths[2])


def test_three_modalities_with_repeated_sources(tmp_path: Path, checkpoints: list[Path]) -> None:
    third = make_checkpoint(tmp_path / "cvae-mnist-b", "mnist", seed=2)
    out = generate_dataset([*checkpoints, third], tmp_path / "e3.h5", SMALL, device="cpu")
    attrs = h5io.read_attrs(out)
    assert attrs["modalities"] == ["mnist", "fashion-mnist", "mnist-2"]
    data = h5io.read_split(out, "test")
    assert set(data.images) == {"mnist", "fashion-mnist", "mnist-2"}
    assert not np.array_equal(data.images["mnist"], data.images["mnist-2"])


def test_modality_names_are_derived_valid_or_refused_up_front(
    tmp_path: Path, checkpoints: list[Path]
) -> None:
    scan = make_checkpoint(tmp_path / "cvae-scan", "idx:/data/scan.v2", seed=2)
    out = generate_dataset([checkpoints[0], scan], tmp_path / "e.h5", SMALL, device="cpu")
    assert h5io.read_header(out).modalities == ("mnist", "scan-v2")
    # Refused before any checkpoint is read: these folders do not even exist.
    missing = [tmp_path / "nowhere-1", tmp_path / "nowhere-2"]
    with pytest.raises(ValueError, match=r"invalid modality name 'a\+b'"):
        generate_dataset(missing, tmp_path / "x.h5", SMALL, modality_names=["a+b", "c"])


def test_independent_labels_and_bernoulli_samples(tmp_path: Path, checkpoints: list[Path]) -> None:
    config = GenerateConfig(
        n_train=501, n_test=33, labels="independent", decode="sample", truncation="box"
    )
    out = generate_dataset(checkpoints, tmp_path / "i.h5", config, device="cpu")
    data = h5io.read_split(out, "train")
    assert len(data) == 501 and len({tuple(r) for r in data.z.tolist()}) == 501
    assert np.bincount(data.labels, minlength=10).min() > 20
    assert set(np.unique(data.images["mnist"]).tolist()) <= {0, 255}
    assert np.abs(data.z).max() <= 2.0


@pytest.mark.parametrize(
    ("latent_dim", "num_classes", "word"), [(3, 10, "latent_dim"), (2, 5, "num_classes")]
)
def test_mismatched_checkpoints_are_refused(
    tmp_path: Path, checkpoints: list[Path], latent_dim: int, num_classes: int, word: str
) -> None:
    odd = make_checkpoint(tmp_path / "odd", "mnist", latent_dim, num_classes)
    with pytest.raises(ValueError, match=f"disagree on {word}.*odd has") as error:
        generate_dataset([checkpoints[0], odd], tmp_path / "x.h5", SMALL, device="cpu")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "x.h5").exists()


def test_grid_size_must_be_a_multiple_of_the_classes(
    tmp_path: Path, checkpoints: list[Path]
) -> None:
    config = GenerateConfig(n_train=205, n_test=100)
    with pytest.raises(ValueError, match="--n-train 205 is not a multiple of the 10 classes"):
        generate_dataset(checkpoints, tmp_path / "x.h5", config, device="cpu")
    with pytest.raises(
        ValueError, match="grid every code is decoded once per class; use 200 or 210,"
    ):
        generate_dataset(checkpoints, tmp_path / "x.h5", config, device="cpu")
    # below one code per class: only the size above is suggested (not "use 10 or 10")
    config = GenerateConfig(n_train=100, n_test=8)
    with pytest.raises(ValueError, match="once per class; use 10, or --labels independent"):
        generate_dataset(checkpoints, tmp_path / "x.h5", config, device="cpu")


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, checkpoints: list[Path]) -> None:
    out = tmp_path / "e.h5"
    out.write_text("precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_dataset(checkpoints, out, SMALL, device="cpu")
    assert out.read_text() == "precious"
    generate_dataset(checkpoints, out, SMALL, device="cpu", overwrite=True)
    assert h5io.read_attrs(out)["kind"] == "entangled"


def test_a_failure_leaves_no_file(tmp_path: Path, checkpoints: list[Path]) -> None:
    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_dataset(checkpoints, tmp_path / "e.h5", SMALL, device="cpu", on_progress=interrupt)
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".e.h5*")) == []
