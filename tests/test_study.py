"""``mmgen study``: recipe validation, the job graph's resumption and reruns, the report.

The resume and rerun tests replace the evaluation by a fake one (``fake_evaluate``: figures
computed from each file's bytes), so they train the CVAEs and generate for real in seconds; one
test runs a tiny recipe end to end with the real ``evaluate``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import mmgen.study.steps
from mmgen.cli import app
from mmgen.config import save_json
from mmgen.study.recipe import RecipeError, replicate_seed, validate
from mmgen.study.run import JOBS_DIR, MARKER_FILE

runner = CliRunner()

TINY = """
seed = 0
sources = ["mnist", "fashion-mnist"]
primary = "log p(M)"

[cvae]
epochs = 1
limit = 60
batch_size = 32

[generate]
n_train = 40
n_test = 20
allow_collapsed = true  # one epoch on 60 fake images: the CVAEs collapse

[twins]
naive = {naive}
naive_limit = 30

[evaluate]
models = {models}
epochs = 1
k = {k}
prior_samples = 10
joint_samples = 20
batch_size = 16
classifier_epochs = 1
elbo_samples = 1
jsd_samples = 2

[replicates]
count = 2
evaluator_seeds = [0, 1]
"""


def tiny(tmp_path: Path, naive: bool = False, models: str = '["jmvae"]', k: int = 2,
         extra: str = "") -> Path:  # fmt: skip
    path = tmp_path / "recipe.toml"
    path.write_text(TINY.format(naive=str(naive).lower(), models=models, k=k) + extra)
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def run(recipe: Path, out: Path, data: Path, cache: Path):
    return invoke("study", "run", recipe, "--out", out, "--data-dir", data, "--cache-dir", cache,
                  "--device", "cpu", "--quiet")  # fmt: skip


# --- a fake evaluation: figures from each file's test images ----------------------------------


def file_figure(path: Path, seed: int) -> float:
    """A figure that depends on the file's contents and the seed (an E/ME difference that
    differs between replicates)."""
    with h5py.File(path, "r") as handle:
        names = sorted(handle["test/images"])
        last = np.asarray(handle[f"test/images/{names[-1]}"], dtype=np.float64)
        first = np.asarray(handle[f"test/images/{names[0]}"], dtype=np.float64)
    # Correlation of the two modalities' pixel means: what shuffling one of them changes.
    a, b = first.reshape(len(first), -1).mean(1), last.reshape(len(last), -1).mean(1)
    return float(np.corrcoef(a, b)[0, 1]) + 0.01 * seed


@pytest.fixture
def calls(monkeypatch) -> dict[str, list]:
    """Replace the evaluation by ``file_figure``, and count every step that runs."""
    seen: dict[str, list] = {"evaluate": [], "cvae": [], "generate": [], "mix": [], "pair": []}

    def fake_evaluate(paths, out, config, **kwargs):
        seen["evaluate"].append(Path(out).name)
        if seen.get("interrupt_at") == len(seen["evaluate"]):
            raise KeyboardInterrupt
        datasets = {}
        for path in map(Path, paths):
            datasets[path.stem] = {
                "seeds": {
                    str(s): {m: {"log_likelihood": file_figure(path, s)} for m in config.models}
                    for s in config.seeds
                }
            }
        report = {"config": {"seeds": list(config.seeds)}, "datasets": datasets}
        Path(out).mkdir(parents=True, exist_ok=True)
        save_json(Path(out) / "report.json", report)
        return report

    monkeypatch.setattr(mmgen.study.steps, "evaluate_datasets", fake_evaluate)
    for name, attribute in (("cvae", "train_cvae_step"), ("generate", "generate_step"),
                            ("mix", "mix_step"), ("pair", "pair_step")):  # fmt: skip
        original = getattr(mmgen.study.steps, attribute)

        def counted(*args, _name=name, _original=original, **kwargs):
            seen[_name].append(args)
            return _original(*args, **kwargs)

        monkeypatch.setattr(mmgen.study.steps, attribute, counted)
    return seen


def markers(out: Path, kind: str) -> dict[str, int]:
    """Finished job folder → its marker's inode (a rerun job writes a new one)."""
    return {
        p.parent.name: p.stat().st_ino for p in (out / JOBS_DIR / kind).glob(f"*/{MARKER_FILE}")
    }


def test_replicates_get_their_own_keyed_seeds(tmp_path, fake_data_root, calls) -> None:
    out = tmp_path / "study"
    result = run(tiny(tmp_path), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    specs = [json.loads(p.read_text())["spec"] for p in (out / JOBS_DIR).glob(f"*/*/{MARKER_FILE}")]
    cvae_seeds = sorted(s["seed"] for s in specs if "cvae" in s)
    expected = sorted(
        replicate_seed(0, r, "cvae", source)
        for r in (0, 1)
        for source in ("mnist", "fashion-mnist")
    )
    assert cvae_seeds == expected and len(set(expected)) == 4
    generate_seeds = sorted(s["seed"] for s in specs if "generate" in s)
    assert generate_seeds == sorted(replicate_seed(0, r, "generate") for r in (0, 1))
    mix_seeds = sorted(s["seed"] for s in specs if "fraction" in s)
    assert mix_seeds == sorted(replicate_seed(0, r, "shuffle", "me") for r in (0, 1))


@pytest.mark.parametrize(("extra", "expected"), [("", 2), ("threads = 1\n", 1)])
def test_every_job_runs_at_the_recipes_thread_count(
    tmp_path, fake_data_root, calls, monkeypatch, extra, expected
) -> None:
    """A CVAE trained at 1 and at 2 threads differs: the study fixes the count, so a lone process
    (torch's default: every core) and torchrun ranks (1 thread each) give the same bytes."""
    import torch

    seen = []
    for attribute in ("train_cvae_step", "generate_step", "mix_step"):
        original = getattr(mmgen.study.steps, attribute)

        def counting(*args, _original=original, **kwargs):
            seen.append(torch.get_num_threads())
            return _original(*args, **kwargs)

        monkeypatch.setattr(mmgen.study.steps, attribute, counting)
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # what the launch would give: never what the jobs use
    try:
        out = tmp_path / "study"
        recipe = tmp_path / "recipe.toml"
        recipe.write_text(extra + tiny(tmp_path).read_text())
        result = run(recipe, out, fake_data_root, tmp_path / "cache")
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {expected} and after == 3  # restored after each job
    specs = [json.loads(p.read_text())["spec"] for p in (out / JOBS_DIR).glob(f"*/*/{MARKER_FILE}")]
    # the default keys no job (recipes from before the setting keep their jobs); another does
    assert all(spec.get("threads") == (None if expected == 2 else 1) for spec in specs
               if "evaluate" not in spec)  # fmt: skip


def test_report_intervals_recompute_from_the_csv(tmp_path, fake_data_root, calls) -> None:
    out = tmp_path / "study"
    result = run(tiny(tmp_path, naive=True), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    # The differences straight from the files (independent of the report's reading of them).
    evaluations = sorted((out / JOBS_DIR / "evaluate").glob(f"*/{MARKER_FILE}"))
    d = np.zeros((2, 2))
    for marker in evaluations:
        spec = json.loads(marker.read_text())["spec"]
        r = int(marker.parent.name.rsplit("-r", 1)[1])
        for s in (0, 1):
            d[r, s] = file_figure(out / JOBS_DIR / spec["files"]["e"], s) - file_figure(
                out / JOBS_DIR / spec["files"]["me"], s
            )
    (row,) = [v for v in report["verdict"] if v["figure"] == "log p(M)"]
    means = d.mean(axis=1)
    low, high = stats.t.interval(0.95, 1, loc=means.mean(), scale=stats.sem(means))
    assert row["interval"] == pytest.approx([low, high], rel=1e-9)
    assert row["comparison"] == "me" and row["replicates"] == 2 and row["seeds"] == 2
    # The CSV holds every (replicate, seed) difference: the interval recomputes from it.
    with open(out / "values.csv") as handle:
        lines = [x for x in csv.DictReader(handle) if x["comparison"] == "me"]
    from_csv = np.zeros((2, 2))
    for line in lines:
        from_csv[int(line["replicate"]), int(line["seed"])] = float(line["difference"])
    assert from_csv == pytest.approx(d, rel=1e-12)
    # The naive pairing is descriptive: outside the verdict, in its own section.
    assert [v["comparison"] for v in report["descriptive"]] == ["naive"]
    assert all(v["comparison"] != "naive" for v in report["verdict"])
    markdown = (out / "report.md").read_text()
    assert markdown.index("Primary figure") < markdown.index("Every verdict row")
    assert markdown.index("Every verdict row") < markdown.index("naive pairing (descriptive")
    assert "Multiplicity" in markdown


def test_a_killed_study_resumes_with_only_the_unfinished_jobs(
    tmp_path, fake_data_root, calls
) -> None:
    out, recipe = tmp_path / "study", tiny(tmp_path)
    calls["interrupt_at"] = 2  # the second evaluation is killed
    assert run(recipe, out, fake_data_root, tmp_path / "cache").exit_code == 130
    before = {kind: markers(out, kind) for kind in ("cvae", "generate", "mix", "evaluate")}
    assert len(before["cvae"]) == 4 and len(before["evaluate"]) == 1
    assert not (out / "report.json").exists()
    calls["interrupt_at"] = None
    for kind in ("cvae", "generate", "mix", "evaluate"):
        calls[kind].clear()
    result = run(recipe, out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert calls["cvae"] == calls["generate"] == calls["mix"] == []
    assert len(calls["evaluate"]) == 1  # only the killed one
    assert markers(out, "evaluate").items() >= before["evaluate"].items()
    assert (out / "report.json").is_file()


def test_a_changed_evaluate_setting_reruns_only_the_evaluations(
    tmp_path, fake_data_root, calls
) -> None:
    out = tmp_path / "study"
    assert run(tiny(tmp_path, k=2), out, fake_data_root, tmp_path / "cache").exit_code == 0
    before = {kind: markers(out, kind) for kind in ("cvae", "generate", "mix", "evaluate")}
    for kind in calls:
        if isinstance(calls[kind], list):
            calls[kind].clear()
    result = run(tiny(tmp_path, k=3), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert calls["cvae"] == calls["generate"] == calls["mix"] == []
    assert len(calls["evaluate"]) == 2  # both replicates' evaluations, nothing else
    for kind in ("cvae", "generate", "mix"):
        assert markers(out, kind) == before[kind]  # the same folders, untouched
    new = set(markers(out, "evaluate")) - set(before["evaluate"])
    assert len(new) == 2
    # A changed CVAE setting reruns everything downstream of the CVAEs.
    for kind in calls:
        if isinstance(calls[kind], list):
            calls[kind].clear()
    text = tiny(tmp_path, k=3).read_text().replace("epochs = 1\nlimit", "epochs = 2\nlimit")
    (tmp_path / "recipe.toml").write_text(text)
    assert run(tmp_path / "recipe.toml", out, fake_data_root, tmp_path / "cache").exit_code == 0
    assert (len(calls["cvae"]), len(calls["generate"]), len(calls["mix"])) == (4, 2, 2)


# --- validation ---------------------------------------------------------------------------


def test_every_mistake_is_one_line_and_nothing_is_written(tmp_path) -> None:
    bad = tiny(
        tmp_path,
        models='["jmvae", "nope"]',
        extra="""
[[sweep]]
factor = "evaluate.epochs"
values = [1, -2]

[[sweep]]
factor = "generate.colour"
values = [1, 2]
""",
    )
    text = bad.read_text().replace("n_train = 40", "n_train = 40\nsize = 3")
    text = 'colour = "red"\n' + text.replace("count = 2", "count = 0").replace(
        'primary = "log p(M)"', 'primary = "x"'
    )
    bad.write_text(text)
    out = tmp_path / "study"
    result = invoke("study", "run", bad, "--out", out)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "Traceback" not in result.output
    expected = [
        "unknown top-level key 'colour'",
        "unknown key generate.size",
        "replicates.count must be an integer >= 1, got 0",
        "primary 'x' is not a figure",
        "unknown model(s) nope",
        "sweep 1: evaluate.epochs = -2",
        "sweep 2: unknown factor 'generate.colour'",
    ]
    for fragment in expected:
        assert sum(fragment in line for line in errors) >= 1, (fragment, errors)
    assert len(errors) == len(expected), errors
    assert not out.exists()


def test_the_demo_recipe_is_valid() -> None:
    import tomllib

    path = Path(__file__).resolve().parents[1] / "recipes" / "demo.toml"
    recipe = validate(tomllib.loads(path.read_text()), str(path))
    assert recipe.replicates >= 2 and len(recipe.evaluator_seeds) >= 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"twins": {"fractions": [1.5]}}, "must lie in (0, 1)"),
        ({"twins": {"mixed": False}}, "no twin to compare E with"),
        ({"replicates": {"evaluator_seeds": [0, 0]}}, "more than once"),
        ({"sources": ["mnist"]}, "two or more"),
        ({"cvae": {"beta": -1.0}}, "beta must be >= 0"),
        ({"generate": {"decode": "median"}}, "unknown --decode 'median'"),
        ({"sweep": [{"factor": "cvae.epochs", "values": [1]}]}, "two or more values"),
        ({"truth": {"method": "grid"}}, "unknown --method 'grid'"),
        ({"truth": {"points": 0}}, "truth: points must be >= 1"),
        ({"truth": {"enabled": False}}, "needs the ground truth"),
        ({"twins": {"subset": "crop"}}, "subset must be one of"),
        ({"twins": {"block_codes": -1}}, "block_codes must be >= 0"),
    ],
)
def test_single_mistakes(change, message) -> None:
    with pytest.raises(RecipeError) as caught:
        validate(change, "r.toml")
    assert any(message in line for line in caught.value.mistakes), caught.value.mistakes


def test_defaults_are_a_valid_recipe() -> None:
    recipe = validate({})
    assert recipe.primary == "recovered fraction" and recipe.replicates == 5
    assert recipe.truth["enabled"] and recipe.twins["subset"] == "shrink"
    assert math.isclose(recipe.generate["radius"], 2.0)


def test_a_sweep_draws_each_models_gap_against_the_factor(tmp_path, fake_data_root, calls) -> None:
    extra = '\n[[sweep]]\nfactor = "evaluate.k"\nvalues = [2, 5]\n'
    out = tmp_path / "study"
    result = run(tiny(tmp_path, extra=extra), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert len(calls["evaluate"]) == 4  # k = 2 is the recipe's own point: shared, not redone
    report = json.loads((out / "report.json").read_text())
    (curve,) = report["sweeps"]
    assert curve["factor"] == "evaluate.k" and curve["budget"]
    entry = curve["models"]["jmvae"][""]
    assert [p["value"] for p in entry["points"]] == [2, 5]
    assert entry["converged"] is True  # the fake figure does not depend on k
    assert (out / report["figures"]["evaluate.k"]).is_file()
    assert "## Sweep: evaluate.k" in (out / "report.md").read_text()


def test_a_sweep_value_without_a_figure_keeps_its_column() -> None:
    """Decoded means have no recovered fraction: their column reads —, the others stay put."""
    from mmgen.study.report import sweep_table

    curve = {
        "factor": "generate.decode",
        "values": ["sample", "mean"],
        "models": {"jmvae": {"": {"points": [{"value": "mean", "mean": 0.25, "interval": None}],
                                  "converged": None}}},
    }  # fmt: skip
    header, _, row, *note = sweep_table(curve)
    assert header.count("|") == row.count("|")  # one cell per column
    assert row.split("|")[3].strip() == "—" and row.split("|")[4].strip().startswith("0.25")
    assert any("no finite true gap" in line for line in note)


def test_not_converged_when_the_last_step_moves_more_than_the_interval() -> None:
    from mmgen.study.report import converged

    def point(mean, half):
        return {"mean": mean, "interval": [mean - half, mean + half]}

    assert converged([point(1.0, 0.5), point(1.4, 0.5)], budget=True) is True
    assert converged([point(1.0, 0.5), point(1.6, 0.5)], budget=True) is False
    assert converged([point(1.0, 0.5), point(1.6, 0.5)], budget=False) is None
    assert converged([point(1.0, 0.5), {"mean": 3.0, "interval": None}], budget=True) is None


def test_tiny_recipe_end_to_end_with_the_real_evaluate(tmp_path, fake_data_root) -> None:
    out = tmp_path / "study"
    result = run(tiny(tmp_path), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["primary"] == "log p(M)"
    primary = [row for row in report["verdict"] if row["figure"] == "log p(M)"]
    assert [(r["model"], r["comparison"], r["replicates"], r["seeds"]) for r in primary] == [
        ("jmvae", "me", 2, 2)
    ]
    assert primary[0]["interval"] is not None
    lines = (out / "values.csv").read_text().splitlines()
    assert len(lines) - 1 == 4 * len(report["verdict"])  # 2 replicates × 2 seeds per row
    # `mmgen study report` rewrites the same report from the folder.
    before = (out / "report.json").read_bytes()
    result = invoke("study", "report", out)
    assert result.exit_code == 0, result.output
    assert (out / "report.json").read_bytes() == before


# --- the ground truth in the study (issue 16 through issue 17's recipe) ------------------------

SAMPLED = """
[truth]
points = 8
"""


def sampled_recipe(tmp_path: Path) -> Path:
    path = tiny(tmp_path, extra=SAMPLED)
    text = path.read_text().replace('primary = "log p(M)"\n', "")
    text = text.replace("n_test = 20\n", 'n_test = 40\ndecode = "sample"\n')
    text = text.replace(
        "naive_limit = 30\n", "naive_limit = 30\nfractions = [0.5]\nblock_codes = 2\n"
    )
    text = text.replace("classifier_epochs = 1\n", "classifier_epochs = 1\ntest_limit = 30\n")
    path.write_text(text)
    return path


def _true_log_p(path: Path, rows: int) -> float:
    """The mean stored true log p(x) of ``path``'s first ``rows`` test tuples, read by h5py."""
    with h5py.File(str(path) + ".truth.h5", "r") as handle:
        return float(np.asarray(handle["per_tuple/log_p"])[:rows].mean())


def model_figure(path: Path, seed: int) -> float:
    """A fake model's log p(M): a file-dependent share of the true one, plus a seed offset."""
    share = 0.5 + 0.4 * int.from_bytes(hashlib.sha256(path.read_bytes()).digest()[:2]) / 65535
    return share * _true_log_p(path, 20) + 0.01 * seed


def test_truth_fractions_subsets_and_the_recovered_fraction(
    tmp_path, fake_data_root, calls, monkeypatch
) -> None:
    limits = []
    fake = mmgen.study.steps.evaluate_datasets

    def recording(paths, out, config, **kwargs):
        limits.append((config.limit, config.test_limit))
        report = fake(paths, out, config, **kwargs)
        for path in map(Path, paths):
            if path.stem != "naive":
                for s in config.seeds:
                    report["datasets"][path.stem]["seeds"][str(s)]["jmvae"]["log_likelihood"] = (
                        model_figure(path, s)
                    )
        save_json(Path(out) / "report.json", report)
        return report

    monkeypatch.setattr(mmgen.study.steps, "evaluate_datasets", recording)
    out = tmp_path / "study"
    result = run(sampled_recipe(tmp_path), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    # 40 test tuples = 4 codes × 10 classes, blocks of 2 codes: 30 rows shrink to 20.
    assert limits == [(None, 20), (None, 20)]
    report = json.loads((out / "report.json").read_text())
    assert report["primary"] == "recovered fraction"
    # Fraction twins are made with their f and the recipe's blocks.
    mixes = [
        json.loads(p.read_text())["spec"] for p in (out / JOBS_DIR / "mix").glob(f"*/{MARKER_FILE}")
    ]
    assert (
        sorted((s["fraction"], s["block_codes"]) for s in mixes) == [(0.5, 2)] * 2 + [(1.0, 2)] * 2
    )
    evaluations = sorted((out / JOBS_DIR / "evaluate").glob(f"*/{MARKER_FILE}"))
    for marker in evaluations:
        files = {
            n: out / JOBS_DIR / p
            for n, p in json.loads(marker.read_text())["spec"]["files"].items()
        }
        # E and ME evaluated on the same images: mnist identical, fashion the same multiset.
        with h5py.File(files["e"], "r") as e, h5py.File(files["me"], "r") as me:
            for name in ("mnist", "fashion-mnist"):
                a = np.asarray(e[f"test/images/{name}"])[:20].reshape(20, -1)
                b = np.asarray(me[f"test/images/{name}"])[:20].reshape(20, -1)
                if name == "mnist":
                    assert np.array_equal(a, b)
                else:
                    assert sorted(map(bytes, a)) == sorted(map(bytes, b))
                    assert not np.array_equal(a, b)  # it was mixed
        # Every generated file has its truth beside it; the naive pairing none.
        for name in ("e", "me", "me-f0.5"):
            assert Path(str(files[name]) + ".truth.h5").is_file()
    # The recovered fraction, recomputed by hand from the files and the fake evaluation.
    for twin in ("me", "me-f0.5"):
        rho = np.zeros((2, 2))
        for marker in evaluations:
            spec = json.loads(marker.read_text())["spec"]
            r = int(marker.parent.name.rsplit("-r", 1)[1])
            e, t = out / JOBS_DIR / spec["files"]["e"], out / JOBS_DIR / spec["files"][twin]
            true_gap = _true_log_p(e, 20) - _true_log_p(t, 20)
            for s in (0, 1):
                rho[r, s] = (model_figure(e, s) - model_figure(t, s)) / true_gap
        (row,) = [
            v for v in report["calibration"]["recovered"]
            if v["comparison"] == twin and v["point"] == "recipe"
        ]  # fmt: skip
        means = rho.mean(axis=1)
        low, high = stats.t.interval(0.95, 1, loc=means.mean(), scale=stats.sem(means))
        assert row["mean"] == pytest.approx(means.mean(), rel=1e-9)
        assert row["interval"] == pytest.approx([low, high], rel=1e-9)
    # …and from the CSV alone: recovered = model gap / true gap per (replicate, seed).
    with open(out / "gaps.csv") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 2 * 2 * 2  # twins × replicates × seeds
    for line in lines:
        ratio = float(line["model_gap"]) / float(line["true_gap"])
        assert float(line["recovered"]) == pytest.approx(ratio, rel=1e-12)
    with open(out / "calibration.csv") as handle:
        files_csv = list(csv.DictReader(handle))
    for line in files_csv:
        excess = float(line["true_log_likelihood"]) - float(line["model_log_likelihood"])
        assert float(line["excess"]) == pytest.approx(excess, rel=1e-12)
    # The report leads with the calibration; the verdict sentence; the dose-response figure.
    markdown = (out / "report.md").read_text()
    assert markdown.index("## Calibration against the ground truth") < markdown.index(
        "Every verdict"
    )
    assert "jmvae recovers" in markdown and "nats the modalities share" in markdown
    assert "I(mnist; fashion-mnist | c)" in markdown
    (out / report["figures"]["dose-response"]).is_file()
    curve = report["calibration"]["dose_response"]["jmvae"]["curve"]
    assert [c["fraction"] for c in curve] == [0.0, 0.5, 1.0]
    # The pixel baseline of E on the evaluated rows, beside the models (here: pixels only).
    (pixels,) = [
        r for r in report["calibration"]["latent_recovery"] if r["model"].startswith("pixels")
    ]
    assert set(pixels["r2"]) >= {"mnist", "fashion-mnist", "mnist+fashion-mnist", "fusion_gain"}
    assert "Raw R² does not show coherence" in markdown


def test_a_means_study_says_first_that_the_gap_has_no_finite_target(
    tmp_path, fake_data_root, calls
) -> None:
    out = tmp_path / "study"
    result = run(tiny(tmp_path, extra=SAMPLED), out, fake_data_root, tmp_path / "cache")
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    head = markdown.split("## Calibration")[0]
    assert "the likelihood gap has no finite target" in head and "Entropy floor" in head
    report = json.loads((out / "report.json").read_text())
    assert report["calibration"]["recovered"] == []


def _summary(values):
    from mmgen.study.statistics import replicated_summary

    return replicated_summary(np.asarray(values, dtype=float), True)


def test_dose_response_spearman_and_slope_by_hand() -> None:
    from mmgen.study.calibration import dose_response

    true = {0.5: [1.0, 1.4, 0.8], 1.0: [2.0, 2.6, 1.9]}  # per replicate (one seed)
    model = {0.5: [0.4, 0.9, 0.2], 1.0: [1.5, 1.7, 1.1]}
    rows = [
        {"point": "recipe", "model": "m", "fraction": f,
         "model_gap": _summary([[v] for v in model[f]]),
         "true_gap": _summary([[v] for v in true[f]])}
        for f in (1.0, 0.5)
    ]  # fmt: skip
    result = dose_response(rows, "recipe")["m"]
    assert [c["fraction"] for c in result["curve"]] == [0.0, 0.5, 1.0]
    x = np.array(true[0.5] + true[1.0])
    y = np.array(model[0.5] + model[1.0])
    slope = np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2)
    assert result["slope"] == pytest.approx(slope, rel=1e-9)
    assert result["spearman"] == pytest.approx(1.0)  # 0 < mean(0.5) < mean(1.0)


def test_fusion_gain_of_a_model_is_joint_minus_the_best_single() -> None:
    from types import SimpleNamespace

    from mmgen.study.calibration import recovery_rows

    def figures(joint, a, b):
        def entry(v):
            return {"z": {"class_knn": {"r2": v}}}

        return {"latent_recovery": {"a+b": entry(joint), "a": entry(a), "b": entry(b)}}

    r2 = {(0, 0): (0.9, 0.7, 0.8), (0, 1): (0.8, 0.75, 0.5), (1, 0): (0.6, 0.65, 0.1),
          (1, 1): (0.7, 0.2, 0.3)}  # fmt: skip
    reports = {
        f"k{r}": {"datasets": {"e": {"seeds": {str(s): dict(m=figures(*r2[r, s]))
                                             for s in (0, 1)}}}}
        for r in (0, 1)
    }  # fmt: skip
    units = [SimpleNamespace(point="recipe", replicate=r, evaluate=f"k{r}") for r in (0, 1)]
    point = SimpleNamespace(name="recipe", recipe=SimpleNamespace(evaluate={"models": ["m"]}))
    plan = SimpleNamespace(points=[point], units=units)
    truths = {("recipe", r): {"extras": {"pixel_baseline": {"a": {"r2": 0.5}}}} for r in (0, 1)}
    rows = recovery_rows(reports, plan, truths, (0, 1))
    (model,) = [row for row in rows if row["model"] == "m"]
    gains = [[j - max(a, b) for j, a, b in (r2[r, 0], r2[r, 1])] for r in (0, 1)]
    assert model["r2"]["fusion_gain"]["mean"] == pytest.approx(np.mean(gains))
    assert model["r2"]["fusion_gain"]["replicate_means"] == pytest.approx(np.mean(gains, 1))


@pytest.mark.parametrize("name", ["results", "dose-response", "demo"])
def test_the_committed_recipes_are_valid_and_replicated(name: str) -> None:
    import tomllib

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.toml"
    recipe = validate(tomllib.loads(path.read_text()), str(path))
    assert len(recipe.evaluator_seeds) >= 2 and recipe.truth["enabled"]
    assert recipe.generate["decode"] == "sample" and recipe.primary == "recovered fraction"
    if name == "results":
        assert recipe.replicates >= 5
    if name == "dose-response":  # the results' replicates 0-2: the same CVAEs and files
        results = validate(
            tomllib.loads(path.with_name("results.toml").read_text()), "results.toml"
        )
        assert recipe.cvae == results.cvae and recipe.generate == results.generate
        assert recipe.seed == results.seed and recipe.replicates <= results.replicates
        assert recipe.twins["fractions"] == [0.25, 0.5, 0.75]
