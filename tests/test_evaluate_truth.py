"""``mmgen evaluate`` against the ground truth: calibration, means files, subsets, latent size.

Every figure is recomputed here from the sidecar's arrays and the files' images read with h5py
(issues 16 and 17), not through the code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import mmgen.runner
from conftest import assert_one_line_error, make_checkpoint
from mmgen.errors import UsageError
from mmgen.evaluate import EvaluateConfig, evaluate_datasets, inspect_datasets, plan_jobs
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.runner import load_dataset
from mmgen.shuffle import MixConfig, mix_modality
from mmgen.study.recipe import validate
from mmgen.study.steps import evaluate_config
from mmgen.truth import Settings, ensure_truths, truth_path
from test_evaluate import QUICK, invoke

FAST = Settings(points=6)
ROWS = 20  # two whole permutation blocks of two codes × ten classes: a marginal-keeping prefix


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Sampled E (40 test tuples: 4 codes × 10 classes), its mixed twin and a half-mixed twin
    permuted within blocks of 2 codes, a decoded-means file; truths stored for E and ME only."""
    folder = tmp_path_factory.mktemp("evaltruth")
    cvaes = [
        make_checkpoint(folder / "a", "mnist", seed=0),
        make_checkpoint(folder / "b", "fashion-mnist", seed=1),
    ]
    sampled = GenerateConfig(n_train=40, n_test=40, decode="sample")
    e = generate_dataset(cvaes, folder / "e.h5", sampled, device="cpu")
    means = GenerateConfig(n_train=40, n_test=40, decode="mean", seed=3)
    result = {
        "e": e,
        "me": mix_modality(e, folder / "me.h5", MixConfig(seed=1, block_codes=2)),
        "half": mix_modality(e, folder / "half.h5", MixConfig(seed=2, fraction=0.5, block_codes=2)),
        "means": generate_dataset(cvaes, folder / "means.h5", means, device="cpu"),
    }
    ensure_truths([result["e"], result["me"]], FAST)
    return result


def sidecar_log_p(path: Path) -> np.ndarray:
    with h5py.File(truth_path(path), "r") as handle:
        return handle["per_tuple/log_p"][:].astype(np.float64)


def test_subset_check_refuses_a_prefix_that_splits_a_block(files, tmp_path) -> None:
    """25 test rows split the second block of ME's permutation: refused, nearest counts named,
    before anything is trained (no --out)."""
    out = tmp_path / "out"
    result = invoke("evaluate", files["e"], files["me"], "--test-limit", "25", "--out", out,
                    *QUICK)  # fmt: skip
    assert_one_line_error(result, "20", "40")
    assert not out.exists()
    with pytest.raises(UsageError, match="use 20, 40 tuples"):
        mmgen.runner.check_subsets(inspect_datasets([files["e"], files["me"]]), 25, None)
    with pytest.raises(UsageError, match="train"):  # --limit covers the train split too
        mmgen.runner.check_subsets(inspect_datasets([files["me"], files["e"]]), 30, 20)
    # A file alone, or a twin of another file, is not constrained.
    mmgen.runner.check_subsets(inspect_datasets([files["e"], files["means"]]), 25, None)


def test_accepted_subset_holds_the_same_images(files) -> None:
    """On an accepted prefix, E and ME hold the same unmixed images row for row and the same
    multiset of the mixed modality (and the mixed one is really permuted)."""
    infos = inspect_datasets([files["e"], files["me"]])
    mmgen.runner.check_subsets(infos, None, ROWS)
    e, me = (load_dataset(info, None, ROWS, torch.device("cpu")) for info in infos)
    unmixed, mixed = infos[0].modalities
    assert len(e.test["labels"]) == ROWS
    assert torch.equal(e.test[unmixed], me.test[unmixed])

    def multiset(images: torch.Tensor) -> list[bytes]:
        return sorted(row.numpy().tobytes() for row in images)

    assert multiset(e.test[mixed]) == multiset(me.test[mixed])
    assert not torch.equal(e.test[mixed], me.test[mixed])


@pytest.fixture(scope="module")
def evaluated(files, tmp_path_factory) -> tuple[dict, str, Path]:
    folder = tmp_path_factory.mktemp("evalrun")
    from conftest import write_fake_source

    root = folder / "data"
    write_fake_source(root / "MNIST" / "raw", style="blocks", gz=True, seed=0)
    write_fake_source(root / "FashionMNIST" / "raw", style="stripes", gz=False, seed=1)
    out = folder / "report"
    config = EvaluateConfig(
        models=("jmvae",), epochs=1, k=3, prior_samples=20, joint_samples=50, batch_size=16,
        classifier_epochs=1, elbo_samples=1, jsd_samples=2, test_limit=ROWS, seeds=(0, 1),
        device="cpu",
    )  # fmt: skip
    paths = [files[n] for n in ("e", "me", "half", "means")]
    report = evaluate_datasets(paths, out, config, data_dir=root, cache_dir=folder / "cache")
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    return report, (out / "report.md").read_text(), out


def test_calibration_against_the_sidecar_arrays(files, evaluated) -> None:
    report, _, _ = evaluated
    calibration = report["calibration"]
    log_p = {name: sidecar_log_p(files[name])[:ROWS] for name in ("e", "me")}
    ll = {
        (name, seed): report["datasets"][name]["seeds"][str(seed)]["jmvae"]["log_likelihood"]
        for name in ("e", "me", "half", "means")
        for seed in (0, 1)
    }
    for name in ("e", "me"):
        entry = calibration["files"][name]
        assert entry["status"] == "stored" and entry["rows"] == ROWS
        true = float(np.mean(log_p[name]))
        assert entry["true_log_likelihood"] == pytest.approx(true, abs=1e-9)
        excess = entry["models"]["jmvae"]["excess"]
        by_hand = [true - ll[name, s] for s in (0, 1)]
        assert excess["per_seed"] == pytest.approx({"0": by_hand[0], "1": by_hand[1]})
        assert excess["mean"] == pytest.approx(np.mean(by_hand))
        half = 12.706204736174707 * np.std(by_hand, ddof=1) / math.sqrt(2)  # t_{0.975, 1}
        assert excess["interval"] == pytest.approx([np.mean(by_hand) - half,
                                                    np.mean(by_hand) + half])  # fmt: skip

    (gap,) = [g for g in calibration["gaps"] if g["twin"] == "me"]
    true_gap = float(np.mean(log_p["e"] - log_p["me"]))
    assert gap["true_gap"]["mean"] == pytest.approx(true_gap, abs=1e-9)
    recovered = [(ll["e", s] - ll["me", s]) / true_gap for s in (0, 1)]
    assert gap["recovered"]["per_seed"] == pytest.approx({"0": recovered[0], "1": recovered[1]})
    assert gap["recovered"]["mean"] == pytest.approx(np.mean(recovered))

    # The half-mixed twin has no stored truth: None in every numeric slot, and the note.
    (half,) = [g for g in calibration["gaps"] if g["twin"] == "half"]
    assert half["true_gap"] is None and half["recovered"] is None
    assert half["note"] == f"no truth stored (run mmgen truth {files['half']})"
    assert calibration["files"]["half"]["models"]["jmvae"]["excess"] is None
    assert calibration["files"]["half"]["true_log_likelihood"] is None
    assert "evaluator seeds are not dataset replicates" in calibration["note"]
    assert "mmgen study" in calibration["note"]
    assert len(calibration["gaps"]) == 2  # means.h5 is no twin of e.h5


def test_means_file_states_no_target_and_its_floor(files, evaluated) -> None:
    report, markdown, _ = evaluated
    entry = report["calibration"]["files"]["means"]
    assert entry["status"] == "decoded means" and entry["finite"] is False
    assert entry["models"]["jmvae"]["excess"] is None
    with h5py.File(files["means"], "r") as handle:
        floors = {}
        for m in handle["test/images"]:
            x = handle[f"test/images/{m}"][:ROWS].astype(np.float64)
            x = x / 255.0 if handle[f"test/images/{m}"].dtype == np.uint8 else x
            with np.errstate(divide="ignore", invalid="ignore"):
                h = -np.nan_to_num(x * np.log(x)) - np.nan_to_num((1 - x) * np.log(1 - x))
            floors[m] = h.reshape(ROWS, -1).sum(1)
    for m, values in floors.items():
        assert entry["entropy_floor"][m]["mean"] == pytest.approx(values.mean(), rel=1e-5)
    total = sum(floors.values()).mean()
    assert entry["entropy_floor"]["total"]["mean"] == pytest.approx(total, rel=1e-5)
    head = markdown.splitlines()[:4]
    assert head[2].startswith("**means stores decoded means: its likelihood gap has no finite")
    assert f"{total:.1f}" in head[2]


def test_calibration_is_the_first_table(evaluated) -> None:
    _, markdown, _ = evaluated
    lines = markdown.splitlines()
    first_table = next(line for line in lines if line.startswith("|"))
    assert first_table.startswith("| model | file | rows | model log p(M) | true log p(x) |")
    assert lines.index("## Calibration against the ground truth (docs/truth.md)") < next(
        i for i, line in enumerate(lines) if line.startswith("## Verdict")
    )
    assert "- half: no truth stored (run mmgen truth" in markdown
    assert "jmvae recovers" in markdown and "of the" in markdown and "over 2 evaluator" in markdown


def test_latent_dim_reaches_the_models_and_the_job_key(files, monkeypatch, tmp_path) -> None:
    infos = inspect_datasets([files["e"]])
    keys = {d: plan_jobs(infos, ["jmvae"], [0], {}, {"mnist": "k", "fashion-mnist": "k"}, d)
            for d in (2, 3)}  # fmt: skip
    assert keys[2][0].key != keys[3][0].key
    assert EvaluateConfig().latent_dim == 2
    assert "latent_dim" in EvaluateConfig(latent_dim=3).job_settings()
    assert EvaluateConfig(latent_dim=3).run_settings().latent_dim == 3

    built = []

    class Stop(Exception):
        pass

    def capture(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append(model.config.latent_dim)
        raise Stop

    original = mmgen.runner.build_model
    monkeypatch.setattr(mmgen.runner, "build_model", capture)
    from conftest import write_fake_source

    root = tmp_path / "data"
    write_fake_source(root / "MNIST" / "raw", style="blocks", gz=True, seed=0)
    write_fake_source(root / "FashionMNIST" / "raw", style="stripes", gz=False, seed=1)
    config = EvaluateConfig(models=("m2vae",), epochs=1, classifier_epochs=1, latent_dim=3,
                            device="cpu")  # fmt: skip
    with pytest.raises(Stop):
        evaluate_datasets([files["e"]], tmp_path / "out", config, data_dir=root,
                          cache_dir=tmp_path / "cache")  # fmt: skip
    assert built == [3]
    with pytest.raises(UsageError, match="latent-dim"):
        EvaluateConfig(latent_dim=0)


def test_recipe_passes_latent_dim_to_evaluate() -> None:
    recipe = {
        "seed": 0, "sources": ["mnist", "fashion-mnist"], "primary": "log p(M)",
        "evaluate": {"models": ["jmvae"], "latent_dim": 4},
    }  # fmt: skip
    assert evaluate_config(validate(recipe).as_dict()).latent_dim == 4
    recipe["evaluate"] = {"models": ["jmvae"]}
    assert evaluate_config(validate(recipe).as_dict()).latent_dim == 2


def test_a_stale_or_missing_truth_is_a_note(files, tmp_path) -> None:
    """A sidecar of another version of the file gives the stale note, no numbers; a sampled
    file without one says how to make it; the calibration reads only current truths."""
    import shutil

    from mmgen.report.calibration import file_truth

    copy = shutil.copy(files["e"], tmp_path / "e.h5")
    shutil.copy(truth_path(files["e"]), truth_path(copy))
    (info,) = inspect_datasets([copy])
    test = load_dataset(info, None, ROWS, torch.device("cpu")).test
    assert file_truth(info, test, ROWS)["status"] == "stored"
    with h5py.File(copy, "a") as handle:
        handle.attrs["seed"] = 7  # another version of the file
    (changed,) = inspect_datasets([copy])
    record = file_truth(changed, test, ROWS)
    assert record["status"] == "missing" and record["true_log_likelihood"] is None
    assert record["note"] == f"the stored truth is stale (run mmgen truth {copy})"
    truth_path(copy).unlink()
    assert file_truth(changed, test, ROWS)["note"] == f"no truth stored (run mmgen truth {copy})"
