"""The truth of PolyMNIST-E composites (``mmgen.truth.composite``) against a brute-force sum.

The brute force enumerates every crop position of every background for every image, keeps the
positions whose window makes the image (each pixel the crop's or its inverse, in all channels)
and sums ``P(p) · p(d_p | z, c)`` over them, on its own grid of codes: no digit recovery, no
index of the backgrounds, no identifiability argument.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_checkpoint
from mmgen import polymnist
from mmgen.checkpoint import load_cvae
from mmgen.data import h5io
from mmgen.errors import UsageError
from mmgen.generate import GenerateConfig
from mmgen.shuffle import MixConfig, mix_modality
from mmgen.truth import Settings, compute_truth, compute_truths, true_gap
from mmgen.truth.composite import observe

SHAPE = (1, 8, 8)
FAST = Settings(points=5)  # 10 cells per axis in the reported values
CONFIG = GenerateConfig(n_train=10, n_test=10, decode="sample", block_codes=2)


def photo(path: Path, seed: int, size: tuple[int, int]) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("composite")
    a = make_checkpoint(folder / "a", "mnist", seed=0, image_shape=SHAPE)
    b = make_checkpoint(folder / "b", "mnist", seed=1, image_shape=SHAPE)
    backgrounds = folder / "bg"
    backgrounds.mkdir()
    photo(backgrounds / "p0.png", 0, (10, 11))  # 3 × 4 = 12 crop positions
    photo(backgrounds / "p1.png", 1, (9, 12))  # 2 × 5 = 10
    e = polymnist.generate_polymnist(
        [a, a, b], folder / "e.h5", CONFIG, [str(backgrounds)], device="cpu"
    )
    mixed = mix_modality(e, folder / "m.h5", MixConfig(modality="m1,m2", seed=3))
    return {"e": e, "mixed": mixed, "folder": folder, "backgrounds": backgrounds}


def grid(points: int) -> tuple[torch.Tensor, np.ndarray]:
    """Cell centres of [−2, 2]² inside the radius-2 disc and their normalised N(0, I) weights."""
    step = 4.0 / points
    axis = [-2 + step * (i + 0.5) for i in range(points)]
    codes = [(u, v) for u in axis for v in axis if u * u + v * v <= 4.0]
    weights = np.array([math.exp(-(u * u + v * v) / 2) for u, v in codes])
    return torch.tensor(codes, dtype=torch.float32), weights / weights.sum()


def making_positions(image: np.ndarray, photos: list[np.ndarray]) -> list[tuple[float, np.ndarray]]:
    """Every ``(P(p), digit)`` whose crop makes ``image`` ``(3, H, W)``: all positions tried."""
    height, width = image.shape[1:]
    found = []
    for pixels in photos:
        count = (pixels.shape[0] - height + 1) * (pixels.shape[1] - width + 1)
        for top in range(pixels.shape[0] - height + 1):
            for left in range(pixels.shape[1] - width + 1):
                crop = pixels[top : top + height, left : left + width].transpose(2, 0, 1)
                plain = np.all(image == crop, axis=0)
                inverse = np.all(image == 255 - crop, axis=0)
                if np.all(plain | inverse):
                    found.append((1.0 / (len(photos) * count), inverse.astype(np.float64)))
    return found


def brute_log_p(path: Path, permuted: tuple[str, ...], points: int) -> np.ndarray:
    """``log P(x)`` per test tuple: classes × codes × modalities × every crop position."""
    header = h5io.read_header(path)
    names = list(header.modalities)
    photos = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in sorted(Path(header.nuisance["backgrounds"]["m0"]["spec"]).iterdir())
    ]
    cvaes = {m: load_cvae(header.sources[m].checkpoint) for m in names}
    data = h5io.read_split(path, "test")
    z, weights = grid(points)
    result = []
    for i in range(len(data)):
        per_modality = {
            m: making_positions(data.images[m][i], photos) for m in names
        }  # list of (P(p), digit (H, W))
        total = 0.0
        for label in range(10):
            likelihood = {}  # m → (G,) P(x_m | z_j, c)
            for m in names:
                logits = cvaes[m].model.decode_logits(z, torch.full((len(z),), label))
                logits = logits.flatten(1).double().detach()
                per_code = np.zeros(len(z))
                for mass, digit in per_modality[m]:
                    bernoulli = torch.distributions.Bernoulli(logits=logits)
                    d = torch.from_numpy(digit.ravel()).expand(len(z), -1)
                    per_code += mass * np.exp(bernoulli.log_prob(d).sum(1).numpy())
                likelihood[m] = per_code
            kept = [m for m in names if m not in permuted]
            joint = (weights * np.prod([likelihood[m] for m in kept], axis=0)).sum()
            for m in permuted:
                joint *= (weights * likelihood[m]).sum()
            total += joint / 10
        result.append(math.log(total))
    return np.array(result)


def test_composite_truth_equals_the_brute_force_sum_over_crops(made) -> None:
    e, mixed = compute_truths([made["e"], made["mixed"]], FAST)
    for truth, path, permuted in ((e, made["e"], ()), (mixed, made["mixed"], ("m1", "m2"))):
        direct = brute_log_p(path, permuted, 2 * FAST.points)
        # float32 scoring (docs/truth.md): agreement to a few 1e-6 nats
        np.testing.assert_allclose(truth.per_tuple["log_p"], direct, atol=5e-5, rtol=0)
    assert e.summary["observation"]["max_consistent_crops"] == {"m0": 1, "m1": 1, "m2": 1}
    # m0 and m1 share one CVAE and z: real information; the twin keeps none of it given c.
    assert e.summary["mutual_information"]["m0+m1"]["mean"] > 0.05
    assert abs(mixed.summary["total_correlation"]["mean"]) < 1e-9
    # Each split holds the same images per modality in both files, so the conditional
    # likelihood gap is exactly the shared information.
    conditional = [t.summary["conditional_log_likelihood"]["mean"] for t in (e, mixed)]
    shared = e.summary["total_correlation"]["mean"]
    assert conditional[0] - conditional[1] == pytest.approx(shared, abs=1e-9)
    assert true_gap(e, mixed)["mean"] > 0


def test_a_crop_mass_counts_every_position_that_makes_the_image(tmp_path: Path) -> None:
    """A photo whose crops all look alike: every position makes the image, one digit."""
    uniform = polymnist.Background("flat", np.full((10, 12, 3), 40, dtype=np.uint8), "0")
    digit = np.zeros((1, 8, 8), dtype=bool)
    digit[0, 2:5, 3] = True
    image = polymnist.composite(digit, np.full((1, 3, 8, 8), 40, dtype=np.uint8))
    seen = observe(image, np.array([[0, 1, 2]]), [uniform])
    assert seen.positions[0] == 3 * 5
    assert seen.log_mass[0] == pytest.approx(0.0)  # all 15 positions of the only photo
    np.testing.assert_array_equal(seen.digits[0], digit.ravel().astype(np.float32))


def test_an_ambiguous_digit_is_refused(tmp_path: Path) -> None:
    """Columns alternating v, 255 − v: shifting the crop by one inverts it, and the digit."""
    columns = np.where(np.arange(9) % 2 == 0, 30, 225).astype(np.uint8)
    pixels = np.broadcast_to(columns[None, :, None], (8, 9, 3)).copy()
    background = polymnist.Background("stripes", pixels, "0")
    digit = np.zeros((1, 8, 8), dtype=bool)
    digit[0, 4, 4] = True
    crop = polymnist.crop([background], np.array([[0, 0, 0]]), 8, 8)
    with pytest.raises(UsageError, match="not identifiable"):
        observe(polymnist.composite(digit, crop), np.array([[0, 0, 0]]), [background])


def test_damaged_crops_and_changed_backgrounds_are_refused(made, tmp_path: Path) -> None:
    damaged = shutil.copy(made["e"], tmp_path / "damaged.h5")
    with h5py.File(damaged, "r+") as handle:
        rows = handle["test/nuisance/m2"]
        first = rows[0]
        pixels = np.asarray(Image.open(made["backgrounds"] / f"p{first[0]}.png"))
        rows[0] = [first[0], first[1], (first[2] + 1) % (pixels.shape[1] - 7)]
    with pytest.raises(UsageError, match="tuple 0: its stored crop .* does not make its image"):
        compute_truth(damaged, FAST)
    with h5py.File(damaged, "r+") as handle:
        handle["test/nuisance/m2"][3] = [first[0], first[1], 99]  # beyond the photo
    with pytest.raises(UsageError, match="tuple 3: its stored crop .* lies outside"):
        compute_truth(damaged, FAST)
    photo(made["backgrounds"] / "p1.png", 9, (9, 12))  # another photo under the same name
    try:
        with pytest.raises(UsageError, match="not the ones the file was made with"):
            compute_truth(made["e"], FAST)
    finally:
        photo(made["backgrounds"] / "p1.png", 1, (9, 12))


def test_several_permuted_modalities_need_the_whole_split(made, tmp_path: Path) -> None:
    partly = mix_modality(
        made["e"], tmp_path / "partly.h5", MixConfig(modality="m1,m2", seed=3, fraction=0.5)
    )
    with pytest.raises(UsageError, match="no truth here"):
        compute_truth(partly, FAST)


def test_polymnist_and_shuffle_store_the_truth_when_asked(made, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from conftest import assert_one_line_error
    from mmgen.cli import app
    from mmgen.truth import load_truth

    runner = CliRunner()
    folder, backgrounds = made["folder"], made["backgrounds"]
    e = tmp_path / "e.h5"
    args = ["polymnist", "--cvae", folder / "a", "--cvae", folder / "a", "--cvae", folder / "b",
            "--background", backgrounds, "--n-train", "10", "--n-test", "10", "--decode",
            "sample", "--device", "cpu", "--quiet", "--out", e, "--truth-points", "5"]  # fmt: skip
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Truth of e.h5" in result.output
    stored = load_truth(e)
    fresh = compute_truth(e, FAST)
    np.testing.assert_array_equal(stored.per_tuple["log_p"], fresh.per_tuple["log_p"])
    me = tmp_path / "me.h5"
    result = runner.invoke(
        app, ["shuffle", str(e), "--modality", "m1,m2", "--out", str(me), "--truth-points", "5"]
    )
    assert result.exit_code == 0, result.output
    assert abs(load_truth(me).summary["total_correlation"]["mean"]) < 1e-9
    naive = ["polymnist", "--naive", "--out", str(tmp_path / "n.h5"), "--truth-points", "5"]
    assert_one_line_error(runner.invoke(app, naive), "a naive pairing of real digits has no")
    assert not (tmp_path / "n.h5").exists()
