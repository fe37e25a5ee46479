"""``mmgen.probes``: latent-recovery probes on synthetic posteriors with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmgen import probes
from mmgen.data import h5io
from mmgen.data.header import DatasetHeader, ModalitySource
from mmgen.rng import stream
from mmgen.shuffle import MixConfig, mix_modality

NUM_CLASSES = 10
ANGLES = torch.arange(NUM_CLASSES, dtype=torch.float64) * 2 * math.pi / NUM_CLASSES
# Every class in its own region of the posterior space, at its own scale: what a 2-d latent
# that also separates ten classes looks like, and what blinds one global linear map.
OFFSETS = 10 * torch.stack([ANGLES.cos(), ANGLES.sin()], dim=1)
SCALES = torch.linspace(0.3, 1.5, NUM_CLASSES, dtype=torch.float64)


def rotation(angle: torch.Tensor) -> torch.Tensor:
    """``(N, 2, 2)`` rotation matrices."""
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def class_affine_map(labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A different rotation, scale and offset per class."""
    turned = (rotation(1.7 * ANGLES[labels]) @ z[..., None])[..., 0]
    return OFFSETS[labels] + SCALES[labels, None] * turned


def class_swirl(labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A smooth non-linear bijection per class: turn by an angle growing with ‖z‖, stretch the
    radius by ``1 + 0.3‖z‖²`` (monotone, so invertible), then the class's scale and offset."""
    radius = z.norm(dim=1)
    turned = (rotation(ANGLES[labels] + 1.5 * radius) @ z[..., None])[..., 0]
    return OFFSETS[labels] + SCALES[labels, None] * turned * (1 + 0.3 * radius**2)[:, None]


def codes(per_class: int, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced labels and codes ``z ~ N(0, I_2)``, ``(N,)`` and ``(N, 2)``."""
    labels = torch.arange(per_class * NUM_CLASSES) % NUM_CLASSES
    z = torch.randn(len(labels), 2, generator=stream(0, key), dtype=torch.float64)
    return labels, z


@pytest.fixture(scope="module")
def splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": codes(1000, "train"), "test": codes(100, "test")}


def score(probe, encode, splits, labels_of=lambda labels: labels) -> tuple[float, dict]:
    """R² of ``probe`` on posteriors ``encode(labels, z)`` of the train and test splits."""
    (train_labels, train_z), (test_labels, test_z) = splits["train"], splits["test"]
    predicted, details = probe(
        encode(train_labels, train_z),
        labels_of(train_labels),
        train_z,
        encode(test_labels, test_z),
        labels_of(test_labels),
    )
    return probes.r_squared(test_z, predicted), details


def one_class(labels: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(labels)


# ----- R² ---------------------------------------------------------------------------------------
def test_r_squared_is_pooled_over_dimensions() -> None:
    truth = torch.tensor([[-1.0, -10.0], [1.0, 10.0]])
    assert probes.r_squared(truth, truth) == 1.0
    assert probes.r_squared(truth, torch.zeros_like(truth)) == 0.0
    # Exact on the wide dimension, the mean on the narrow one: 1 − 2/202 (not the 0.5 of a
    # mean over per-dimension R²).
    predicted = torch.tensor([[0.0, -10.0], [0.0, 10.0]])
    assert probes.r_squared(truth, predicted) == pytest.approx(1 - 2 / 202, rel=1e-12)
    assert probes.r_squared(truth, -truth) == pytest.approx(-3.0)
    assert math.isnan(probes.r_squared(torch.ones(3, 2), torch.zeros(3, 2)))  # undefined


# ----- the probes on posteriors with known answers ---------------------------------------------
def test_an_affine_map_per_class_is_recovered_where_one_global_map_is_blind(splits) -> None:
    r2, details = score(probes.class_affine, class_affine_map, splits)
    assert r2 == pytest.approx(1.0, abs=1e-9)
    assert details == {}
    # The same least squares, blind to the class: the old single linear probe.
    blind, _ = score(probes.class_affine, class_affine_map, splits, one_class)
    assert abs(blind) < 0.05
    knn, details = score(probes.class_knn, class_affine_map, splits)
    assert knn > 0.98
    assert details["k"] <= 4  # noiseless: the nearest neighbours are best


def test_a_smooth_bijection_per_class_is_recovered_by_the_knn_probe(splits) -> None:
    knn, _ = score(probes.class_knn, class_swirl, splits)
    assert knn > 0.95
    # Not affine: the affine probe sees only part of it.
    affine, _ = score(probes.class_affine, class_swirl, splits)
    assert affine < 0.5


def test_posteriors_independent_of_z_give_r_squared_near_zero(splits) -> None:
    def noise(labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        generator = stream(1, "noise", len(labels))
        return OFFSETS[labels] + torch.randn(z.shape, generator=generator, dtype=z.dtype)

    for probe in probes.PROBES.values():
        r2, details = score(probe, noise, splits)
        assert abs(r2) < 0.03
    # Leave-one-out prefers averaging as many neighbours as possible: the class mean.
    assert details["k"] == max(probes.K_GRID)


def test_chunked_distances_give_the_same_answer(splits, monkeypatch) -> None:
    whole = score(probes.class_knn, class_swirl, splits)
    monkeypatch.setattr(probes, "CHUNK_ENTRIES", 7_000)  # 7 query rows of 1000 points at a time
    assert score(probes.class_knn, class_swirl, splits) == whole


def test_leave_one_out_does_not_count_a_point_as_its_own_neighbour() -> None:
    labels, z = codes(50, "loo")
    # Posteriors that are pure noise: with itself as a neighbour, k = 1 would look perfect.
    means = torch.randn(z.shape, generator=stream(2, "loo"), dtype=z.dtype)
    assert probes.choose_k(means, labels, z, grid=(1, 8, 49)) == 49
    assert probes.choose_k(z, labels, z, grid=(1, 8, 49)) == 1


def test_a_class_missing_from_training_gets_the_mean_code() -> None:
    train_means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    train_z = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 6.0]])
    train_labels = torch.zeros(3, dtype=torch.long)
    test_means = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    test_labels = torch.tensor([0, 1])
    for probe in probes.PROBES.values():
        predicted, _ = probe(train_means, train_labels, train_z, test_means, test_labels)
        torch.testing.assert_close(predicted[1], torch.tensor([1.0, 2.0], dtype=torch.float64))
    affine, _ = probes.class_affine(train_means, train_labels, train_z, test_means, test_labels)
    # The exact affine fit through three points, up to the 1e-6 relative ridge.
    expected = torch.tensor([3.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(affine[0], expected, rtol=1e-5, atol=0)


def test_a_collapsed_encoder_predicts_the_class_mean_code(splits) -> None:
    def collapsed(labels: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return OFFSETS[labels]  # every tuple of a class at the same point: singular scatter

    (train_labels, train_z) = splits["train"]
    r2, _ = score(probes.class_affine, collapsed, splits)
    assert abs(r2) < 0.03
    predicted, _ = probes.class_affine(
        OFFSETS[train_labels], train_labels, train_z, OFFSETS[:2], torch.tensor([0, 1])
    )
    torch.testing.assert_close(predicted[1], train_z[train_labels == 1].mean(0))


def test_mismatched_rows_are_a_clear_error() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"train means, labels and codes differ in rows"):
        probes.class_knn(x, torch.zeros(3, dtype=torch.long), x, x, torch.zeros(4))


def test_latent_recovery_scores_every_encoder_against_every_code(splits) -> None:
    (train_labels, train_z), (test_labels, test_z) = splits["train"], splits["test"]
    # A second code, independent of z within each class: what the permuted modality of a
    # mixed file was decoded from.
    own = {
        split: torch.randn(z.shape, generator=stream(3, split), dtype=z.dtype)
        for split, (_, z) in splits.items()
    }
    train_means = {
        "a+b": class_swirl(train_labels, train_z),
        "b": class_affine_map(train_labels, own["train"]),
    }
    test_means = {
        "a+b": class_swirl(test_labels, test_z),
        "b": class_affine_map(test_labels, own["test"]),
    }
    targets = {"z": (train_z, test_z), "z[b]": (own["train"], own["test"])}
    result = probes.latent_recovery(train_means, train_labels, test_means, test_labels, targets)
    assert set(result) == {"a+b", "b"}
    assert set(result["b"]) == {"z", "z[b]"}
    assert set(result["b"]["z"]) == {"class_affine", "class_knn"}
    assert result["a+b"]["z"]["class_knn"]["r2"] > 0.95
    assert abs(result["a+b"]["z[b]"]["class_knn"]["r2"]) < 0.05
    assert result["b"]["z[b]"]["class_affine"]["r2"] == pytest.approx(1.0, abs=1e-9)
    assert abs(result["b"]["z"]["class_affine"]["r2"]) < 0.05
    assert result["b"]["z"]["class_knn"]["k"] in probes.K_GRID


def test_code_keys_round_trip() -> None:
    assert probes.code_key("fashion-mnist") == "z[fashion-mnist]"
    assert probes.code_modality("z[fashion-mnist]") == "fashion-mnist"
    assert probes.code_modality("z") is None


# ----- the codes of a mixed file -------------------------------------------------------------
def write_entangled(path: Path, sizes: dict[str, int], kind: str = "entangled") -> Path:
    """An entangled file whose images carry their own code: pixels (0, 0) and (0, 1) hold z.

    With ``kind="naive"`` the file stores no codes (the images still carry them).
    """
    modalities = ["a", "b"]
    latent_dim = 0 if kind == "naive" else 2
    header = DatasetHeader(
        kind=kind,
        modalities=tuple(modalities),
        sources={m: ModalitySource("mnist") for m in modalities},
        num_classes=NUM_CLASSES,
        class_names=tuple(str(c) for c in range(NUM_CLASSES)),
        latent_dim=latent_dim,
        seed=0,
        config={},
    )
    fields = h5io.standard_fields(modalities, "float32", latent_dim)
    with h5io.create_dataset(path, header, sizes, fields) as writer:
        for split, size in sizes.items():
            rng = np.random.default_rng([4, size])
            z = rng.uniform(size=(size, 2)).astype(np.float32)
            images = np.zeros((size, 28, 28), np.float32)
            images[:, 0, :2] = z
            rows = {"images/a": images, "images/b": images, "z": z}
            rows["labels"] = np.arange(size) % NUM_CLASSES
            rows["code_index"] = np.arange(size)
            if not latent_dim:
                del rows["z"], rows["code_index"]
            writer.append(split, rows)
    return path


def test_the_permuted_modality_s_code_is_the_one_its_image_was_decoded_from(tmp_path) -> None:
    entangled = write_entangled(tmp_path / "e.h5", {"train": 60, "test": 40})
    mixed = mix_modality(entangled, tmp_path / "me.h5", MixConfig(modality="b", seed=3))
    for rows in ({"train": 60, "test": 40}, {"train": 25, "test": 7}):  # all, and --limit
        targets = probes.read_codes(mixed, rows["train"], rows["test"])
        assert set(targets) == {"z", "z[b]"}
        for index, split in enumerate(("train", "test")):
            data = h5io.read_split(mixed, split, rows[split])
            z, own = targets["z"][index], targets["z[b]"][index]
            assert len(z) == len(own) == rows[split]
            np.testing.assert_array_equal(z.numpy(), data.images["a"][:, 0, 0, :2])
            np.testing.assert_array_equal(own.numpy(), data.images["b"][:, 0, 0, :2])
            assert not torch.equal(z, own)  # the permutation really moved codes
    plain = probes.read_codes(entangled, 60, 40)
    assert set(plain) == {"z"}
    np.testing.assert_array_equal(plain["z"][1].numpy(), h5io.read_split(entangled, "test").z)


def test_a_file_without_codes_has_no_targets(tmp_path) -> None:
    path = write_entangled(tmp_path / "naive.h5", {"train": 20, "test": 10}, kind="naive")
    assert probes.read_codes(path, 20, 10) is None


def test_a_permutation_outside_its_split_is_a_clear_error(tmp_path) -> None:
    entangled = write_entangled(tmp_path / "e.h5", {"train": 20, "test": 10})
    mixed = mix_modality(entangled, tmp_path / "me.h5", MixConfig(modality="b"))
    with h5py.File(mixed, "a") as handle:
        handle["test/permutation/b"][0] = 10
    with pytest.raises(ValueError, match="test/permutation/b points outside the split's 10"):
        probes.read_codes(mixed, 20, 10)
