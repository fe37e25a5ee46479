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
from scipy import stats
from typer.testing import CliRunner

pytest.importorskip("multivae")

from conftest import assert_one_line_error, write_fake_source  # noqa: E402
from mmgen.cli import app  # noqa: E402
from mmgen.ranking import plan as ranking_plan  # noqa: E402
from mmgen.ranking.recipe import RecipeError, validate_ranking  # noqa: E402
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
[replicates]
count = 2
"""


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
    metrics = {"joint coherence"} | {f"cross coherence k={k}" for k in range(1, 5)}
    assert {k[0] for k in values} == metrics
    assert {k[1] for k in values} == {"e", "mixed", "naive"}
    assert {k[2] for k in values} == {"mvae", "mopoe"}
    assert all(len(v) == 2 and np.all((v >= 0) & (v <= 1)) for v in values.values())


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
    for metric, entry in report["metrics"].items():
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
