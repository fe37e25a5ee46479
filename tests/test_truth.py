"""``mmgen.truth``: the ground truth of a generated file, checked against independent numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import assert_one_line_error, make_checkpoint
from mmgen import rng
from mmgen.checkpoint import save_checkpoint
from mmgen.cli import app
from mmgen.data import h5io
from mmgen.errors import UsageError
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.cvae import CVAEConfig, build_cvae
from mmgen.shuffle import MixConfig, mix_modality
from mmgen.truth import (
    Settings,
    check_together,
    compute_truth,
    compute_truths,
    integrate,
    load_truth,
    prior,
    store_truth,
    true_gap,
    truth_path,
)
from mmgen.truth.oracle import Process, compute_values, load_process

SHAPE = (1, 8, 8)
PAIR = "mnist+fashion-mnist"
FAST = Settings(points=6)  # 12 cells per axis in the reported values: tiny files, fast tests


def ignoring_checkpoint(folder: Path, source: str, seed: int) -> Path:
    """A CVAE whose decoder ignores z (its first layer's z-columns are zero)."""
    config = CVAEConfig(latent_dim=2, num_classes=10, image_shape=SHAPE)
    model = build_cvae(config, rng.stream(seed, "init"))
    with torch.no_grad():
        model.decoder.dense[0].weight[:, :2] = 0.0
        model.decoder.deconv[-1].weight.mul_(8.0)
    metadata = {"source": {"name": source, "class_names": [str(k) for k in range(10)], "files": {}}}
    save_checkpoint(folder, model, None, metadata=metadata, history=[])
    return folder


def entangled_file(folder: Path, folders: list[Path], decode: str = "sample") -> Path:
    config = GenerateConfig(n_train=20, n_test=30, decode=decode)
    return generate_dataset(folders, folder / f"e-{decode}.h5", config, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("truth")
    folders = [
        make_checkpoint(folder / "a", "mnist", seed=0, image_shape=SHAPE),
        make_checkpoint(folder / "b", "fashion-mnist", seed=1, image_shape=SHAPE),
    ]
    e = entangled_file(folder, folders)
    files = {"e": e, "means": entangled_file(folder, folders, "mean")}
    for fraction in (0.25, 1.0):
        config = MixConfig(seed=1, fraction=fraction, block_codes=0)
        files[f"f{fraction}"] = mix_modality(e, folder / f"m{fraction}.h5", config)
    return files


def test_decoders_that_ignore_z_share_no_information(tmp_path: Path) -> None:
    folders = [
        ignoring_checkpoint(tmp_path / n, s, i)
        for i, (n, s) in enumerate((("a", "mnist"), ("b", "fashion-mnist")))
    ]
    e = entangled_file(tmp_path, folders)
    truths = {"e": compute_truth(e, FAST)}
    for fraction in (0.0, 0.5, 1.0):
        out = mix_modality(e, tmp_path / f"m{fraction}.h5", MixConfig(seed=2, fraction=fraction))
        truths[fraction] = compute_truth(out, FAST)
    reference = truths["e"].summary
    for truth in truths.values():
        summary = truth.summary
        assert np.abs(truth.per_tuple[f"mutual_information/{PAIR}"]).max() < 1e-9
        assert np.abs(truth.per_tuple["total_correlation"]).max() < 1e-9
        # Each class keeps its images, so the conditional density's mean cannot move.
        conditional = summary["conditional_log_likelihood"]["mean"]
        assert abs(conditional - reference["conditional_log_likelihood"]["mean"]) < 1e-9
        assert summary["log_likelihood"]["numerical_error"] < 1e-9  # nothing depends on z
    # The same tuples under every mixing fraction: the same density, to the last digit.
    header, process = load_process(e)
    data = h5io.read_split(e, "test")
    images = [torch.from_numpy(data.images_float(m)).flatten(1) for m in header.modalities]
    labels = torch.from_numpy(data.labels)
    names = list(header.modalities)
    first = compute_values(process, images, labels, names, FAST)[0]
    for fraction in (0.5, 1.0):
        mixed = dataclasses.replace(process, mixed=(1,), fraction=fraction)
        again = compute_values(mixed, images, labels, names, FAST)[0]
        for key in ("log_p", "log_p_given_class", f"mutual_information/{PAIR}"):
            torch.testing.assert_close(again[key], first[key], atol=1e-9, rtol=0)


def logit_phi(z: torch.Tensor) -> torch.Tensor:
    """``logit(Φ(z))``: a decoder whose pixel is on with probability Φ(z)."""
    return torch.special.log_ndtr(z) - torch.special.log_ndtr(-z)


def analytic_process(decode, truncation: str, radius: float, mixed=(), fraction=0.0) -> Process:
    decoders = [lambda z, labels: decode(z[:, :1]), lambda z, labels: decode(z[:, :1])]
    return Process(decoders, 1, 2, truncation, radius, "sample", mixed, fraction)


ALL_PAIRS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


def test_one_dimensional_closed_form() -> None:
    """σ(l(z)) = Φ(z), z ~ N(0, 1) (r = 8: P(T) ≈ 1): p(1, 1) = E Φ² = 1/3, p(1, 0) = 1/6."""
    process = analytic_process(logit_phi, "box", 8.0)
    images = [ALL_PAIRS[:, :1], ALL_PAIRS[:, 1:]]
    labels = torch.tensor([0, 1, 0, 1])
    values, errors, _ = compute_values(process, images, labels, ["a", "b"], Settings(points=400))
    joint = torch.log(torch.tensor([1 / 3, 1 / 6, 1 / 6, 1 / 3], dtype=torch.float64))
    torch.testing.assert_close(values["log_p_given_class"], joint, atol=1e-7, rtol=0)
    torch.testing.assert_close(values["log_p"], joint, atol=1e-7, rtol=0)  # class-free decoders
    torch.testing.assert_close(
        values["mutual_information/a+b"], joint - 2 * math.log(0.5), atol=1e-7, rtol=0
    )
    assert errors["log_p"].max() < 1e-6
    # I(a; b) under the process: (2/3) log(4/3) + (1/3) log(2/3) = 0.0566 nats.
    expected = (2 / 3) * math.log(4 / 3) + (1 / 3) * math.log(2 / 3)
    weights = torch.tensor([1 / 3, 1 / 6, 1 / 6, 1 / 3], dtype=torch.float64)
    assert abs(float((weights * values["mutual_information/a+b"]).sum()) - expected) < 1e-7


def test_truncated_prior_is_normalised_exactly() -> None:
    """A step decoder l(z) = 2·sign(z) on radial r = 1: each side holds half of p_T."""
    process = analytic_process(lambda z: 2.0 * torch.sign(z), "radial", 1.0)
    images = [ALL_PAIRS[:, :1], ALL_PAIRS[:, 1:]]
    values, _, _ = compute_values(
        process, images, torch.zeros(4, dtype=torch.int64), ["a", "b"], Settings(points=10)
    )
    on, off = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))
    same, different = 0.5 * (on**2 + off**2), on * off
    expected = torch.log(torch.tensor([same, different, different, same], dtype=torch.float64))
    torch.testing.assert_close(values["log_p_given_class"], expected, atol=1e-6, rtol=0)
    for latent_dim, truncation in ((1, "radial"), (2, "radial"), (2, "box")):
        exact = prior.prior_mass(latent_dim, truncation, 1.5)
        assert exact < 0.9
        assert abs(prior.grid_mass(latent_dim, truncation, 1.5, 400) / exact - 1) < 2e-3


def test_quadrature_agrees_with_importance_sampling(files: dict[str, Path]) -> None:
    quadrature = compute_truth(files["e"], Settings(points=12))
    sampled = compute_truth(files["e"], Settings(method="importance", samples=3000, seed=4))
    assert sampled.summary["computation"]["method"] == "importance"
    for key in ("log_likelihood", "conditional_log_likelihood"):
        q, s = quadrature.summary[key], sampled.summary[key]
        assert abs(q["mean"] - s["mean"]) < 3 * s["numerical_error"] + q["numerical_error"] + 1e-3
    q = quadrature.summary["mutual_information"][PAIR]
    s = sampled.summary["mutual_information"][PAIR]
    assert q["mean"] > 0.05  # the decoders share z: real information
    assert 0 < q["numerical_error"] < 0.05  # the 2× grid moved it, a little
    assert abs(q["mean"] - s["mean"]) < 3 * s["numerical_error"] + q["numerical_error"] + 1e-3


def direct_log_p(path: Path, fraction: float, points: int) -> np.ndarray:
    """log p_f(x) per test tuple by explicit loops over classes and grid codes (no matrices)."""
    header = h5io.read_header(path)
    from mmgen.checkpoint import load_cvae

    cvaes = [load_cvae(header.sources[m].checkpoint) for m in header.modalities]
    data = h5io.read_split(path, "test")
    x = [torch.from_numpy(data.images_float(m)).flatten(1).double() for m in header.modalities]
    step = 4.0 / points
    axis = [-2 + step * (i + 0.5) for i in range(points)]
    codes = [(u, v) for u in axis for v in axis if u * u + v * v <= 4.0]
    weights = np.array([math.exp(-(u * u + v * v) / 2) for u, v in codes])
    weights /= weights.sum()
    z = torch.tensor(codes, dtype=torch.float32)
    bernoullis = [  # per class, per modality: the decoded codes' pixel distributions
        [
            torch.distributions.Bernoulli(
                logits=cvae.model.decode_logits(z, torch.full((len(z),), label))
                .flatten(1)
                .double()
                .detach()
            )
            for cvae in cvaes
        ]
        for label in range(10)
    ]
    result = []
    for i in range(len(data)):
        per_class = []
        for label in range(10):
            a, b = (
                np.exp(bernoulli.log_prob(images[i].expand(len(z), -1)).sum(1).numpy())
                for bernoulli, images in zip(bernoullis[label], x, strict=True)
            )
            joint = (weights * a * b).sum()
            product = (weights * a).sum() * (weights * b).sum()
            per_class.append((1 - fraction) * joint + fraction * product)
        result.append(math.log(sum(per_class) / 10))
    return np.array(result)


def test_mixture_truth_against_a_direct_computation(files: dict[str, Path]) -> None:
    for key, fraction in (("f0.25", 0.25), ("f1.0", 1.0), ("e", 0.0)):
        truth = compute_truth(files[key], FAST)
        direct = direct_log_p(files[key], fraction, 2 * FAST.points)
        np.testing.assert_allclose(truth.per_tuple["log_p"], direct, atol=1e-3, rtol=0)
    # The true E − ME gap is the difference of the shared information (equal marginals).
    e, me = compute_truth(files["e"], FAST), compute_truth(files["f1.0"], FAST)
    shared = e.summary["total_correlation"]["mean"] - me.summary["total_correlation"]["mean"]
    conditional = [t.summary["conditional_log_likelihood"]["mean"] for t in (e, me)]
    assert abs(conditional[0] - conditional[1] - shared) < 1e-9
    gap = true_gap(e, me)
    assert gap["mean"] == pytest.approx(e.per_tuple["log_p"].mean() - me.per_tuple["log_p"].mean())
    assert gap["mean"] > 0
    assert abs(me.summary["total_correlation"]["mean"]) < 1e-9


def test_cli_stores_prints_and_inspect_shows(files: dict[str, Path]) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["truth", str(files["e"]), "--json", "--points", "6"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    figure = summary["mutual_information"][PAIR]
    assert figure["interval"][0] < figure["mean"] < figure["interval"][1]
    assert figure["numerical_error"] >= 0 and summary["numerical_error"]["how"]
    stored = load_truth(files["e"])
    assert (
        stored is not None and stored.summary["mutual_information"][PAIR]["mean"] == figure["mean"]
    )
    assert np.isclose(stored.per_tuple[f"mutual_information/{PAIR}"].mean(), figure["mean"])
    result = runner.invoke(app, ["inspect", str(files["e"])])
    assert result.exit_code == 0 and "I(mnist; fashion-mnist | c)" in result.output
    # the dataset card carries the stored truth (and says where it is missing)
    result = runner.invoke(app, ["card", str(files["e"])])
    assert result.exit_code == 0, result.output
    card = json.loads(files["e"].with_name(files["e"].name + ".card.json").read_text())
    assert card["truth"]["mutual_information"][PAIR]["mean"] == figure["mean"]
    assert card["truth_note"].endswith(".truth.h5")
    result = runner.invoke(app, ["card", str(files["f0.25"])])
    card = json.loads(files["f0.25"].with_name(files["f0.25"].name + ".card.json").read_text())
    if load_truth(files["f0.25"]) is None:
        assert card["truth"] is None and "mmgen truth" in card["truth_note"]


def test_decoded_means_have_an_entropy_floor_and_no_target(files: dict[str, Path]) -> None:
    truth = compute_truth(files["means"])
    assert truth.summary["finite"] is False and truth.summary["mutual_information"] is None
    assert "no finite target" in truth.summary["statement"]
    x = h5io.read_split(files["means"], "test").images_float("mnist").reshape(30, -1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.nan_to_num(x * np.log(x)) - np.nan_to_num((1 - x) * np.log(1 - x))
    np.testing.assert_allclose(truth.per_tuple["entropy_floor/mnist"], entropy.sum(1), rtol=1e-9)
    # and it is stored and read back (a per-modality floor beside the total, not under it)
    store_truth(files["means"], truth)
    stored = load_truth(files["means"])
    assert stored is not None and stored.summary == truth.summary
    for name, values in truth.per_tuple.items():
        np.testing.assert_array_equal(stored.per_tuple[name], values)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    folders = [
        make_checkpoint(tmp_path / "a", "mnist", seed=0, image_shape=SHAPE),
        make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1, image_shape=SHAPE),
    ]
    e = entangled_file(tmp_path, folders)
    runner = CliRunner()
    # CVAEs that do not match the recorded hashes: b's weights replaced by a's.
    original = (tmp_path / "b" / "weights.pt").read_bytes()
    shutil.copy(tmp_path / "a" / "weights.pt", tmp_path / "b" / "weights.pt")
    result = runner.invoke(app, ["truth", str(e)])
    assert_one_line_error(result, "is not the one that generated modality 'fashion-mnist'")
    assert not truth_path(e).exists()
    (tmp_path / "b" / "weights.pt").write_bytes(original)
    # A file without its CVAEs.
    shutil.move(tmp_path / "a", tmp_path / "moved")
    result = runner.invoke(app, ["truth", str(e), "--json"])
    assert_one_line_error(result, "the CVAE of modality 'mnist' is not at")
    assert not truth_path(e).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "e-sample.h5", "moved"]
    with h5py.File(e, "r") as handle:
        assert "truth" not in handle


def test_decode_once_for_several_files_equals_each_file_alone(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [files["e"], files["f1.0"], files["f0.25"], files["means"]]
    alone = [compute_truth(path, FAST) for path in paths]
    decoded = []  # (class, codes) of every decoder call
    original = integrate.decode_block

    def counting(decoders, z, labels, batch=integrate.DECODE_BATCH):
        decoded.append((int(labels[0]), len(z)))
        return original(decoders, z, labels, batch)

    monkeypatch.setattr(integrate, "decode_block", counting)
    together = compute_truths(paths, FAST)
    codes = sum(len(prior._grid(2, "radial", 2.0, p)[0]) for p in (6, 12))
    assert sum(n for _, n in decoded) == 10 * codes  # each class's grids decoded once, not 3×
    for one, many in zip(alone, together, strict=True):
        assert many.summary == one.summary
        assert sorted(many.per_tuple) == sorted(one.per_tuple)
        for key, value in one.per_tuple.items():
            np.testing.assert_array_equal(many.per_tuple[key], value)
    # The CLI computes them together, stores each sidecar and prints a list.
    result = CliRunner().invoke(
        app, ["truth", *map(str, paths[:3]), "--json", "--points", "6", "--recompute"]
    )
    assert result.exit_code == 0, result.output
    records = json.loads(result.output)
    assert [r["file"] for r in records] == list(map(str, paths[:3]))
    for path, record, one in zip(paths[:3], records, alone[:3], strict=True):
        assert record["mutual_information"] == one.summary["mutual_information"]
        stored = load_truth(path)
        assert stored is not None
        np.testing.assert_array_equal(stored.per_tuple["log_p"], one.per_tuple["log_p"])


def test_files_of_different_cvaes_are_refused_together(
    files: dict[str, Path], tmp_path: Path
) -> None:
    folders = [
        make_checkpoint(tmp_path / "a", "mnist", seed=5, image_shape=SHAPE),
        make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1, image_shape=SHAPE),
    ]
    other = entangled_file(tmp_path, folders)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(app, ["truth", str(other), str(files["f1.0"]), "--points", "6"])
    assert_one_line_error(result, "was not generated like")
    assert "CVAE SHA-256" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    header = h5io.read_header(files["e"])
    cvaes = [Path(header.sources[m].checkpoint) for m in header.modalities]
    config = GenerateConfig(n_train=10, n_test=10, decode="sample", truncation="box")
    box = generate_dataset(cvaes, tmp_path / "box.h5", config, device="cpu")
    check_together([files["e"], files["f0.25"], files["means"]])  # alike: no error
    with pytest.raises(UsageError, match="truncation: box"):
        check_together([files["e"], box])


def test_unchecked_quadrature_has_the_same_values_and_a_null_error(
    files: dict[str, Path],
) -> None:
    checked = compute_truth(files["f0.25"], FAST)
    unchecked = compute_truth(files["f0.25"], dataclasses.replace(FAST, check=False))
    for key, value in checked.per_tuple.items():
        np.testing.assert_array_equal(unchecked.per_tuple[key], value)
    figure = unchecked.summary["mutual_information"][PAIR]
    assert figure["numerical_error"] is None and figure["mean"] == pytest.approx(
        checked.summary["mutual_information"][PAIR]["mean"], abs=1e-12
    )
    assert unchecked.summary["numerical_error"]["max_per_tuple_log_likelihood"] is None
    assert "not checked" in unchecked.summary["numerical_error"]["how"]
    assert checked.summary["mutual_information"][PAIR]["numerical_error"] > 0
    result = CliRunner().invoke(
        app, ["truth", str(files["f0.25"]), "--json", "--points", "6", "--no-check", "--recompute"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["log_likelihood"]["numerical_error"] is None


def test_generate_and_shuffle_store_the_truth_when_asked(tmp_path: Path) -> None:
    """--truth-points N stores what `mmgen truth --points N` computes, for E and its twin."""
    runner = CliRunner()
    folders = [
        make_checkpoint(tmp_path / "a", "mnist", seed=0, image_shape=SHAPE),
        make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1, image_shape=SHAPE),
    ]
    cvaes = [arg for folder in folders for arg in ("--cvae", str(folder))]
    e, me = tmp_path / "e.h5", tmp_path / "me.h5"
    common = ["--n-train", "20", "--n-test", "30", "--decode", "sample", "--device", "cpu"]
    result = runner.invoke(
        app, ["generate", *cvaes, *common, "--out", str(e), "--truth-points", "6"]
    )
    assert result.exit_code == 0, result.output
    assert "Truth of e.h5, stored in e.h5.truth.h5" in result.output
    stored_e = load_truth(e)
    expected_e = compute_truth(e, FAST)  # computed afresh, not read back
    assert stored_e is not None
    np.testing.assert_array_equal(stored_e.per_tuple["log_p"], expected_e.per_tuple["log_p"])
    result = runner.invoke(app, ["shuffle", str(e), "--out", str(me), "--truth-points", "6"])
    assert result.exit_code == 0, result.output
    stored_me = load_truth(me)
    assert stored_me is not None
    np.testing.assert_allclose(
        stored_me.per_tuple["log_p"], compute_truth(me, FAST).per_tuple["log_p"], atol=1e-9
    )
    assert true_gap(stored_e, stored_me)["mean"] > 0
    # without the option nothing is computed; a grid of one cell is refused before any work
    plain = tmp_path / "plain.h5"
    assert runner.invoke(app, ["generate", *cvaes, *common, "--out", str(plain)]).exit_code == 0
    assert load_truth(plain) is None
    bad = tmp_path / "bad.h5"
    result = runner.invoke(
        app, ["generate", *cvaes, *common, "--out", str(bad), "--truth-points", "1"]
    )
    assert_one_line_error(result, "--truth-points 1")
    assert not bad.exists()
