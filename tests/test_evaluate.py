"""``mmgen evaluate``: the library pipeline and the command, end to end on tiny synthetic files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, fake_images
from mmgen.cli import app
from mmgen.config import from_dict, to_dict
from mmgen.data.h5io import FORMAT, SCHEMA_VERSION, encode_attrs
from mmgen.data.header import SourceIdentity
from mmgen.evaluate import EvaluateConfig, inspect_datasets
from mmgen.probes import K_GRID
from mmgen.report import letter_key

runner = CliRunner()
SIZES = {"train": 40, "test": 20}
STYLES = {"mnist": "blocks", "fashion": "stripes"}  # modality → conftest's fake pattern
SOURCES = {"mnist": {"name": "mnist"}, "fashion": {"name": "fashion-mnist"}}


def write_mmgen_file(path: Path, kind: str = "entangled", modalities=("mnist", "fashion")) -> Path:
    """A tiny mmgen file following h5io's layout: class-patterned images, labels, maybe z."""
    rng = np.random.default_rng(0)
    has_latent = kind != "naive"
    attrs = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "mmgen_version": "test",
        "kind": kind,
        "modalities": list(modalities),
        "sources": {m: SOURCES.get(m, {"name": "mnist"}) for m in modalities},
        "num_classes": 10,
        "class_names": [str(c) for c in range(10)],
        "latent_dim": 2 if has_latent else 0,
        "has_latent": has_latent,
        "seed": 0,
        "config": {},
    }
    with h5py.File(path, "w") as handle:
        handle.attrs.update(encode_attrs(attrs))
        for split, size in SIZES.items():
            group = handle.create_group(split)
            group.attrs["size"] = size
            labels = np.arange(size) % 10
            for m in modalities:
                style = STYLES.get(m, "blocks")
                group.create_dataset(f"images/{m}", data=fake_images(labels, style, rng))
            group.create_dataset("labels", data=labels.astype(np.int64))
            if has_latent:
                z = np.stack([labels - 4.5, rng.normal(size=size)], axis=1).astype(np.float32)
                group.create_dataset("z", data=z)
                group.create_dataset("code_index", data=np.arange(size, dtype=np.int64))
    return path


@pytest.fixture
def tiny_files(tmp_path) -> tuple[Path, Path]:
    return (
        write_mmgen_file(tmp_path / "mnist-e.h5", "entangled"),
        write_mmgen_file(tmp_path / "naive.h5", "naive"),
    )


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


QUICK = ("--epochs", "1", "--k", "3", "--prior-samples", "40", "--joint-samples", "200",
         "--batch-size", "16", "--classifier-epochs", "1", "--device", "cpu",
         "--quiet")  # fmt: skip


def test_evaluate_end_to_end(tmp_path, tiny_files, fake_data_root) -> None:
    out = tmp_path / "report"
    cache = tmp_path / "cache"
    result = invoke("evaluate", *tiny_files, "--out", out, "--data-dir", fake_data_root,
                    "--cache-dir", cache, *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "report.md" in result.output

    report = json.loads((out / "report.json").read_text())
    assert from_dict(EvaluateConfig, report["config"]).k == 3
    assert report["seeds"] == [0] and report["device"] == "cpu"
    assert set(report["classifiers"]) == {"mnist", "fashion-mnist"}
    assert set(report["datasets"]) == {"mnist-e", "naive"}
    entangled = report["datasets"]["mnist-e"]
    assert set(entangled["quality"]) == {"mnist", "fashion"}
    assert (
        entangled["quality"]["mnist"]["ceiling"] == report["classifiers"]["mnist"]["test_accuracy"]
    )
    models = entangled["models"]
    assert set(models) == {"jmvae", "jmvae-zero", "jmvae-kl", "tvae", "m2vae"}
    m2vae = models["m2vae"]
    assert set(m2vae["elbo"]) == {"mnist+fashion", "mnist", "fashion"}
    assert set(m2vae["conditional"]) == {"mnist|fashion", "fashion|mnist"}
    assert set(m2vae["coherence"]["cross"]) == {"mnist->fashion", "fashion->mnist"}
    assert 0.0 <= m2vae["coherence"]["joint"] <= 1.0
    assert set(m2vae["posterior"]["divergence"]) == {
        "mnist+fashion||mnist",
        "mnist+fashion||fashion",
        "mnist||fashion",
    }
    recovery = m2vae["latent_recovery"]
    assert set(recovery) == {"mnist+fashion", "mnist", "fashion"}
    for targets in recovery.values():
        assert set(targets) == {"z"}  # an entangled file: the stored code only
        fits = targets["z"]
        assert set(fits) == {"class_affine", "class_knn"}
        assert all(np.isfinite(fit["r2"]) for fit in fits.values())
        assert fits["class_knn"]["k"] in K_GRID
    assert np.isfinite(m2vae["log_likelihood"])
    assert list(models["jmvae"]["elbo"]) == ["mnist+fashion"]  # plain JMVAE: the full set only
    assert models["jmvae"]["coherence"]["cross"] == {}
    assert len(entangled["seeds"]["0"]["tvae"]["history"]) == 2  # two stages, one epoch each
    naive = report["datasets"]["naive"]["models"]["m2vae"]
    assert naive["latent_recovery"] is None  # a number's slot holds no string (issue 18, 8)
    assert naive["notes"] == {"latent_recovery": "file has no true z"}
    assert m2vae["notes"] == {}

    markdown = (out / "report.md").read_text()
    for heading in ("Test ELBO", "Importance-weighted", "Cross coherence", "Joint coherence",
                    "Jensen", "naive Bayes", "per-class affine probe",
                    "per-class k-nearest-neighbour probe", "Fréchet"):  # fmt: skip
        assert heading in markdown
    assert "| model | figure | mnist-e | naive |" in markdown
    assert "Classifier ceilings" in markdown
    assert "n/a: file has no true z" in markdown
    for model in models:
        assert (out / f"latent-{model}.png").stat().st_size > 0
        curves = out / entangled["seeds"]["0"][model]["figures"]["curves"]
        assert curves.is_file()
        timing = json.loads((curves.parent / "timing.json").read_text())
        assert timing["train_s"] > 0 and timing["measure_s"] > 0 and timing["device"] == "cpu"

    # The classifiers are cached: a second run loads them.
    again = invoke("evaluate", tiny_files[0], "--out", tmp_path / "again", "--models", "m2vae",
                   "--data-dir", fake_data_root, "--cache-dir", cache, *QUICK)  # fmt: skip
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "again" / "report.json").read_text())
    assert all(c["loaded_from_cache"] for c in second["classifiers"].values())
    # Same seed, same data: the same figures.
    assert second["datasets"]["mnist-e"]["models"]["m2vae"]["elbo"] == m2vae["elbo"]


def test_latent_recovery_of_a_mixed_file_adds_the_permuted_modality_s_code(
    tmp_path, tiny_files, fake_data_root
) -> None:
    mixed = write_mmgen_file(tmp_path / "mnist-me.h5", "mixed")
    with h5py.File(mixed, "a") as handle:
        for split, size in SIZES.items():
            # Within each class (labels cycle with period 10): tuple i's fashion image came
            # from tuple i + 10.
            handle[split].create_dataset("permutation/fashion", data=(np.arange(size) + 10) % size)
    out = tmp_path / "report"
    result = invoke("evaluate", tiny_files[0], mixed, "--models", "m2vae", "--out", out,
                    "--data-dir", fake_data_root, "--cache-dir", tmp_path / "c",
                    *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    datasets = json.loads((out / "report.json").read_text())["datasets"]
    recovery = datasets["mnist-me"]["models"]["m2vae"]["latent_recovery"]
    assert set(recovery["fashion"]) == {"z", "z[fashion]"}
    assert set(datasets["mnist-e"]["models"]["m2vae"]["latent_recovery"]["fashion"]) == {"z"}
    markdown = (out / "report.md").read_text()
    knn_table = markdown.split("k-nearest-neighbour probe")[1]
    # The row of the permuted modality's own code: n/a for the entangled file.
    row = next(line for line in knn_table.splitlines() if line.startswith("| m2vae | b → z[b] |"))
    assert row.split("|")[3].strip() == "n/a"
    assert "(k=" in row.split("|")[4]


def test_missing_file_is_one_clear_error(tmp_path) -> None:
    result = invoke("evaluate", tmp_path / "nope.h5", "--out", tmp_path / "out")
    assert_one_line_error(result, "nope.h5", "does not exist")


def test_non_mmgen_hdf5_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("x", data=np.zeros(3))
    result = invoke("evaluate", path, "--out", tmp_path / "out")
    assert_one_line_error(result, "other.h5", "not an mmgen dataset")
    text = tmp_path / "text.h5"
    text.write_text("hello")
    assert_one_line_error(invoke("evaluate", text, "--out", tmp_path / "out"), "not an HDF5 file")


def test_unknown_model_lists_the_choices(tmp_path, tiny_files) -> None:
    result = invoke("evaluate", tiny_files[0], "--out", tmp_path / "out", "--models", "jmvae,vae")
    assert_one_line_error(result, "unknown model(s) vae", "jmvae-zero", "m2vae")


@pytest.mark.parametrize("k", ["0", "-3"])
def test_nonpositive_k_is_one_clear_error(tmp_path, tiny_files, k) -> None:
    result = invoke("evaluate", tiny_files[0], "--out", tmp_path / "out", "--k", k)
    assert_one_line_error(result, f"--k must be >= 1 importance samples, got {k}")


def test_datasets_must_agree_on_the_modality_count(tmp_path, tiny_files) -> None:
    three = write_mmgen_file(tmp_path / "three.h5", modalities=("mnist", "fashion", "extra"))
    result = invoke("evaluate", tiny_files[0], three, "--out", tmp_path / "out")
    assert_one_line_error(result, "disagree on the number of modalities", "three.h5 has 3")


def test_out_must_not_be_a_file(tmp_path, tiny_files, fake_data_root) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    result = invoke("evaluate", tiny_files[0], "--out", out, "--data-dir", fake_data_root)
    assert_one_line_error(result, "is a file")


def test_inspect_datasets_names_files_uniquely(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    first = write_mmgen_file(tmp_path / "set.h5")
    second = write_mmgen_file(tmp_path / "a" / "set.h5", kind="mixed")
    infos = inspect_datasets([first, second])
    assert [i.name for i in infos] == ["set", "set-2"]
    assert infos[1].kind == "mixed"
    assert infos[0].sources == {
        "mnist": SourceIdentity("mnist"),
        "fashion": SourceIdentity("fashion-mnist"),
    }
    assert infos[0].has_latent


def test_config_round_trips_and_rejects_bad_values() -> None:
    config = EvaluateConfig(models=("m2vae",), k=10, limit=5)
    assert from_dict(EvaluateConfig, to_dict(config)) == config
    with pytest.raises(ValueError, match="more than once"):
        EvaluateConfig(models=("m2vae", "m2vae"))
    with pytest.raises(ValueError, match="--limit must be a positive"):
        EvaluateConfig(limit=0)
    with pytest.raises(ValueError, match="--test-limit must be a positive"):
        EvaluateConfig(test_limit=-1)


def test_test_limit_measures_on_fewer_test_tuples(tmp_path, tiny_files, fake_data_root) -> None:
    out = tmp_path / "report"
    result = invoke("evaluate", tiny_files[0], "--models", "m2vae", "--test-limit", "7",
                    "--out", out, "--data-dir", fake_data_root, "--cache-dir", tmp_path / "c",
                    *QUICK)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "report.json").read_text())["datasets"]["mnist-e"]
    assert summary["num_test"] == 7
    assert summary["num_train"] > 7


def test_letter_keys_line_up_rows_across_datasets() -> None:
    letters = {"mnist": "a", "fashion-mnist": "b"}
    assert letter_key("mnist+fashion-mnist", letters) == "ab"
    assert letter_key("mnist|fashion-mnist", letters) == "a|b"
    assert letter_key("mnist->fashion-mnist", letters) == "a→b"
    assert letter_key("mnist+fashion-mnist||mnist", letters) == "ab‖a"
