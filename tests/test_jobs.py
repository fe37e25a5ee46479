"""Evaluation jobs: keys, the settings manifest, resuming after kill -9, changed settings."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

import mmgen.cli.evaluate
from conftest import assert_one_line_error
from mmgen.classifiers import ClassifierConfig, load_or_train_classifier
from mmgen.cli import app
from mmgen.distributed import World, world_from_environment
from mmgen.errors import UsageError
from mmgen.evaluate import EvaluateConfig, evaluate_datasets
from mmgen.jobs import FIGURES_FILE, JOBS_DIR, job_key, manifest, manifest_differences
from test_evaluate import write_mmgen_file

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"
QUICK = ("--epochs", "1", "--k", "3", "--prior-samples", "40", "--joint-samples", "200",
         "--batch-size", "16", "--classifier-epochs", "1", "--device", "cpu", "--quiet",
         "--models", "jmvae")  # fmt: skip


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# --- keys and manifest -----------------------------------------------------------------------


def test_job_key_changes_with_everything_that_determines_a_job() -> None:
    base = ("ab" * 32, "jmvae", {"latent_dim": 2}, 0, {"epochs": 1})
    key = job_key(*base)
    assert job_key(*base) == key and len(key) == 64
    assert job_key(*base[:4], {"epochs": 1}) == key  # the same settings in a new dict
    variants = [
        ("cd" * 32, *base[1:]),
        (base[0], "m2vae", *base[2:]),
        (*base[:2], {"latent_dim": 3}, *base[3:]),
        (*base[:3], 1, base[4]),
        (*base[:4], {"epochs": 2}),
    ]
    assert len({job_key(*v) for v in variants} | {key}) == len(variants) + 1


def test_manifest_differences_name_settings_and_changed_files() -> None:
    old = manifest({"epochs": 1, "k": 3}, {"e": "a" * 64, "me": "b" * 64})
    assert manifest_differences(old, old) == []
    # Dropping or adding a dataset adds or leaves out jobs: not a difference.
    assert manifest_differences(old, manifest({"epochs": 1, "k": 3}, {"e": "a" * 64})) == []
    new = manifest({"epochs": 2, "k": 3}, {"e": "a" * 64, "me": "c" * 64})
    assert manifest_differences(old, new) == [
        "epochs was 1, now 2",
        f"dataset me has other contents (sha256 {'b' * 12}, now {'c' * 12})",
    ]


def test_world_from_torchrun_variables() -> None:
    assert world_from_environment({}) == World()
    world = world_from_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (world.rank, world.size, world.local_rank, world.is_main) == (3, 4, 1, False)
    assert [i for i in range(9) if world.owns(i)] == [3, 7]
    with pytest.raises(UsageError, match="not LOCAL_RANK, WORLD_SIZE"):
        world_from_environment({"RANK": "0"})
    with pytest.raises(UsageError, match="does not fit WORLD_SIZE=2"):
        world_from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(UsageError, match="must be integers"):
        world_from_environment({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


# --- --seeds on the command line -------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch) -> dict:
    seen: dict = {}

    def fake_evaluate(paths, out, config, **kwargs) -> dict:
        seen["paths"], seen["config"] = [Path(p).name for p in paths], config
        return {"classifiers": {}, "datasets": {}}

    monkeypatch.setattr(mmgen.cli.evaluate, "evaluate_datasets", fake_evaluate)
    return seen


@pytest.mark.parametrize(
    ("flags", "seeds"),
    [
        ([], (0,)),
        (["--seed", "7"], (7,)),
        (["--seeds", "3", "1", "2"], (1, 2, 3)),  # the numbers after --seeds, sorted
        (["--seeds", "0,4"], (0, 4)),
        (["--seeds", "5", "--seeds", "2"], (2, 5)),
    ],
)
def test_seeds_flags(tmp_path, captured, flags, seeds) -> None:
    data = write_mmgen_file(tmp_path / "e.h5")
    result = invoke("evaluate", *flags, data, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert captured["config"].seeds == seeds
    assert captured["paths"] == ["e.h5"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "1", "--seeds", "2"], "either --seed N"),
        (["--seeds", "one"], "--seeds takes integers, got 'one'"),
        (["--seeds", "1", "1"], "--seeds lists [1] more than once"),
    ],
)
def test_bad_seeds_are_one_clear_error(tmp_path, captured, flags, message) -> None:
    data = write_mmgen_file(tmp_path / "e.h5")
    assert_one_line_error(invoke("evaluate", data, *flags, "--out", tmp_path / "out"), message)


# --- jobs that survive interruption ------------------------------------------------------------


@pytest.fixture
def setup(tmp_path, fake_data_root) -> dict:
    """Two tiny files and a classifier cache already holding both classifiers."""
    cache = tmp_path / "cache"
    for source in ("mnist", "fashion-mnist"):
        load_or_train_classifier(source, fake_data_root, cache, ClassifierConfig(epochs=1), "cpu")
    files = [write_mmgen_file(tmp_path / "e.h5"), write_mmgen_file(tmp_path / "me.h5", "mixed")]
    common = ("--data-dir", fake_data_root, "--cache-dir", cache, *QUICK)
    return {"files": files, "common": common}


def job_inodes(out: Path) -> dict[str, int]:
    """Finished job folder → its inode: a redone job is a new folder (atomic swap)."""
    return {
        p.name: p.stat().st_ino
        for p in (out / JOBS_DIR).iterdir()
        if not p.name.startswith(".") and (p / FIGURES_FILE).is_file()
    }


def test_killed_evaluate_resumes_to_the_same_report(tmp_path, fake_data_root) -> None:
    # No classifier in the cache: the killed run trains them, the rerun finds them cached, and
    # the report still says what an uninterrupted run from an empty cache says.
    cache = tmp_path / "fresh-cache"
    files = [write_mmgen_file(tmp_path / "e.h5"), write_mmgen_file(tmp_path / "me.h5", "mixed")]
    args = [*files, "--seeds", "0", "1", "--data-dir", fake_data_root, "--cache-dir", cache,
            *QUICK]  # fmt: skip
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"

    # kill -9 once the first job is stored: the others are lost mid-work.
    command = [sys.executable, "-m", "mmgen", "evaluate", *map(str, args), "--out", str(resumed)]
    # One thread, as the test process runs (conftest): CPU convolutions' training rounds
    # differently with another thread count, and the killed run trains the classifiers.
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (resumed / JOBS_DIR).is_dir() or not job_inodes(resumed):
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no job finished in time"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    process.stderr.close()
    survivors = job_inodes(resumed)
    assert 1 <= len(survivors) < 4 and not (resumed / "report.json").exists()

    result = invoke("evaluate", *args, "--out", resumed)
    assert result.exit_code == 0, result.output
    after = job_inodes(resumed)
    assert len(after) == 4
    assert {name: after[name] for name in survivors} == survivors  # finished jobs not redone
    # No temporary is left (a lock file of the killed writer may be: its flock died with it).
    leftovers = [
        p for p in (resumed / JOBS_DIR).iterdir() if ".tmp-" in p.name or ".old-" in p.name
    ]
    assert not leftovers

    shutil.rmtree(cache)
    assert invoke("evaluate", *args, "--out", reference).exit_code == 0
    assert (resumed / "report.json").read_bytes() == (reference / "report.json").read_bytes()
    report = json.loads((reference / "report.json").read_text())
    assert not any(c["loaded_from_cache"] for c in report["classifiers"].values())


def test_changed_settings_are_named_and_redo_only_their_jobs(tmp_path, setup) -> None:
    out = tmp_path / "out"
    files, common = setup["files"], setup["common"]
    assert invoke("evaluate", *files, "--seeds", "0", *common, "--out", out).exit_code == 0
    first = job_inodes(out)
    assert len(first) == 2

    # Another seed adds its jobs and reuses the others.
    result = invoke("evaluate", *files, "--seeds", "0", "1", *common, "--out", out)
    assert result.exit_code == 0, result.output
    second = job_inodes(out)
    assert len(second) == 4 and {n: second[n] for n in first} == first
    assert json.loads((out / "report.json").read_text())["seeds"] == [0, 1]

    # Another number of epochs: refused, naming the setting, until --overwrite.
    changed = list(common)
    changed[common.index("--epochs") + 1] = "2"
    result = invoke("evaluate", *files, "--seeds", "0", "1", *changed, "--out", out)
    assert_one_line_error(result, "epochs was 1, now 2", "--overwrite")
    assert job_inodes(out) == second

    # One file changes: --overwrite redoes its jobs only.
    with h5py.File(files[1], "r+") as handle:
        handle["train/images/mnist"][0, 0, 0] ^= 1
    result = invoke("evaluate", *files, "--seeds", "0", "1", *common, "--out", out)
    assert_one_line_error(result, "dataset me has other contents")
    result = invoke("evaluate", *files, "--seeds", "0", "1", *common, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    third = job_inodes(out)
    kept = {n: i for n, i in third.items() if n in second}
    assert len(third) == 4 and len(kept) == 2  # the old jobs of me are removed, e's reused
    assert kept == {n: i for n, i in second.items() if n in kept}
    report = json.loads((out / "report.json").read_text())
    assert {j.split("/")[1][:12] for j in _job_paths(report)} == {n[:12] for n in third}


def _job_paths(report: dict) -> list[str]:
    return [
        result["job"]
        for entry in report["datasets"].values()
        for results in entry["seeds"].values()
        for result in results.values()
    ]


def test_an_interrupt_says_which_jobs_are_kept(tmp_path, monkeypatch) -> None:
    data, out = write_mmgen_file(tmp_path / "e.h5"), tmp_path / "out"

    def interrupted(paths, out, config, **kwargs):
        (Path(out) / JOBS_DIR / "abc-jmvae-s0-def").mkdir(parents=True)
        (Path(out) / JOBS_DIR / "abc-jmvae-s0-def" / FIGURES_FILE).write_text("{}")
        (Path(out) / JOBS_DIR / ".abc-jmvae-s1-def.tmp-1-x").mkdir()  # a job under way
        raise KeyboardInterrupt

    monkeypatch.setattr(mmgen.cli.evaluate, "evaluate_datasets", interrupted)
    result = invoke("evaluate", data, "--out", out, "-q")
    assert result.exit_code == 130
    assert result.output.strip() == (
        f"Interrupted; 1 finished job(s) are kept in {out / JOBS_DIR}: run the same command "
        "again to do the others and write the report."
    )


def test_progress_counts_all_jobs_and_names_the_current_one(tmp_path, setup) -> None:
    calls = []
    config = EvaluateConfig(models=("jmvae",), seeds=(0, 1), epochs=1, k=3, prior_samples=40,
                            joint_samples=200, batch_size=16, classifier_epochs=1,
                            device="cpu")  # fmt: skip
    data_dir, cache = setup["common"][1], setup["common"][3]
    evaluate_datasets(setup["files"][:1], tmp_path / "out", config, data_dir, cache,
                      on_task=lambda *call: calls.append(call))  # fmt: skip
    assert calls == [
        (0, 2, "e jmvae seed 0: train"),
        (0, 2, "e jmvae seed 0: measure"),
        (1, 2, "e jmvae seed 1: train"),
        (1, 2, "e jmvae seed 1: measure"),
        (2, 2, "report"),
        (2, 2, "done"),
    ]


def test_a_missing_file_named_like_a_number_is_a_missing_file(tmp_path) -> None:
    """Issue 18, item 9: ``evaluate a.h5 3 --seeds 0`` does not run seed 3."""
    data = write_mmgen_file(tmp_path / "e.h5")
    result = invoke("evaluate", data, "3", "--seeds", "0", "--out", tmp_path / "out")
    assert_one_line_error(result, "3 does not exist")
