"""The PolyMNIST-E ranking study (mmgen.ranking, docs/ranking.md): recipe, run, report, resume.

The end-to-end run uses fake MNIST (tests/conftest.py), 40/20 tuples, 1 epoch of everything:
its figures are noise; what is checked is the plumbing, the statistics against an independent
recomputation, and that a rerun reuses every job.
"""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

pytest.importorskip("multivae")

from conftest import assert_one_line_error, write_fake_source  # noqa: E402
from mmgen.cli import app  # noqa: E402
from mmgen.ranking import plan as ranking_plan  # noqa: E402
from mmgen.ranking.recipe import RecipeError, validate_ranking  # noqa: E402
from mmgen.ranking.report import LATENT, TRUTH_METRIC  # noqa: E402
from mmgen.study.plan import key_of  # noqa: E402
from mmgen.study.recipe import replicate_seed, validate  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]

TINY = """
seed = 3
[cvae]
epochs = 1
limit = 60
[polymnist]
n_train = 40
n_test = 20
allow_collapsed = true  # one epoch on 60 fake images: the CVAE collapses
[multivae]
models = ["mvae", "mopoe"]
epochs = 1
batch_size = 16
latent_dim = 8
mmvae_k = 1
[classifier]
epochs = 1
batch_size = 16
[coherence]
joint_samples = 20
batch_size = 16
[truth]
points = 4
[replicates]
count = 2
"""
COHERENCES = {"joint coherence"} | {f"cross coherence k={k}" for k in range(1, 5)}


def test_recipe_mistakes_are_all_reported_one_line_each() -> None:
    document = {
        "sed": 1,
        "cvae": {"epochs": "two"},
        "polymnist": {"n_train": 0, "decode": "median", "backgrounds": ["a.png", "b.png"]},
        "multivae": {"models": ["mvae", "jmvae", "mvae"], "beta": -1.0, "colour": 1},
        "replicates": {"count": 0, "evaluator_seeds": [1, 1]},
    }
    with pytest.raises(RecipeError) as caught:
        validate_ranking(document, "r.toml")
    mistakes = caught.value.mistakes
    expected = [
        "unknown top-level key 'sed'",
        "cvae.epochs must be an integer",
        "polymnist.n_train must be > 0",
        "median",
        "2 --background for 5 modalities",
        "unknown model 'jmvae'",
        "lists a model more than once",
        "multivae.beta must be > 0",
        "unknown key multivae.colour",
        "replicates.count must be an integer >= 1",
        "evaluator_seeds lists a seed more than once",
    ]
    for fragment in expected:
        assert sum(fragment in m for m in mistakes) == 1, (fragment, mistakes)
    assert len(mistakes) == len(expected), mistakes
    assert all(m.startswith("r.toml: ") and "\n" not in m for m in mistakes)


def test_one_model_cannot_be_ranked() -> None:
    with pytest.raises(RecipeError, match="two or more models"):
        validate_ranking({"multivae": {"models": ["mopoe"]}})


def test_the_cli_prints_every_recipe_mistake_and_exits_2(tmp_path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[multivae]\nmodels = ["mvae", "x"]\n')
    result = runner.invoke(app, ["study", "polymnist", str(recipe), "--out", str(tmp_path / "o")])
    assert_one_line_error(result, "unknown model 'x'")
    assert not (tmp_path / "o").exists()


def test_the_committed_recipe_is_valid_and_replicated() -> None:
    path = ROOT / "recipes" / "polymnist-ranking.toml"
    recipe = validate_ranking(tomllib.loads(path.read_text()))
    assert recipe.replicates >= 3 and set(recipe.models) == {"mvae", "mmvae", "mopoe"}


def test_the_cvae_job_is_the_study_s_own() -> None:
    """Same [cvae] and seed as a `mmgen study` recipe: the same job key and folder."""
    recipe = validate_ranking(tomllib.loads(TINY))
    plan = ranking_plan.plan_ranking(recipe)
    study = validate({"seed": 3, "cvae": tomllib.loads(TINY)["cvae"]})
    spec = {"source": "mnist", "cvae": study.cvae, "seed": replicate_seed(3, 1, "cvae", "mnist")}
    key = key_of({"kind": "cvae", **spec})
    cvaes = plan.by_phase("cvae")
    assert key in {job.key for job in cvaes} and len(cvaes) == 2


def test_training_seeds_are_paired_across_variants_and_differ_across_replicates() -> None:
    plan = ranking_plan.plan_ranking(validate_ranking(tomllib.loads(TINY)))
    seeds = {(f.replicate, f.variant, f.model): plan.jobs[f.key].spec["seed"] for f in plan.fits}
    for r in (0, 1):
        for model in ("mvae", "mopoe"):
            assert len({seeds[(r, v, model)] for v in ranking_plan.VARIANTS}) == 1
    assert seeds[(0, "e", "mvae")] != seeds[(1, "e", "mvae")]
    assert seeds[(0, "e", "mvae")] != seeds[(0, "e", "mopoe")]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("ranking")
    data = base / "data"
    write_fake_source(data / "MNIST" / "raw", style="blocks", gz=True, seed=0)
    recipe = base / "tiny.toml"
    recipe.write_text(TINY)
    out = base / "out"
    result = runner.invoke(
        app,
        ["study", "polymnist", str(recipe), "--out", str(out), "--data-dir", str(data),
         "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, recipe, data


def _values(out: Path) -> dict[tuple[str, str, str], np.ndarray]:
    with open(out / "values.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    found: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in rows:
        key = (row["metric"], row["variant"], row["model"])
        found.setdefault(key, {})[int(row["replicate"])] = float(row["value"])
    return {key: np.array([by_r[r] for r in sorted(by_r)]) for key, by_r in found.items()}


def _t_interval(values: np.ndarray) -> list[float]:
    """An independent 95 % Student-t interval of the mean (scipy)."""
    half = stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / np.sqrt(len(values))
    return [values.mean() - half, values.mean() + half]


def test_values_csv_has_one_row_per_replicate_variant_model_metric(study) -> None:
    out, _, _ = study
    values = _values(out)
    coherence = {k: v for k, v in values.items() if k[0] in COHERENCES}
    assert {k[0] for k in coherence} == COHERENCES
    assert {k[1] for k in coherence} == {"e", "mixed", "naive"}
    assert {k[2] for k in coherence} == {"mvae", "mopoe"}
    assert all(len(v) == 2 and np.all((v >= 0) & (v <= 1)) for v in coherence.values())
    # mmgen's figures: on the variants with z, per model, the pixel baseline and the truth
    latent = {metric for metric, _, _ in LATENT}
    assert {k[0] for k in values} == COHERENCES | latent | {TRUTH_METRIC}
    for (metric, variant, model), v in values.items():
        if metric in COHERENCES:
            continue
        assert variant in ("e", "mixed") and len(v) == 2 and np.all(np.isfinite(v))
        if metric == TRUTH_METRIC:
            assert model == "truth"
        else:
            assert model in ("mvae", "mopoe", "pixels")


def test_fusion_gain_is_the_joint_beyond_the_best_single_modality() -> None:
    from mmgen.ranking.run import fusion_gains

    names = [f"m{k}" for k in range(5)]
    r2 = {"m0+m1+m2+m3+m4": (0.5, 0.1), "m0": (0.2, 0.3), "m1": (0.1, -0.4), "m2": (0.45, 0.0),
          "m3": (-0.2, 0.05), "m4": (0.3, 0.2)}  # fmt: skip
    recovery = {
        encoder: {"z": {"class_knn": {"r2": knn}, "class_affine": {"r2": affine}}}
        for encoder, (knn, affine) in r2.items()
    }
    gains = fusion_gains(recovery, names)
    assert gains["class_knn"] == pytest.approx(0.5 - 0.45)
    assert gains["class_affine"] == pytest.approx(0.1 - 0.3)


def test_mmgen_figures_are_the_jobs_own_and_recompute_from_the_csv(study, tmp_path) -> None:
    import shutil

    from mmgen.ranking.recipe import load_ranking_recipe
    from mmgen.ranking.report import build_ranking_report
    from mmgen.study.run import job_path

    source, recipe, _ = study
    out = Path(shutil.copytree(source, tmp_path / "copy"))
    plan = ranking_plan.plan_ranking(load_ranking_recipe(recipe))
    # Distinct figures per encoder and fit (the tiny fits' own are degenerate): the report
    # must take the joint's R² and the job's fusion gain, fit by fit.
    generator = np.random.default_rng(0)
    expected = {}
    for fit in plan.fits:
        if fit.variant == "naive":
            assert fit.key not in plan.probes  # no z: no probe
            continue
        path = job_path(out, plan.jobs[plan.probes[fit.key]]) / "latent-recovery.json"
        probe = json.loads(path.read_text())
        for encoder in probe["recovery"]:
            for figures in probe["recovery"][encoder]["z"].values():
                figures["r2"] = float(generator.uniform(-1, 1))
        probe["fusion_gain"] = {
            name: float(generator.uniform(-1, 1)) for name in probe["fusion_gain"]
        }
        path.write_text(json.dumps(probe))
        joint = probe["recovery"][probe["joint"]]["z"]
        expected[(fit.variant, fit.model, fit.replicate)] = {
            "latent R² of z, joint (kNN)": joint["class_knn"]["r2"],
            "latent R² of z, joint (affine)": joint["class_affine"]["r2"],
            "fusion gain (kNN)": probe["fusion_gain"]["class_knn"],
        }
    report = build_ranking_report(out)
    values = _values(out)
    for (variant, model, replicate), figures in expected.items():
        for metric, value in figures.items():
            assert values[(metric, variant, model)][replicate] == value
    for r in range(2):
        truths = json.loads(
            (job_path(out, plan.jobs[plan.truths[r]]) / "truth-summaries.json").read_text()
        )
        for variant in ("e", "mixed"):
            tc = truths[variant]["total_correlation"]["mean"]
            assert values[(TRUTH_METRIC, variant, "truth")][r] == tc
        assert abs(values[(TRUTH_METRIC, "mixed", "truth")][r]) < 1e-9  # m1 … m4 permuted
    for metric, entry in report["mmgen"]["latent"].items():
        for variant, by_model in entry["summary"].items():
            for model, summary in by_model.items():
                v = values[(metric, variant, model)]
                assert summary["mean"] == pytest.approx(v.mean(), abs=1e-12)
                if np.std(v) > 0:
                    assert summary["interval"] == pytest.approx(_t_interval(v), abs=1e-12)
        for model, summary in entry["differences"]["e-mixed"].items():
            d = values[(metric, "e", model)] - values[(metric, "mixed", model)]
            assert summary["mean"] == pytest.approx(d.mean(), abs=1e-12)
    for metric, by_variant in report["mmgen"]["references"].items():
        model = "truth" if metric == TRUTH_METRIC else "pixels"
        for variant, summary in by_variant.items():
            assert summary["mean"] == pytest.approx(values[(metric, variant, model)].mean())
    text = (out / "report.md").read_text()
    assert "# mmgen's own figures" in text and "| pixels (no model) |" in text


def test_posterior_means_do_not_depend_on_the_batch(study) -> None:
    from mmgen.ranking import multivae_steps as mv
    from mmgen.ranking.recipe import load_ranking_recipe
    from mmgen.study.run import job_path

    out, recipe, _ = study
    plan = ranking_plan.plan_ranking(load_ranking_recipe(recipe))
    fit = next(f for f in plan.fits if f.model == "mopoe" and f.variant == "e")
    job = plan.jobs[fit.key]
    model = mv.load_model(job_path(out, job) / "result" / "model")
    data = mv.load_split(job_path(out, plan.jobs[job.needs[0]]) / "polymnist", "test", 20)
    small, whole = mv.posterior_means(model, data, batch=7), mv.posterior_means(model, data)
    assert set(whole) == {"m0+m1+m2+m3+m4"} | {f"m{k}" for k in range(5)}
    for name, means in whole.items():
        assert means.shape == (20, 8)
        torch.testing.assert_close(small[name], means, atol=1e-6, rtol=0)
    alone = model.encode(data, cond_mod=["m3"], return_mean=True).z.reshape(20, -1)
    torch.testing.assert_close(whole["m3"], alone, atol=1e-6, rtol=0)


def test_intervals_and_differences_recompute_from_the_csv(study) -> None:
    out, _, _ = study
    values = _values(out)
    report = json.loads((out / "report.json").read_text())
    for metric, entry in report["metrics"].items():
        for variant, by_model in entry["summary"].items():
            for model, summary in by_model.items():
                v = values[(metric, variant, model)]
                assert summary["mean"] == pytest.approx(v.mean(), abs=1e-12)
                assert summary["interval"] == pytest.approx(_t_interval(v), abs=1e-12)
        for pair, twin in (("e-mixed", "mixed"), ("e-naive", "naive")):
            for model, summary in entry["differences"][pair].items():
                d = values[(metric, "e", model)] - values[(metric, twin, model)]
                assert summary["mean"] == pytest.approx(d.mean(), abs=1e-12)
                if np.std(d) > 0:
                    assert summary["interval"] == pytest.approx(_t_interval(d), abs=1e-12)


def test_the_ranking_orders_the_means_and_counts_agreeing_replicates(study) -> None:
    out, _, _ = study
    values = _values(out)
    report = json.loads((out / "report.json").read_text())
    entries = {**report["metrics"], **report["mmgen"]["latent"]}
    for metric, entry in entries.items():
        for variant, ranking in entry["ranking"].items():
            means = {m: values[(metric, variant, m)].mean() for m in ("mvae", "mopoe")}
            order = sorted(means, key=lambda m: (-means[m], m))
            assert ranking["order"] == order
            agree = 0
            for r in range(2):
                own = {m: values[(metric, variant, m)][r] for m in means}
                agree += sorted(own, key=lambda m: (-own[m], m)) == order
            assert ranking["agree"] == agree


def test_classifier_ceilings_are_reported_per_variant(study) -> None:
    out, _, _ = study
    report = json.loads((out / "report.json").read_text())
    accuracy = report["classifier_accuracy"]
    assert set(accuracy) == {"0", "1"}
    for by_variant in accuracy.values():
        assert set(by_variant) == {"e", "mixed", "naive"}
        assert all(set(a) == {f"m{k}" for k in range(5)} for a in by_variant.values())
    assert "Classifier ceilings" in (out / "report.md").read_text()


def test_a_rerun_reuses_every_job(study, monkeypatch) -> None:
    out, recipe, data = study
    from mmgen.ranking import multivae_steps
    from mmgen.study import steps

    def refuse(*args, **kwargs):
        raise AssertionError("a finished job ran again")

    monkeypatch.setattr(multivae_steps, "train_model", refuse)
    monkeypatch.setattr(multivae_steps, "train_classifier", refuse)
    monkeypatch.setattr(steps, "train_cvae_step", refuse)
    before = (out / "values.csv").read_bytes()
    result = runner.invoke(
        app,
        ["study", "polymnist", str(recipe), "--out", str(out), "--data-dir", str(data),
         "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "values.csv").read_bytes() == before


def test_a_removed_fit_is_redone_alone(study, monkeypatch) -> None:
    import shutil

    from mmgen.ranking import multivae_steps
    from mmgen.ranking.recipe import load_ranking_recipe
    from mmgen.study.run import job_path

    out, recipe, data = study
    plan = ranking_plan.plan_ranking(load_ranking_recipe(recipe))
    fit = plan.fits[0]
    shutil.rmtree(job_path(out, plan.jobs[fit.key]))
    calls = []
    real = multivae_steps.train_model
    monkeypatch.setattr(
        multivae_steps, "train_model", lambda *a, **k: calls.append(a[0]) or real(*a, **k)
    )
    result = runner.invoke(
        app,
        ["study", "polymnist", str(recipe), "--out", str(out), "--data-dir", str(data),
         "--device", "cpu", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert calls == [fit.model]


def test_classifiers_train_on_the_naive_export_and_test_on_every_variant() -> None:
    plan = ranking_plan.plan_ranking(validate_ranking(tomllib.loads(TINY)))
    exports = {job.folder: job for job in plan.by_phase("export")}
    for job in plan.by_phase("classifiers"):
        trained_on = exports[job.spec["train"]]
        assert trained_on.folder.split("/")[1].split("-")[1] == "naive"
        parent = plan.jobs[trained_on.needs[0]]
        assert parent.kind == "naive" and parent.replicate == job.replicate
        assert set(job.spec["test"]) == set(ranking_plan.VARIANTS)
