"""``torchrun --nproc-per-node 2``: two CPU processes (gloo) give one process's bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import make_checkpoint
from mmgen.classifiers import ClassifierConfig, load_or_train_classifier
from mmgen.cli import app
from test_evaluate import write_mmgen_file

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"
TORCHRUN = Path(sys.executable).with_name("torchrun")
pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def torchrun(*args) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node 2 -m mmgen ARGS`` on this checkout's code."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(SRC)
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "mmgen"]
    return subprocess.run(
        [*command, *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def test_generate_on_two_ranks_writes_the_one_process_bytes(tmp_path) -> None:
    cvaes = [
        make_checkpoint(tmp_path / "cvae-mnist", "mnist", seed=0),
        make_checkpoint(tmp_path / "cvae-fashion", "fashion-mnist", seed=1),
    ]
    # 1,030 + 10 tuples in steps of 1,024: three steps, so the second round has one.
    flags = ["--n-train", "1030", "--n-test", "10", "--batch-size", "1024", "--device", "cpu",
             "--seed", "5", "--quiet", *(x for c in cvaes for x in ("--cvae", c))]  # fmt: skip
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert invoke("generate", *flags, "--out", one).exit_code == 0
    result = torchrun("generate", *flags, "--out", two)
    assert result.returncode == 0, result.stderr
    assert two.read_bytes() == one.read_bytes()
    assert result.stdout.count("Wrote") == 1  # rank 0 reports


def test_evaluate_on_two_ranks_writes_the_one_process_report(tmp_path, fake_data_root) -> None:
    cache = tmp_path / "cache"
    for source in ("mnist", "fashion-mnist"):  # both runs load them: the same report
        load_or_train_classifier(source, fake_data_root, cache, ClassifierConfig(epochs=1), "cpu")
    files = [write_mmgen_file(tmp_path / "e.h5"), write_mmgen_file(tmp_path / "me.h5", "mixed")]
    flags = [*files, "--models", "jmvae", "--seeds", "0", "1", "--epochs", "1", "--k", "3",
             "--prior-samples", "40", "--joint-samples", "200", "--batch-size", "16",
             "--classifier-epochs", "1", "--device", "cpu", "--quiet",
             "--data-dir", fake_data_root, "--cache-dir", cache]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert invoke("evaluate", *flags, "--out", one).exit_code == 0
    result = torchrun("evaluate", *flags, "--out", two)
    assert result.returncode == 0, result.stderr
    assert (two / "report.json").read_bytes() == (one / "report.json").read_bytes()
    assert (two / "report.md").read_bytes() == (one / "report.md").read_bytes()
    assert result.stdout.count("Wrote") == 1
    assert "Verdict" in (two / "report.md").read_text()


def test_evaluate_on_a_cold_cache_is_the_same_however_launched(
    tmp_path, fake_data_root, monkeypatch
) -> None:
    """torchrun gives each rank one thread, a lone process takes every core: CPU sums differed
    with the thread count (16 figures of report.json, issue 20). ``--threads`` fixes the count
    of every classifier (trained here, each launch into its own cold cache) and job."""
    files = [write_mmgen_file(tmp_path / "e.h5")]
    flags = [*files, "--models", "jmvae", "--seeds", "0", "1", "--epochs", "1", "--k", "3",
             "--prior-samples", "40", "--joint-samples", "200", "--batch-size", "16",
             "--classifier-epochs", "1", "--device", "cpu", "--quiet",
             "--data-dir", fake_data_root]  # fmt: skip
    one, two, cache = tmp_path / "one", tmp_path / "two", tmp_path / "cache"
    import torch

    from mmgen import runner as job_runner

    seen, fit, before = [], job_runner.fit, torch.get_num_threads()

    def counting_fit(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return fit(*args, **kwargs)

    monkeypatch.setattr(job_runner, "fit", counting_fit)
    torch.set_num_threads(2)  # what a lone process on this 2-core machine takes
    try:
        lone = invoke("evaluate", *flags, "--out", one, "--cache-dir", cache)
        assert torch.get_num_threads() == 2  # restored after the command
    finally:
        torch.set_num_threads(before)
    assert lone.exit_code == 0, lone.output
    assert seen == [1, 1]  # both jobs trained with the fixed count, not the process's
    shutil.rmtree(cache)  # cold again (the report names the cache: one path for both runs)
    result = torchrun("evaluate", *flags, "--out", two, "--cache-dir", cache)
    assert result.returncode == 0, result.stderr
    assert (two / "report.json").read_bytes() == (one / "report.json").read_bytes()
    report = json.loads((one / "report.json").read_text())
    assert report["environment"]["threads"] == report["config"]["threads"] == 1
