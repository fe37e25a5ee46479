"""Image shapes C×H×W end to end (issue #10): generate, shuffle, pair, inspect and evaluate with
modalities of 1×28×28, 3×32×32 and 1×8×8; 1×28×28 keeps the bytes of before."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import make_checkpoint
from mmgen import classifiers, evaluate, inspect, pair, shuffle
from mmgen.checkpoint import load_cvae
from mmgen.data import h5io
from mmgen.data.sources import SourceData
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.registry import build_model, load_model, save_model
from mmgen.report import assemble as report_assembly

SHAPES = {"mnist": (1, 28, 28), "svhn": (3, 32, 32), "digits": (1, 8, 8)}

# SHA-256 of the data (images, labels, z, code_index of both splits) of a tiny two-modality
# 1×28×28 generate with conftest's make_checkpoint, computed with /work/main's code before #10.
MAIN_DATA_SHA256 = {
    "mean": "da9a727d78dd9e4d208e490683038f98fbce837754ab5c4bdc3e171c27189254",
    "sample": "a161cba400e113c92e244c92137b7f37f238cd3c7ab1289959ba4a89f67a714e",
}


def data_sha256(path: Path, modalities: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    with h5py.File(path, "r") as handle:
        for split in h5io.SPLITS:
            for name in (*(f"images/{m}" for m in modalities), "labels", "z", "code_index"):
                dataset = handle[split][name]
                digest.update(f"{split}/{name}{dataset.shape}{dataset.dtype}".encode())
                digest.update(dataset[()].tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("decode", ["mean", "sample"])
def test_1x28x28_generate_gives_the_bytes_of_before(tmp_path: Path, decode: str) -> None:
    checkpoints = [
        make_checkpoint(tmp_path / "a", "mnist", seed=0),
        make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1),
    ]
    config = GenerateConfig(n_train=200, n_test=100, decode=decode, seed=5)
    out = generate_dataset(checkpoints, tmp_path / "e.h5", config, device="cpu")
    assert data_sha256(out, ("mnist", "fashion-mnist")) == MAIN_DATA_SHA256[decode]


@pytest.fixture
def mixed_checkpoints(tmp_path: Path) -> list[Path]:
    """Untrained seeded CVAEs of three shapes (made visibly z-dependent by conftest)."""
    return [
        make_checkpoint(tmp_path / f"cvae-{name}", name, seed=seed, image_shape=shape)
        for seed, (name, shape) in enumerate(SHAPES.items())
    ]


@pytest.fixture
def mixed_file(tmp_path: Path, mixed_checkpoints: list[Path]) -> Path:
    config = GenerateConfig(n_train=100, n_test=50, seed=2)
    return generate_dataset(mixed_checkpoints, tmp_path / "mixed.h5", config, device="cpu")


def test_generate_stores_each_modality_at_its_shape(
    mixed_file: Path, mixed_checkpoints: list[Path]
) -> None:
    header = h5io.read_header(mixed_file)
    assert header.modalities == tuple(SHAPES) and header.image_shapes == SHAPES
    with h5py.File(mixed_file, "r") as handle:
        assert handle["train/images/mnist"].shape == (100, 28, 28)  # grey: (N, H, W) as before
        assert handle["train/images/digits"].shape == (100, 8, 8)
        assert handle["train/images/svhn"].shape == (100, 3, 32, 32)
    data = h5io.read_split(mixed_file, "test")
    for index, (name, shape) in enumerate(SHAPES.items()):
        assert data.images[name].shape == (50, *shape)
        # the stored bytes are round(255·decoder mean) of the tuple's own code and class
        cvae = load_cvae(mixed_checkpoints[index])
        expected = cvae.decode(torch.from_numpy(data.z[:7]), torch.from_numpy(data.labels[:7]))
        expected = torch.round(expected * 255).to(torch.uint8).numpy()
        np.testing.assert_array_equal(data.images[name][:7], expected)
    assert data.images["svhn"].std() > 5  # not a constant image


def test_bernoulli_samples_at_every_shape(tmp_path: Path, mixed_checkpoints: list[Path]) -> None:
    config = GenerateConfig(n_train=20, n_test=10, decode="sample", seed=2)
    out = generate_dataset(mixed_checkpoints, tmp_path / "s.h5", config, device="cpu")
    data = h5io.read_split(out, "train")
    for name, shape in SHAPES.items():
        assert data.images[name].shape == (20, *shape)
        assert set(np.unique(data.images[name]).tolist()) == {0, 255}


def test_inspect_draws_modalities_of_different_shapes(
    tmp_path: Path, mixed_file: Path, mixed_checkpoints: list[Path]
) -> None:
    stored = inspect.draw_dataset(mixed_file, tmp_path / "stored.png", per_class=2, sweep_steps=4)
    decoded = inspect.draw_dataset(
        mixed_file, tmp_path / "decoded.png", per_class=2, cvae_folders=mixed_checkpoints
    )
    for png in (stored, decoded):
        assert png.stat().st_size > 5_000
    summary = inspect.summarize(mixed_file).format()
    assert "svhn (source svhn, 3×32×32)" in summary and "digits (source digits, 1×8×8)" in summary
    wrong_order = [mixed_checkpoints[1], mixed_checkpoints[0], mixed_checkpoints[2]]
    with pytest.raises(ValueError, match="decodes 3×32×32 images, but modality 'mnist'"):
        inspect.draw_dataset(mixed_file, tmp_path / "x.png", cvae_folders=wrong_order)


def test_shuffle_keeps_every_modality_s_shape(tmp_path: Path, mixed_file: Path) -> None:
    out = shuffle.mix_modality(mixed_file, tmp_path / "me.h5", shuffle.MixConfig(modality="svhn"))
    assert h5io.read_header(out).image_shapes == SHAPES
    source, mixed = h5io.read_split(mixed_file, "train"), h5io.read_split(out, "train")
    with h5py.File(out, "r") as handle:
        permutation = handle["train/permutation/svhn"][()]
    np.testing.assert_array_equal(mixed.images["svhn"], source.images["svhn"][permutation])
    np.testing.assert_array_equal(mixed.images["digits"], source.images["digits"])


def fake_source(name: str, split: str, shape: tuple[int, int, int], size: int) -> SourceData:
    """A hand-made source split whose images encode (class, index): checkable after pairing."""
    labels = np.arange(size) % 10
    images = np.zeros((size, *shape), np.uint8)
    images[:, 0, 0, 0] = labels * 20
    images[:, -1, -1, -1] = np.arange(size)
    return SourceData(
        name=name,
        split=split,
        images=images,
        labels=labels.astype(np.int64),
        class_names=tuple(str(k) for k in range(10)),
        files={f"{name}-{split}": "0" * 64},
        root=f"/data/{name}",
    )


def fake_load_split(spec: str, split: str, **_: object) -> SourceData:
    size = 40 if split == "train" else 20
    return fake_source(spec, split, SHAPES[spec], size)


def test_pair_pairs_real_images_of_different_shapes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pair, "load_split", fake_load_split)
    monkeypatch.setattr(pair, "get_source", SHAPES.__getitem__)  # the sources' names
    config = pair.PairConfig(sources=tuple(SHAPES), seed=1)
    out = pair.pair_sources(tmp_path / "naive.h5", config)
    assert h5io.read_header(out).image_shapes == SHAPES
    data = h5io.read_split(out, "train")
    with h5py.File(out, "r") as handle:
        rows = {m: handle[f"train/source_index/{m}"][()] for m in SHAPES}
    for name, shape in SHAPES.items():
        assert data.images[name].shape == (len(data), *shape)
        np.testing.assert_array_equal(data.images[name][:, 0, 0, 0], data.labels * 20)
        np.testing.assert_array_equal(data.images[name][:, -1, -1, -1], rows[name])


def test_multimodal_models_take_per_modality_shapes(tmp_path: Path) -> None:
    model = build_model("m2vae", tuple(SHAPES), seed=0, image_shapes=SHAPES)
    joint = model.encoders["mnist+svhn+digits"]
    assert [joint.branches[m][0].in_features for m in SHAPES] == [784, 3072, 64]
    decoded = model.decode(torch.zeros(4, 2))
    assert {m: tuple(v.shape) for m, v in decoded.items()} == {
        m: (4, *s) for m, s in SHAPES.items()
    }
    assert model.config.mean_input_dim == (784 + 3072 + 64) / 3
    folder = save_model(tmp_path / "m2vae", model)
    saved = json.loads((folder / "model.json").read_text())["config"]
    assert saved["image_shapes"] == [list(s) for s in SHAPES.values()]
    reloaded = load_model(folder)
    assert reloaded.config.shapes == SHAPES
    for name, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[name])
    # zero-filling JMVAE fills each missing modality with zeros of its own size
    zero = build_model("jmvae-zero", tuple(SHAPES), seed=0, image_shapes=SHAPES)
    mu, _ = zero.encode({"digits": torch.rand(3, 1, 8, 8)}, ("digits",))
    assert mu.shape == (3, 2)
    # 1×28×28 models keep the config (and the job keys) of before: no shapes stored
    grey = build_model("jmvae", ("a", "b"), seed=0, image_shapes=dict.fromkeys("ab", (1, 28, 28)))
    assert grey.config.image_shapes == ()


def test_classifier_reads_each_shape() -> None:
    config = classifiers.ClassifierConfig()
    for shape in SHAPES.values():
        model = classifiers.ImageClassifier(10, config, shape)
        assert model(torch.rand(5, *shape)).shape == (5, 10)
    grey = classifiers.ImageClassifier(10, config)
    assert grey.body[0].in_channels == 1 and grey.body[7].in_features == 64 * 7 * 7
    assert classifiers.ImageClassifier(10, config, (3, 32, 32)).body[7].in_features == 64 * 8 * 8
    with pytest.raises(ValueError, match="at least 4×4"):
        classifiers.ImageClassifier(10, config, (1, 2, 2))


def test_a_cached_classifier_rebuilds_at_its_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(classifiers, "load_split", fake_load_split)
    config = classifiers.ClassifierConfig(epochs=1, channels=(2, 4), feature_dim=8)
    trained = classifiers.load_or_train_classifier("svhn", cache=tmp_path, config=config)
    again = classifiers.load_or_train_classifier("svhn", cache=tmp_path, config=config)
    assert not trained.loaded and again.loaded
    assert again.model.image_shape == (3, 32, 32)
    images = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(again.classify(images), trained.classify(images))


def test_evaluate_m2vae_on_a_mixed_shape_file(
    tmp_path: Path, mixed_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(classifiers, "load_split", fake_load_split)
    monkeypatch.setattr(report_assembly, "load_split", fake_load_split)
    config = evaluate.EvaluateConfig(
        models=("m2vae",), epochs=1, k=3, prior_samples=20, joint_samples=30, batch_size=16,
        classifier_epochs=1, device="cpu",
    )  # fmt: skip
    out = tmp_path / "report"
    evaluate.evaluate_datasets([mixed_file], out, config, cache_dir=tmp_path / "cache")
    report = json.loads((out / "report.json").read_text())
    m2vae = report["datasets"]["mixed"]["models"]["m2vae"]
    assert set(m2vae["elbo"]) >= {"mnist+svhn+digits", "mnist", "svhn", "digits"}
    assert set(report["datasets"]["mixed"]["quality"]) == set(SHAPES)
    # Σ over 784 + 3072 + 64 Bernoulli terms: every one costs at most a few nats
    assert -50_000 < m2vae["elbo"]["mnist+svhn+digits"] < -100
    assert 0.0 <= m2vae["coherence"]["joint"] <= 1.0
    shapes = report["datasets"]["mixed"]["image_shapes"]
    assert {m: tuple(shape) for m, shape in shapes.items()} == SHAPES
    assert "b = svhn (3×32×32), c = digits (1×8×8)" in (out / "report.md").read_text()
