"""The command line's surface: user errors against bugs, Ctrl-C at start-up, defaults read from
the configs, ``--models`` from the registry, ``--deterministic`` reaching the library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

import mmgen.cli
import mmgen.cli.data
import mmgen.cli.evaluate
import mmgen.cli.train
from conftest import assert_one_line_error
from mmgen.cli import app
from mmgen.cli.common import honours_deterministic
from mmgen.errors import UsageError
from mmgen.evaluate import EvaluateConfig
from mmgen.generate import GenerateConfig
from mmgen.models.cvae import CVAEConfig
from mmgen.models.registry import MODELS
from mmgen.pair import PairConfig
from mmgen.shuffle import MixConfig
from mmgen.train import TrainConfig
from test_evaluate import write_mmgen_file

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": str(SRC)}

# A child that replaces the evaluate library call by ``RAISE`` and runs the real entry point.
CHILD_WITH_BUG = """
import sys
import mmgen.cli.evaluate
def broken(*args, **kwargs):
    raise RuntimeError("boom: an internal bug")
mmgen.cli.evaluate.evaluate_datasets = broken
sys.argv = ["mmgen", *sys.argv[1:]]
from mmgen.cli import main
main()
"""
# A child in which importing torch is interrupted, as Ctrl-C in the first second does.
CHILD_CTRL_C_IN_IMPORT = """
import builtins, sys
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "torch":
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.argv = ["mmgen", "--help"]
from mmgen.cli import main
main()
"""


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_mmgen_file(tmp_path / "mnist-e.h5")


@pytest.fixture
def captured(monkeypatch) -> dict:
    """Replace the evaluate library call: record its config and the determinism it ran under."""
    seen: dict = {}

    def fake_evaluate(paths, out, config, **kwargs) -> dict:
        seen["config"] = config
        seen["deterministic"] = torch.are_deterministic_algorithms_enabled()
        seen["tf32"] = torch.backends.cudnn.allow_tf32  # on by default: the flag must turn it off
        return {"classifiers": {}, "datasets": {}}

    monkeypatch.setattr(mmgen.cli.evaluate, "evaluate_datasets", fake_evaluate)
    return seen


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyError("boom"), ValueError("boom")])
def test_a_bug_is_not_turned_into_a_user_error(monkeypatch, dataset, tmp_path, error) -> None:
    # A plain ValueError too: only UsageError (and OSError) is the user's mistake.
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(mmgen.cli.evaluate, "evaluate_datasets", broken)
    result = invoke("evaluate", dataset, "--out", tmp_path / "out", "--quiet")
    assert result.exception is error
    assert result.exit_code == 1
    assert "Error:" not in result.output


def test_a_bug_keeps_its_traceback_with_verbose(dataset, tmp_path) -> None:
    result = run_child(
        CHILD_WITH_BUG, "evaluate", str(dataset), "--out", str(tmp_path / "o"), "-q", "--verbose"
    )
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "RuntimeError: boom: an internal bug"


def test_a_user_error_is_one_line_on_stderr(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mmgen", "evaluate", str(tmp_path / "nope.h5"), "--out", "o"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "nope.h5" in lines[0]
    # -v adds the traceback above the same last line (issue 18, item 6).
    verbose = subprocess.run(
        [sys.executable, "-m", "mmgen", "evaluate", str(tmp_path / "nope.h5"), "--out", "o", "-v"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == lines[0]


def test_ctrl_c_while_importing_is_one_line_and_exit_130() -> None:
    result = run_child(CHILD_CTRL_C_IN_IMPORT)
    assert result.returncode == 130, result.stderr
    assert result.stderr.strip().splitlines() == ["Interrupted while starting; nothing was done."]


def test_the_entry_point_imports_nothing_heavy_before_its_guard() -> None:
    code = (
        "import sys, mmgen.cli; print([m for m in ('torch', 'h5py', 'typer') if m in sys.modules])"
    )
    result = run_child(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "flags",
    [
        ("--models", "jmvae,tvae"),
        ("--models", "jmvae", "--models", "tvae"),
        ("--models", " jmvae , tvae,"),
    ],
    ids=["comma", "repeated", "spaces"],
)
def test_models_accepts_comma_lists_and_repeats(dataset, tmp_path, captured, flags) -> None:
    result = invoke("evaluate", dataset, "--out", tmp_path / "out", "--quiet", *flags)
    assert result.exit_code == 0, result.output
    assert captured["config"].models == ("jmvae", "tvae")


def test_models_default_and_unknown_names(dataset, tmp_path, captured) -> None:
    assert invoke("evaluate", dataset, "--out", tmp_path / "out", "-q").exit_code == 0
    assert captured["config"].models == EvaluateConfig().models
    result = invoke("evaluate", dataset, "--out", tmp_path / "out", "--models", "jmvae,vae")
    assert_one_line_error(result, "unknown model(s) vae", *MODELS)


def test_models_help_lists_the_registry() -> None:
    result = invoke("evaluate", "--help")
    for name in MODELS:
        assert name in result.output


def command_defaults(name: str) -> dict[str, object]:
    command = typer.main.get_command(app)
    return {p.name: p.default for p in command.commands[name].params}


@pytest.mark.parametrize(
    ("command", "config", "names"),
    [
        ("evaluate", EvaluateConfig(), ["epochs", "k", "prior_samples", "joint_samples", "limit",
                                        "test_limit", "batch_size", "lr", "classifier_epochs",
                                        "seed", "device"]),
        ("train-cvae", TrainConfig(), ["epochs", "batch_size", "lr", "seed"]),
        # --beta has no fixed default: 4 per 784 pixel values of the source's images
        ("train-cvae", CVAEConfig(), ["latent_dim", "batch_norm_mu"]),
        ("generate", GenerateConfig(), ["n_train", "n_test", "truncation", "radius", "labels",
                                        "decode", "dtype", "seed"]),
        ("shuffle", MixConfig(), ["seed"]),
        ("pair", PairConfig(), ["seed", "limit"]),
    ],
)  # fmt: skip
def test_cli_defaults_are_the_config_defaults(command, config, names) -> None:
    defaults = command_defaults(command)
    for name in names:
        assert str(getattr(defaults[name], "value", defaults[name])) == str(getattr(config, name))


def test_deterministic_mode_is_on_during_evaluate_only_when_asked(dataset, tmp_path, captured):
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32
    assert invoke("evaluate", dataset, "--out", tmp_path / "a", "-q").exit_code == 0
    assert captured["deterministic"] is False
    result = invoke("evaluate", dataset, "--out", tmp_path / "b", "-q", "--deterministic")
    assert result.exit_code == 0, result.output
    assert captured["deterministic"] is True and captured["tf32"] is False
    after = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32
    assert after == before  # restored for whatever runs next in the process


@pytest.mark.parametrize(
    ("command", "module", "function", "args"),
    [
        ("generate", mmgen.cli.data.generating, "generate_dataset",
         ["--cvae", "a", "--cvae", "b", "--out", "x.h5", "-q"]),
        ("train-cvae", mmgen.cli.train, "train_cvae", ["--source", "mnist", "--out", "x", "-q"]),
    ],
)  # fmt: skip
def test_deterministic_reaches_generate_and_train(monkeypatch, command, module, function, args):
    seen = []

    def fake(*a, **k):
        seen.append(torch.are_deterministic_algorithms_enabled())
        raise UsageError("stop here")  # a user error: the command ends with one line

    monkeypatch.setattr(module, function, fake)
    assert_one_line_error(invoke(command, *args, "--deterministic"), "stop here")
    assert_one_line_error(invoke(command, *args), "stop here")
    assert seen == [True, False]


def test_evaluate_report_records_the_environment(dataset, tmp_path, fake_data_root) -> None:
    out = tmp_path / "report"
    result = invoke("evaluate", dataset, "--out", out, "--models", "jmvae", "--epochs", "1",
                    "--k", "2", "--prior-samples", "10", "--joint-samples", "20",
                    "--classifier-epochs", "1", "--data-dir", fake_data_root, "--cache-dir",
                    tmp_path / "cache", "--device", "cpu", "-q", "--deterministic")  # fmt: skip
    assert result.exit_code == 0, result.output
    environment = json.loads((out / "report.json").read_text())["environment"]
    assert environment["device"] == "cpu"
    assert environment["torch"] == torch.__version__
    assert environment["cuda"] == (torch.version.cuda or "")
    assert environment["deterministic"] is True
    assert environment["tf32"] is False and environment["cudnn_tf32"] is False


def test_interrupt_in_a_command_is_one_line_and_exit_130(monkeypatch, dataset, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mmgen.cli.evaluate, "evaluate_datasets", interrupted)
    result = invoke("evaluate", dataset, "--out", tmp_path / "out", "-q")
    assert result.exit_code == 130
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_main_turns_an_interrupted_start_into_exit_130(monkeypatch, capsys) -> None:
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(mmgen.cli, "load_app", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        mmgen.cli.main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "Interrupted while starting; nothing was done.\n"


def test_honours_deterministic_needs_the_option() -> None:
    def command(seed: int) -> None: ...

    with pytest.raises(TypeError, match="no `deterministic` option"):
        honours_deterministic(command)


def test_an_hdf5_internal_error_keeps_its_traceback_and_v_shows_one(tmp_path, monkeypatch) -> None:
    """Issue 18, item 6: a plain OSError without errno (HDF5's internals, a bug) is not a user
    mistake; a user mistake is one line, and with -v also its traceback."""
    from mmgen.cli import evaluate as evaluate_cli

    data = tmp_path / "e.h5"
    data.write_bytes(b"")

    def internal(*args, **kwargs):
        raise OSError("Can't read data (inflate() failed)")

    monkeypatch.setattr(evaluate_cli, "evaluate_datasets", internal)
    result = runner.invoke(app, ["evaluate", str(data), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and isinstance(result.exception, OSError), result.output

    def mistake(*args, **kwargs):
        raise UsageError("a user mistake")

    monkeypatch.setattr(evaluate_cli, "evaluate_datasets", mistake)
    quiet = runner.invoke(app, ["evaluate", str(data), "--out", str(tmp_path / "r")])
    assert quiet.exit_code == 2 and "Traceback" not in quiet.output
    loud = runner.invoke(app, ["evaluate", str(data), "--out", str(tmp_path / "r"), "-v"])
    assert loud.exit_code == 2 and "Traceback" in loud.output and "a user mistake" in loud.output

    def missing(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", "x.h5")

    monkeypatch.setattr(evaluate_cli, "evaluate_datasets", missing)
    assert_one_line_error(
        runner.invoke(app, ["evaluate", str(data), "--out", str(tmp_path / "r")]), "x.h5"
    )
