"""Nothing lost, nothing crashes (issue 12), through the real command line.

Three parts, on tiny inputs built once for the module:

- a table of user mistakes and damaged inputs: each ends in exit code 2, exactly one ``Error:``
  line on stderr, no traceback, and every file as it was;
- operating-system failures on the output path: a full disk and a read-only file system, on a
  small tmpfs (needs root and ``mount``; skipped with the reason otherwise): one line naming the
  output, nothing left on the file system, and no work done before the failure;
- ``kill -9`` of every command at a seeded random instant of its work, then the same command
  again: the output was absent or complete after the kill, and after the rerun it equals an
  uninterrupted run's, with no ``.tmp-``/``.old-``/``.lock`` leftovers. SIGTERM and SIGHUP end
  a command like Ctrl-C, leaving nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import write_fake_source
from mmgen.checkpoint import holds_model, load_cvae
from mmgen.cli import app
from mmgen.config import save_json
from mmgen.cvae_training import train_cvae
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.cvae import CVAEConfig
from mmgen.train import TrainConfig

runner = CliRunner()
LITTER = re.compile(r"\.(tmp|old)-|\.lock$")
EVALUATE_FLAGS = ("--models", "jmvae", "--epochs", "1", "--limit", "20", "--test-limit", "10",
                  "--k", "2", "--prior-samples", "10", "--joint-samples", "20",
                  "--classifier-epochs", "1", "--device", "cpu", "-q")  # fmt: skip


class Workspace:
    """Tiny inputs shared by the module: a fake data root, CVAEs and an entangled file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        write_fake_source(self.data / "MNIST" / "raw", style="blocks", gz=True, seed=0)
        write_fake_source(self.data / "FashionMNIST" / "raw", style="stripes", gz=False, seed=1)
        tiny = TrainConfig(epochs=1, batch_size=16)
        self.cvae_a = self.train("a", "mnist", tiny)
        self.cvae_b = self.train("b", "fashion-mnist", tiny)
        self.cvae_d3 = self.train("d3", "fashion-mnist", tiny, CVAEConfig(latent_dim=3))
        self.entangled = generate_dataset(
            [self.cvae_a, self.cvae_b],
            root / "e.h5",
            GenerateConfig(n_train=100, n_test=50),
            device="cpu",
            allow_collapsed=True,  # one epoch on 20 images: the posterior collapses
        )
        self.cache = root / "classifier-cache"

    def train(self, name: str, source: str, config: TrainConfig, model=None) -> Path:
        train_cvae(self.root / name, source, model, config, data_dir=self.data, limit=20)
        return self.root / name

    def evaluate_args(self, *datasets: Path) -> list[str]:
        return [*map(str, datasets), *EVALUATE_FLAGS, "--data-dir", str(self.data),
                "--cache-dir", str(self.cache)]  # fmt: skip


@pytest.fixture(autouse=True)
def collapsed_cvaes_are_allowed(monkeypatch) -> None:
    """The workspace's CVAEs (one epoch on 20 images) collapse; generate decodes them here."""
    monkeypatch.setattr("mmgen.generate.collapsed_checkpoints", lambda checkpoints: [])


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("reliability"))


def invoke(*args: object):
    """The CLI in this process, without the user's data environment."""
    env = {"MMGEN_DATA_DIR": None, "MMGEN_MIRRORS": None}
    return runner.invoke(app, [str(arg) for arg in args], env=env)


def snapshot(folder: Path) -> dict[str, tuple[int, int, int] | None]:
    """Every entry under ``folder`` (hidden ones too); a file with its size, mtime and inode.

    A folder's own times are left out: a refused writer may have taken and released a lock
    file in it.
    """
    return {
        str(path.relative_to(folder)): None
        if path.is_dir()
        else (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        for path in folder.rglob("*")
        for stat in [path.lstat()]
    }


def assert_one_error_line(result, *fragments: str) -> str:
    """Exit 2, one ``Error:`` line on stderr and nothing else there, no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "[Errno" not in lines[0], lines[0]  # the reason in words, not OSError's repr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def litter(folder: Path) -> list[str]:
    """Leftovers of interrupted writers anywhere under ``folder``."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if LITTER.search(p.name))


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line, exit 2, nothing changed.


def damaged_inputs(ws: Workspace) -> Path:
    """Inputs a user may hold by mistake, made once (inside ``ws`` so they are snapshotted)."""
    bad = ws.root / "bad"
    if bad.exists():
        return bad
    bad.mkdir()
    foreign = bad / "foreign"  # another program's checkpoint folder (the legacy file names)
    foreign.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}}, foreign / "weights.pt")
    (foreign / "config.json").write_text('{"epochs": 3}\n')
    no_source = bad / "no-source"  # a legacy-looking CVAE folder whose config.json lacks source
    no_source.mkdir()
    torch.save({"model": {}, "model_config": {"latent_dim": 2}}, no_source / "weights.pt")
    (no_source / "config.json").write_text('{"epochs_done": 1}\n')
    damaged_weights = bad / "damaged-weights"
    shutil.copytree(ws.cvae_a, damaged_weights)
    weights = damaged_weights / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:1000])
    for name, damage in {
        "no-kind.h5": lambda handle: handle.attrs.__delitem__("kind"),
        "no-train.h5": lambda handle: handle.__delitem__("train"),
    }.items():
        shutil.copy(ws.entangled, bad / name)
        with h5py.File(bad / name, "r+") as handle:
            damage(handle)
    chunk = bad / "damaged-chunk.h5"
    shutil.copy(ws.entangled, chunk)
    with h5py.File(chunk, "r") as handle:
        offset = handle["train/images/mnist"].id.get_chunk_info(0).byte_offset
    with open(chunk, "r+b") as raw:  # garbage over the first compressed chunk of the train split
        raw.seek(offset)
        raw.write(b"\xff" * 64)
    (bad / "existing.h5").write_bytes(b"not replaced")
    (bad / "existing-report").mkdir()
    (bad / "existing-report" / "report.json").write_text("{}\n")
    (bad / "read-only").mkdir(mode=0o555)
    return bad


def bad_cases() -> list[tuple[str, Callable[[Workspace, Path], list], tuple[str, ...]]]:
    """``(id, arguments from (workspace, bad inputs), fragments of the error line)``."""
    generate = ["generate", "-q", "--device", "cpu"]
    return [
        ("checkpoint-of-another-program",
         lambda ws, bad: [*generate, "--cvae", bad / "foreign", "--cvae", ws.cvae_b,
                          "--out", ws.root / "x.h5"],
         ("foreign", "not a CVAE checkpoint", "mmgen train-cvae")),
        ("config-without-source",
         lambda ws, bad: [*generate, "--cvae", bad / "no-source", "--cvae", ws.cvae_b,
                          "--out", ws.root / "x.h5"],
         ("no 'source'",)),
        ("damaged-weights-no-unsafe-advice",
         lambda ws, bad: [*generate, "--cvae", bad / "damaged-weights", "--cvae", ws.cvae_b,
                          "--out", ws.root / "x.h5"],
         ("damaged", "weights.pt")),
        ("huge-n-train",
         lambda ws, bad: [*generate, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                          "--n-train", "100000000000000000000", "--out", ws.root / "x.h5"],
         ("--n-train", "too large")),
        ("huge-seed-names-the-flag",
         lambda ws, bad: [*generate, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                          "--seed", "100000000000000000000", "--out", ws.root / "x.h5"],
         ("--seed", "out of range")),
        ("infinite-radius",
         lambda ws, bad: [*generate, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                          "--radius", "inf", "--out", ws.root / "x.h5"],
         ("--radius", "finite")),
        ("latent-sizes-disagree",
         lambda ws, bad: [*generate, "--cvae", ws.cvae_a, "--cvae", ws.cvae_d3,
                          "--out", ws.root / "x.h5"],
         ("latent",)),
        ("generate-existing-out",
         lambda ws, bad: [*generate, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                          "--out", bad / "existing.h5"],
         ("already exists", "--overwrite")),
        ("h5-without-kind",
         lambda ws, bad: ["inspect", bad / "no-kind.h5"], ("no-kind.h5", "kind")),
        ("h5-without-train-split",
         lambda ws, bad: ["shuffle", bad / "no-train.h5", "--out", ws.root / "x.h5", "-q"],
         ("no 'train' split",)),
        ("inspect-unreadable-train-split",
         lambda ws, bad: ["inspect", bad / "damaged-chunk.h5"], ("train", "damaged")),
        ("inspect-cvae-other-latent-size",
         lambda ws, bad: ["inspect", ws.entangled, "--out", ws.root / "x.png",
                          "--cvae", ws.cvae_a, "--cvae", ws.cvae_d3],
         ("latent_dim",)),
        ("inspect-cvae-swapped",
         lambda ws, bad: ["inspect", ws.entangled, "--out", ws.root / "x.png",
                          "--cvae", ws.cvae_b, "--cvae", ws.cvae_a],
         ("not the CVAE that decoded", "in the order mnist, fashion-mnist")),
        ("shuffle-onto-its-input",
         lambda ws, bad: ["shuffle", ws.entangled, "--out", ws.entangled, "--overwrite", "-q"],
         ("input file",)),
        ("shuffle-missing-input",
         lambda ws, bad: ["shuffle", ws.root / "nope.h5", "--out", ws.root / "x.h5", "-q"],
         ("nope.h5",)),
        ("evaluate-existing-report",
         lambda ws, bad: ["evaluate", *ws.evaluate_args(ws.entangled),
                          "--out", bad / "existing-report"],
         ("holds results of other settings", "--overwrite")),
        ("evaluate-damaged-file",
         lambda ws, bad: ["evaluate", *ws.evaluate_args(bad / "no-kind.h5"),
                          "--out", ws.root / "x"],
         ("kind",)),
        ("train-cvae-resume-of-another-program",
         lambda ws, bad: ["train-cvae", "--source", "mnist", "--data-dir", ws.data,
                          "--out", bad / "foreign", "--resume", "-q"],
         ("foreign",)),
        ("train-cvae-out-under-a-file",
         lambda ws, bad: ["train-cvae", "--source", "mnist", "--data-dir", ws.data,
                          "--out", ws.entangled / "c", "-q"],
         ("e.h5",)),
        ("missing-data",
         lambda ws, bad: ["pair", "--source", "mnist", "--source", "fashion-mnist",
                          "--data-dir", ws.root / "nowhere", "--out", ws.root / "x.h5", "-q"],
         ("mnist files not found", "--data-dir")),
    ]  # fmt: skip


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in bad_cases()],
                         ids=[c[0] for c in bad_cases()])  # fmt: skip
def test_a_mistake_is_one_line_and_changes_nothing(ws, args, fragments) -> None:
    bad = damaged_inputs(ws)
    before = snapshot(ws.root)
    line = assert_one_error_line(invoke(*args(ws, bad)), *fragments)
    assert snapshot(ws.root) == before
    assert "weights_only" not in line and ".tmp-" not in line


def test_missing_data_lists_the_environment_variable_once(ws, monkeypatch) -> None:
    result = runner.invoke(
        app,
        ["pair", "--source", "mnist", "--source", "fashion-mnist", "--out", str(ws.root / "x")],
        env={"MMGEN_DATA_DIR": str(ws.root / "nowhere")},
    )
    line = assert_one_error_line(result, "MMGEN_DATA_DIR", "--data-dir (not set)")
    assert line.count(str(ws.root / "nowhere")) == 1


def test_a_data_dir_given_twice_is_one_place_searched(ws, monkeypatch) -> None:
    """A caller that fills --data-dir from MMGEN_DATA_DIR gets one place, not the folder twice."""
    from mmgen.data.sources import get_source

    monkeypatch.setenv("MMGEN_DATA_DIR", str(ws.root / "nowhere"))
    places = get_source("mnist").search_places(ws.root / "nowhere")
    assert [label for label, _ in places] == ["--data-dir/MMGEN_DATA_DIR", "cache", "Debian"]
    assert places[0][1] == ws.root / "nowhere" / "MNIST" / "raw"


def test_a_folder_holding_only_weights_is_not_stuck(ws, tmp_path) -> None:
    """An older mmgen killed between its two files left weights.pt alone: --resume says what to
    do, and the plain rerun it names replaces the folder with a complete checkpoint."""
    out = tmp_path / "c"
    out.mkdir()
    shutil.copy(ws.cvae_a / "weights.pt", out / "weights.pt")
    train = ["train-cvae", "--source", "mnist", "--data-dir", ws.data, "--out", out,
             "--limit", "20", "--epochs", "1", "--batch-size", "16", "-q"]  # fmt: skip
    assert_one_error_line(invoke(*train, "--resume"), "without --resume")
    result = invoke(*train)
    assert result.exit_code == 0, result.output
    assert holds_model(out) and load_cvae(out).metadata["epochs_done"] == 1


def test_a_second_evaluate_into_a_folder_being_written_fails(ws, tmp_path) -> None:
    """Another process holds the report folder's lock: evaluate fails at once, in one line."""
    out = tmp_path / "report"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mmgen.atomic import folder_lock\n"
         f"with folder_lock({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = invoke("evaluate", *ws.evaluate_args(ws.entangled), "--out", out)
        assert_one_error_line(result, f"another process is writing {out}")
    finally:
        holder.kill()
        holder.communicate()
    assert not out.exists()


def test_evaluate_overwrite_replaces_the_whole_report_folder(ws, tmp_path) -> None:
    """--overwrite swaps in the new report as a whole: no figure of the first run stays."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "latent-old-model.png").write_bytes(b"a figure of the first run")
    (out / "report.json").write_text("{}\n")
    result = invoke("evaluate", *ws.evaluate_args(ws.entangled), "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "latent-old-model.png").exists()
    report = json.loads((out / "report.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["jobs", "report.json", "report.md", *report["figures"].values()]
    )
    assert litter(tmp_path) == []


def test_non_finite_figures_are_written_as_standard_json(tmp_path) -> None:
    path = tmp_path / "r.json"
    save_json(path, {"a": float("nan"), "b": [float("inf"), 1.5], "c": {"d": -float("inf")}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5], "c": {"d": None}}


# ---------------------------------------------------------------------------------------------
# A full disk and a read-only file system, on a small tmpfs.


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a full disk for any real output; skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("full-disk and read-only cases mount a tmpfs: run the tests as root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # A failing test may still hold a file there (in its traceback): detach lazily then.
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)


def output_cases(ws: Workspace, folder: Path) -> dict[str, list]:
    """Every command writing into ``folder``; after a failure nothing must be left there."""
    return {
        "generate": ["generate", "-q", "--device", "cpu", "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                     "--n-train", "100", "--n-test", "50", "--out", folder / "e.h5"],
        "shuffle": ["shuffle", ws.entangled, "--out", folder / "me.h5", "-q"],
        "pair": ["pair", "--source", "mnist", "--source", "fashion-mnist", "--data-dir", ws.data,
                 "--out", folder / "m.h5", "-q"],
        "train-cvae": ["train-cvae", "--source", "mnist", "--data-dir", ws.data, "--limit", "20",
                       "--epochs", "1", "--batch-size", "16", "--out", folder / "c", "-q"],
        "inspect": ["inspect", ws.entangled, "--out", folder / "e.png"],
        "evaluate": ["evaluate", *ws.evaluate_args(ws.entangled), "--out", folder / "report"],
    }  # fmt: skip


def test_a_full_disk_is_one_line_and_leaves_nothing(ws, small_tmpfs) -> None:
    for command, args in output_cases(ws, small_tmpfs).items():
        out = Path(args[args.index("--out") + 1])
        line = assert_one_error_line(invoke(*args), str(out), "No space left on device")
        assert ".tmp-" not in line, line
        # evaluate's --out is a folder of resumable jobs: it may keep its complete settings
        # records (jobs/*.json), never a report or a partial file
        written = [p for p in small_tmpfs.rglob("*") if not p.is_dir()]
        if command == "evaluate":
            written = [p for p in written if p.parent.name != "jobs" or p.suffix != ".json"]
        assert written == [], command


def test_a_read_only_output_fails_before_any_work(ws, small_tmpfs, tmp_path) -> None:
    """Read-only --out: one line naming it, before a model is trained or a file is read."""
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    cache = tmp_path / "fresh-cache"
    for command, args in output_cases(ws, small_tmpfs).items():
        args = [str(arg) for arg in args]
        if command == "evaluate":
            args[args.index("--cache-dir") + 1] = str(cache)
        if command == "train-cvae":
            args.remove("-q")  # a trained epoch would print a line: the one-line check sees it
        line = assert_one_error_line(invoke(*args), str(Path(args[args.index("--out") + 1])))
        assert "read-only" in line.lower(), line
    assert not cache.exists()  # evaluate: failed before training its classifiers


# ---------------------------------------------------------------------------------------------
# kill -9 at seeded random instants, then the same command again.

# The child imports everything (seconds), says so, then runs the real entry point, so that the
# kill lands in the command's work rather than in the imports.
CHILD = (
    "import sys\n"
    "from mmgen.cli import load_app, main\n"
    "load_app()\n"
    "print('ready', flush=True)\n"
    "sys.argv = ['mmgen', *sys.argv[1:]]\n"
    "main()\n"
)


def start_child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("MMGEN_DATA_DIR", None)
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def kill_during(args: list[str], work_seconds: float, rng: random.Random) -> int:
    """Run ``args`` in a child; SIGKILL it at a seeded random instant of its ``work_seconds``.

    Returns:
        The child's exit status (``-SIGKILL`` when the kill landed before it finished).
    """
    process = start_child(args)
    try:
        time.sleep(rng.uniform(0.05, 1.0) * work_seconds)
    finally:
        process.kill()
        process.communicate(timeout=60)
    return process.returncode


def outputs_equal(kind: str, got: Path, expected: Path) -> bool:
    """Whether two outputs of the same command hold the same result."""
    if kind == "file":
        return got.read_bytes() == expected.read_bytes()
    if kind == "checkpoint":
        ours, theirs = load_cvae(got), load_cvae(expected)
        if ours.metadata["epochs_done"] != theirs.metadata["epochs_done"]:
            return False
        reference = theirs.model.state_dict()
        return all(torch.equal(v, reference[k]) for k, v in ours.model.state_dict().items())
    report, reference = (
        json.loads((folder / "report.json").read_text()) for folder in (got, expected)
    )
    for summary in (*report["classifiers"].values(), *reference["classifiers"].values()):
        summary.pop("loaded_from_cache", None)  # tells a rerun from a first run
    figures = [*report["figures"].values()] + [
        model["figures"]["curves"]
        for entry in report["datasets"].values()
        for per_seed in entry["seeds"].values()
        for model in per_seed.values()
    ]
    return (
        all((got / figure).is_file() for figure in figures)
        and (got / "report.md").is_file()
        and report == reference
    )


def kill_cases(ws: Workspace) -> dict[str, tuple[str, list, list]]:
    """``command: (output kind, arguments without --out, arguments of the rerun)``."""
    train = ["train-cvae", "--source", "mnist", "--data-dir", ws.data, "--limit", "20",
             "--epochs", "3", "--batch-size", "4", "--device", "cpu", "-q"]  # fmt: skip
    return {
        "generate": ("file", ["generate", "-q", "--device", "cpu", "--cvae", ws.cvae_a,
                              "--cvae", ws.cvae_b, "--n-train", "1000", "--n-test", "200",
                              "--allow-collapsed"],
                     ["--overwrite"]),
        "shuffle": ("file", ["shuffle", ws.entangled, "-q"], ["--overwrite"]),
        "pair": ("file", ["pair", "--source", "mnist", "--source", "fashion-mnist",
                          "--data-dir", ws.data, "-q"], ["--overwrite"]),
        "inspect": ("file", ["inspect", ws.entangled, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b],
                    []),
        "train-cvae": ("checkpoint", train, ["--resume"]),
        # evaluate resumes its finished jobs: the same command, no flag
        "evaluate": ("report", ["evaluate", *ws.evaluate_args(ws.entangled)], []),
    }  # fmt: skip


OUT_NAMES = {"file": "out.h5", "checkpoint": "c", "report": "report"}


@pytest.mark.parametrize("command", ["generate", "shuffle", "pair", "inspect", "train-cvae",
                                     "evaluate"])  # fmt: skip
def test_kill_9_then_rerun_equals_an_uninterrupted_run(ws, tmp_path, command) -> None:
    kind, args, rerun_flags = kill_cases(ws)[command]
    name = "out.png" if command == "inspect" else OUT_NAMES[kind]
    straight, killed = tmp_path / "straight" / name, tmp_path / "killed" / name
    killed.parent.mkdir()
    started = time.monotonic()
    result = invoke(*args, "--out", straight)
    assert result.exit_code == 0, result.output
    work_seconds = time.monotonic() - started

    rng = random.Random(f"kill {command}")  # fixed kill instants, different per command
    kill_during([*args, "--out", killed], work_seconds, rng)
    # A kill leaves the output absent or complete (an epoch's checkpoint: complete and loadable).
    if killed.exists():
        if kind == "checkpoint":
            assert load_cvae(killed).metadata["epochs_done"] <= 3
        elif kind == "report" and not (killed / "report.json").exists():
            pass  # an unfinished evaluation: its finished jobs wait for the rerun
        else:
            assert outputs_equal(kind, killed, straight)

    resume = rerun_flags if kind != "checkpoint" or holds_model(killed) else []
    result = invoke(*args, "--out", killed, *resume)
    assert result.exit_code == 0, result.output
    assert outputs_equal(kind, killed, straight)
    assert litter(tmp_path) == []
    assert litter(ws.cache) == [] if ws.cache.exists() else True


@pytest.mark.parametrize(("command", "sig"), [("generate", signal.SIGHUP),
                                              ("evaluate", signal.SIGTERM)])  # fmt: skip
def test_sigterm_and_sighup_end_a_command_cleanly(ws, tmp_path, command, sig) -> None:
    """The signal lands while the command works: exit 130, one truthful line, no leftovers."""
    kind, args, _ = kill_cases(ws)[command]
    out = tmp_path / OUT_NAMES[kind]
    if command == "generate":
        args = [*args, "--n-train", "200000", "--n-test", "10"]  # seconds of work
    else:
        args = [*args, "--epochs", "1000"]  # the last --epochs wins
    process = start_child([*args, "--out", out])
    try:
        time.sleep(1.5)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and "\r" not in line
             and not line.startswith("WARNING")]  # --allow-collapsed's warning  # fmt: skip
    if command == "evaluate":  # a folder of resumable jobs: finished jobs stay, no report yet
        assert len(lines) == 1 and lines[0].startswith(f"Interrupted ({sig.name}); "), lines
        assert "run the same command again" in lines[0], lines
        assert not (out / "report.json").exists()
    else:
        assert lines == [f"Interrupted ({sig.name}); every output is as it was before this "
                         "run (nothing partial)."]  # fmt: skip
        assert not out.exists()
    assert litter(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Issue 20: nothing wrong says "done". Each case ends in one line, exit 2, nothing changed.


def lying_inputs(ws: Workspace) -> Path:
    """Inputs that look right and are not, made once inside ``ws`` (so they are snapshotted)."""
    lies = ws.root / "lies"
    if lies.exists():
        return lies
    lies.mkdir()
    nan_cvae = lies / "nan-cvae"  # a CVAE whose training diverged (an older mmgen saved it)
    shutil.copytree(ws.cvae_a, nan_cvae)
    state = torch.load(nan_cvae / "weights.pt", weights_only=True)
    first = next(iter(state["state_dict"]))
    state["state_dict"][first] = torch.full_like(state["state_dict"][first], float("nan"))
    torch.save(state, nan_cvae / "weights.pt")
    edited = lies / "edited-latent"  # model.json edited to another latent size
    shutil.copytree(ws.cvae_a, edited)
    record = json.loads((edited / "model.json").read_text())
    record["config"]["latent_dim"] = 1000
    (edited / "model.json").write_text(json.dumps(record))

    def retype_images(handle: h5py.File) -> None:  # float64 0…255 under a uint8 header
        images = handle["train/images/mnist"][:].astype("float64")
        del handle["train/images/mnist"]
        handle["train/images/mnist"] = images

    for name, edit in {
        "run-a-string": lambda record: record.__setitem__("run", "x"),
        "source-null": lambda record: record["run"].__setitem__("source", None),
    }.items():
        shutil.copytree(ws.cvae_a, lies / name)
        record = json.loads((lies / name / "model.json").read_text())
        edit(record)
        (lies / name / "model.json").write_text(json.dumps(record))
    shutil.copytree(ws.cvae_a, lies / "no-model-json")  # weights.pt without its model.json
    (lies / "no-model-json" / "model.json").unlink()
    (lies / "looping" / "test" / "a").mkdir(parents=True)
    (lies / "looping" / "train").symlink_to("train")
    grey = np.zeros((6, 28, 28), np.uint8)
    labels = np.arange(6) % 3
    for name, arrays in {
        "test-32x32.npz": {"x_test": np.zeros((4, 32, 32), np.uint8)},
        "test-rgb.npz": {"x_test": np.zeros((4, 28, 28, 3), np.uint8)},
        "no-test-images.npz": {"x_test": grey[:0], "y_test": labels[:0]},
        "label-huge.npz": {"y_train": np.array([0, 1, 2, 0, 1, 100_000_000])},
        "pickled.npz": {"class_names": np.array([{"a": 1}, None, 3], dtype=object)},
    }.items():
        np.savez(lies / name, **{"x_train": grey, "y_train": labels, "x_test": grey[:4],
                                 "y_test": labels[:4], **arrays})  # fmt: skip
    ten = np.zeros((20, 28, 28), np.uint8)  # train labels 0…4 only; test labels 0…9
    np.savez(lies / "train-lacks-5-9.npz", x_train=ten, y_train=np.arange(20) % 5, x_test=ten,
             y_test=np.arange(20) % 10, class_names=np.array([f"c{k}" for k in range(10)]))
    np.savez(lies / "train-lacks-5-9-unnamed.npz", x_train=ten, y_train=np.arange(20) % 5,
             x_test=ten, y_test=np.arange(20) % 10)  # fmt: skip
    np.save(lies / "array.npy", grey)
    def float_code_index(handle: h5py.File) -> None:  # row numbers stored as float32
        index = handle["train/code_index"][:].astype("float32")
        del handle["train/code_index"]
        handle["train/code_index"] = index

    for name, damage in {
        "code-index-float32.h5": float_code_index,
        "label-99.h5": lambda handle: handle["train/labels"].__setitem__(0, 99),
        "label-10.h5": lambda handle: handle["train/labels"].__setitem__(5, 10),
        "label-minus-1.h5": lambda handle: handle["test/labels"].__setitem__(3, -1),
        "latent-5.h5": lambda handle: handle.attrs.__setitem__("latent_dim", 5),
        "size-3000.h5": lambda handle: handle["train"].attrs.__setitem__("size", 3000),
        "float64-images.h5": retype_images,
    }.items():
        shutil.copy(ws.entangled, lies / name)
        with h5py.File(lies / name, "r+") as handle:
            damage(handle)
    return lies


def train_args(ws: Workspace, *flags: object) -> list:
    out = ws.root / "new-cvae"
    return ["train-cvae", "--source", "mnist", "--data-dir", ws.data, "--limit", "20",
            "--epochs", "1", "--batch-size", "16", "-q", "--out", out, *flags]  # fmt: skip


def npz_args(ws: Workspace, path: Path) -> list:
    return ["train-cvae", "--source", f"npz:{path}", "--epochs", "1", "-q",
            "--out", ws.root / "new-cvae"]  # fmt: skip


def generate_args(ws: Workspace, *flags: object) -> list:
    return ["generate", "-q", "--device", "cpu", "--out", ws.root / "x.h5", *flags]


def lying_cases() -> list[tuple[str, Callable[[Workspace, Path], list], tuple[str, ...]]]:
    """``(id, arguments from (workspace, lying inputs), fragments of the error line)``."""
    return [
        ("train-cvae-lr-inf", lambda ws, lies: train_args(ws, "--lr", "inf"), ("--lr", "finite")),
        ("train-cvae-lr-nan", lambda ws, lies: train_args(ws, "--lr", "nan"), ("--lr", "finite")),
        ("train-cvae-beta-inf",
         lambda ws, lies: train_args(ws, "--beta", "inf"), ("--beta", "finite")),
        ("train-cvae-beta-nan",
         lambda ws, lies: train_args(ws, "--beta", "nan"), ("--beta", "finite")),
        ("train-cvae-seed-negative",
         lambda ws, lies: train_args(ws, "--seed", "-1"), ("--seed", "out of range")),
        ("train-cvae-seed-huge",
         lambda ws, lies: train_args(ws, "--seed", "99999999999999999999"),
         ("--seed", "out of range")),
        ("generate-seed-negative",
         lambda ws, lies: generate_args(ws, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                                        "--seed", "-1"), ("--seed", "out of range", "2**63")),
        ("generate-radius-nan",
         lambda ws, lies: generate_args(ws, "--cvae", ws.cvae_a, "--cvae", ws.cvae_b,
                                        "--radius", "nan"), ("--radius", "finite")),
        ("shuffle-seed-negative",
         lambda ws, lies: ["shuffle", ws.entangled, "--out", ws.root / "x.h5", "-q",
                           "--seed", "-1"], ("--seed", "out of range")),
        ("pair-seed-negative",
         lambda ws, lies: ["pair", "--source", "mnist", "--source", "fashion-mnist",
                           "--data-dir", ws.data, "--out", ws.root / "x.h5", "-q",
                           "--seed", "-1"], ("--seed", "out of range")),
        ("evaluate-seed-negative",
         lambda ws, lies: ["evaluate", *ws.evaluate_args(ws.entangled), "--out", ws.root / "x",
                           "--seed", "-1"], ("--seed", "out of range")),
        ("evaluate-seeds-negative",
         lambda ws, lies: ["evaluate", *ws.evaluate_args(ws.entangled), "--out", ws.root / "x",
                           "--seeds", "0", "--seeds", "-1"], ("--seed", "out of range")),
        ("generate-nan-cvae",
         lambda ws, lies: generate_args(ws, "--cvae", lies / "nan-cvae", "--cvae", ws.cvae_b),
         ("nan-cvae", "NaN or infinite", "retrain")),
        ("generate-config-edited",
         lambda ws, lies: generate_args(ws, "--cvae", lies / "edited-latent", "--cvae", ws.cvae_b),
         ("edited-latent", "the config asks for", "shape")),
        ("inspect-label-99",
         lambda ws, lies: ["inspect", lies / "label-99.h5"],
         ("label-99.h5", "train/labels", "99", "10 classes")),
        ("inspect-label-10", lambda ws, lies: ["inspect", lies / "label-10.h5"],
         ("label-10.h5", "train/labels", "to 10")),
        ("shuffle-label-minus-1",
         lambda ws, lies: ["shuffle", lies / "label-minus-1.h5", "--out", ws.root / "x.h5", "-q"],
         ("label-minus-1.h5", "test/labels", "-1")),
        ("evaluate-latent-dim-lie",
         lambda ws, lies: ["evaluate", *ws.evaluate_args(lies / "latent-5.h5"),
                           "--out", ws.root / "x"], ("latent-5.h5", "z", "latent_dim 5")),
        ("inspect-size-lie",
         lambda ws, lies: ["inspect", lies / "size-3000.h5"],
         ("size-3000.h5", "train", "3000")),
        ("evaluate-float64-images",
         lambda ws, lies: ["evaluate", *ws.evaluate_args(lies / "float64-images.h5"),
                           "--out", ws.root / "x"],
         ("float64-images.h5", "train/images/mnist", "float64")),
        ("npz-test-32x32", lambda ws, lies: npz_args(ws, lies / "test-32x32.npz"),
         ("test-32x32.npz", "28×28", "32×32")),
        ("npz-grey-and-rgb", lambda ws, lies: npz_args(ws, lies / "test-rgb.npz"),
         ("test-rgb.npz", "grey", "colour")),
        ("npz-no-test-images", lambda ws, lies: npz_args(ws, lies / "no-test-images.npz"),
         ("no-test-images.npz", "x_test", "no images")),
        ("npz-label-huge", lambda ws, lies: npz_args(ws, lies / "label-huge.npz"),
         ("label-huge.npz", "100000000", "only 4")),
        ("npz-given-an-npy", lambda ws, lies: npz_args(ws, lies / "array.npy"),
         ("array.npy", "not an .npz")),
        ("npz-pickled-no-unsafe-advice", lambda ws, lies: npz_args(ws, lies / "pickled.npz"),
         ("pickled.npz", "never loads")),
        ("batch-norm-mu-one-example",
         lambda ws, lies: [*train_args(ws, "--batch-norm-mu"), "--limit", "1"],
         ("--batch-norm-mu", "at least 2")),
        ("batch-norm-mu-one-left-mid-epoch",
         lambda ws, lies: [*train_args(ws, "--batch-norm-mu"), "--limit", "17"],
         ("--batch-norm-mu", "17 training examples in batches of 16")),
        ("train-cvae-out-empty",
         lambda ws, lies: [*train_args(ws)[:-2], "--out", ""], ("--out", "names no file")),
        ("evaluate-out-empty",
         lambda ws, lies: ["evaluate", *ws.evaluate_args(ws.entangled), "--out", ""],
         ("--out", "names no file")),
        ("generate-run-a-string",
         lambda ws, lies: generate_args(ws, "--cvae", lies / "run-a-string", "--cvae", ws.cvae_b),
         ("run-a-string", "'run' must be a record")),
        ("generate-run-source-null",
         lambda ws, lies: generate_args(ws, "--cvae", lies / "source-null", "--cvae", ws.cvae_b),
         ("source-null", "run.source")),
        ("npz-train-lacks-classes",
         lambda ws, lies: npz_args(ws, lies / "train-lacks-5-9.npz"),
         ("no examples of 5 of its 10 classes (c5,c6,c7,c8,c9)", "--classes c0,c1,c2,c3,c4")),
        ("npz-train-lacks-classes-unnamed",
         lambda ws, lies: npz_args(ws, lies / "train-lacks-5-9-unnamed.npz"),
         ("only 5 of them (none of 5,6,7,8,9)",)),
        ("shuffle-code-index-float32",
         lambda ws, lies: ["shuffle", lies / "code-index-float32.h5", "--out", ws.root / "s.h5"],
         ("code-index-float32.h5: train/code_index", "float32")),
        ("generate-no-model-json",
         lambda ws, lies: generate_args(ws, "--cvae", lies / "no-model-json", "--cvae", ws.cvae_b),
         ("no-model-json lacks model.json",)),
        ("folder-train-link-loop",
         lambda ws, lies: ["train-cvae", "--source", f"folder:{lies / 'looping'}", "-q",
                           "--out", ws.root / "new-cvae"], ("looping/train", "loops")),
    ]  # fmt: skip


def test_malformed_mirrors_are_one_line_and_leave_no_cache_folder(tmp_path) -> None:
    cache = tmp_path / "cache-home"
    result = runner.invoke(
        app,
        ["train-cvae", "--source", "fashion-mnist", "--download", "-q", "--out",
         str(tmp_path / "c")],
        env={"MMGEN_DATA_DIR": None, "MMGEN_MIRRORS": "::not a url{", "XDG_CACHE_HOME": str(cache),
             "MMGEN_CACHE_DIR": str(cache / "mmgen")},
    )  # fmt: skip
    assert_one_error_line(result, "MMGEN_MIRRORS", "'::not'", "not a base URL")
    assert not cache.exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in lying_cases()],
                         ids=[c[0] for c in lying_cases()])  # fmt: skip
def test_a_lie_is_one_line_and_changes_nothing(ws, args, fragments) -> None:
    lies = lying_inputs(ws)
    before = snapshot(ws.root)
    started = time.monotonic()
    line = assert_one_error_line(invoke(*args(ws, lies)), *fragments)
    assert snapshot(ws.root) == before
    assert "allow_pickle" not in line and "unsafe" not in line.lower(), line
    assert time.monotonic() - started < 30  # before any work (a label of 10**8: minutes)


def test_seeds_do_not_alias() -> None:
    """-1 and 2**63 - 1 were one stream under two recorded seeds: the library refuses the first."""
    from mmgen import rng
    from mmgen.errors import UsageError

    assert rng.key_entropy(rng.SEED_MAX, "x") != rng.key_entropy(0, "x")
    for seed in (-1, 2**63, 10**20):
        with pytest.raises(UsageError, match="out of range"):
            rng.stream(seed, "x")
        with pytest.raises(UsageError, match="out of range"):
            rng.numpy_stream(seed, "x")
    with pytest.raises(UsageError, match="--seed"):
        TrainConfig(seed=2**63)


def test_a_diverging_training_stops_in_one_line_without_a_checkpoint(ws, tmp_path) -> None:
    """A finite but absurd learning rate turns the loss NaN: no NaN CVAE is saved, exit 2."""
    out = tmp_path / "c"
    args = [a if a != ws.root / "new-cvae" else out for a in train_args(ws, "--lr", "1e30")]
    assert_one_error_line(invoke(*args), "diverged", "--lr")
    assert not out.exists() or not holds_model(out)
    assert litter(tmp_path) == []


def test_memory_is_estimated_before_a_cvae_is_built(ws, tmp_path, monkeypatch) -> None:
    """More memory than there is: one line with the figure and a way out, before any epoch."""
    import mmgen.resources

    monkeypatch.setattr(mmgen.resources, "available_bytes", lambda device: 1 << 20)
    out = tmp_path / "c"
    args = [a if a != ws.root / "new-cvae" else out for a in train_args(ws)]
    line = assert_one_error_line(invoke(*args), "needs about", "MiB", "--batch-size")
    assert "1 MiB free" in line
    assert not holds_model(out)


def test_the_memory_estimate_scales_with_the_images() -> None:
    """The estimate covers the dense layers' weights: 2000×2000 images ask for tens of GiB."""
    from mmgen.models.cvae import CVAE, CVAEConfig
    from mmgen.resources import cvae_training_bytes

    small = CVAEConfig()
    big = CVAEConfig(image_shape=(1, 2000, 2000))
    params = sum(p.numel() for p in CVAE(small).parameters())  # built for real: the oracle
    assert cvae_training_bytes(small, 1) >= 4 * params
    # encoder Linear(64·1000·1000 + 10 → 128) and decoder Linear(128 → 64·1000·1000)
    dense = 2 * 128 * 64 * 1000 * 1000
    assert cvae_training_bytes(big, 8) >= 4 * 4 * dense > 30 * 2**30


def test_a_failed_evaluate_does_not_block_its_correction(ws, tmp_path) -> None:
    """After a one-line failure before any job, the folder binds nothing: another setting is
    not refused as "other settings"; settings.json is committed only with a finished job."""
    out = tmp_path / "report"
    nowhere = ["--data-dir", ws.root / "nowhere"]
    first = invoke("evaluate", *ws.evaluate_args(ws.entangled), *nowhere, "--out", out)
    assert_one_error_line(first, "not found")
    assert not (out / "jobs" / "settings.json").exists()
    second = invoke("evaluate", *ws.evaluate_args(ws.entangled), *nowhere, "--out", out,
                    "--epochs", "2")  # fmt: skip
    assert_one_error_line(second, "not found")


def test_temporaries_name_their_host_and_only_local_writers_are_judged(tmp_path) -> None:
    """A temporary of another node (shared file system) is never removed as dead; a local one
    of a dead process is; new temporaries carry this host."""
    from mmgen.atomic import atomic_path, host_tag, recover

    dead = 999999999  # no such pid here
    other_host = tmp_path / f".x.h5.tmp-some_other_node-{dead}-abcd1234"
    local_dead = tmp_path / f".x.h5.tmp-{host_tag()}-{dead}-abcd1234"
    for path in (other_host, local_dead):
        path.write_bytes(b"")
    recover(tmp_path / "x.h5")
    assert other_host.exists() and not local_dead.exists()
    with atomic_path(tmp_path / "y.h5") as tmp:
        assert tmp.name.startswith(f".y.h5.tmp-{host_tag()}-{os.getpid()}-")
        tmp.write_bytes(b"data")


def test_a_file_is_flushed_to_disk_before_it_is_renamed(tmp_path, monkeypatch) -> None:
    """A power loss after the rename must not leave an empty file: fsync comes first."""
    import mmgen.atomic

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(f"fsync {os.readlink(f'/proc/self/fd/{fd}')}")
        real_fsync(fd)

    def replace(source, target) -> None:
        events.append(f"replace {source}")
        real_replace(source, target)

    monkeypatch.setattr(mmgen.atomic.os, "fsync", fsync)
    monkeypatch.setattr(mmgen.atomic.os, "replace", replace)
    with mmgen.atomic.atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("content")
    assert events[:2] == [f"fsync {tmp}", f"replace {tmp}"], events


def write_image_folder(root: Path, per_class: dict[str, int], size: int = 4) -> Path:
    """``root/{train,test}/<class>/k.png``: ``per_class`` grey images per class and split."""
    from PIL import Image

    for split in ("train", "test"):
        for label, (name, count) in enumerate(per_class.items()):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for k in range(count):
                pixels = np.full((size, size), 10 * label + k, dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{k}.png")
    return root


def test_a_folder_link_loop_and_hidden_folders_do_not_change_the_data(tmp_path, caplog) -> None:
    """``train/a/loop -> ..`` turned 12 images into 492, filing b's and c's images under a;
    a hidden ``.ipynb_checkpoints`` folder became a class. Neither is read; counts are logged."""
    from PIL import Image

    from mmgen.data.sources import load_split

    root = write_image_folder(tmp_path / "pics", {"a": 4, "b": 4, "c": 4})
    (root / "train" / "a" / "loop").symlink_to("..")
    for hidden in (root / "train" / ".ipynb_checkpoints", root / "train" / "b" / ".cache"):
        hidden.mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(hidden / "x.png")
    with caplog.at_level(logging.INFO, logger="mmgen.data.sources.folder"):
        data = load_split(f"folder:{root}", "train")
    assert data.class_names == ("a", "b", "c")
    np.testing.assert_array_equal(data.labels, [0] * 4 + [1] * 4 + [2] * 4)
    np.testing.assert_array_equal(data.images[:, 0, 0, 0], [0, 1, 2, 3, 10, 11, 12, 13,
                                                            20, 21, 22, 23])  # fmt: skip
    assert "12 images in 3 classes (a 4, b 4, c 4)" in caplog.text
    assert "loop: a link to a folder, not followed" in caplog.text


def test_a_class_folder_linked_to_its_split_is_refused(tmp_path) -> None:
    root = write_image_folder(tmp_path / "pics", {"a": 2})
    (root / "train" / "z").symlink_to("..")
    (root / "test" / "z").mkdir()
    result = invoke("train-cvae", "--source", f"folder:{root}", "--out", tmp_path / "c", "-q")
    assert_one_error_line(result, "train/z", "loop")
    assert not (tmp_path / "c").exists()


def test_a_refused_cast_names_the_input_output_and_dataset(ws, tmp_path, monkeypatch) -> None:
    """"refusing to store float32 values as int64" named neither the input nor the dataset."""
    lies = lying_inputs(ws)
    monkeypatch.setattr("mmgen.data.h5io.check_promises", lambda *args: None)  # the writer's own
    out = tmp_path / "s.h5"
    result = invoke("shuffle", lies / "code-index-float32.h5", "--out", out)
    assert_one_error_line(result, f"{out}: train/code_index", "code-index-float32.h5",
                          "refusing to store float32 values as int64")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("figure", [True, False], ids=["with-out", "without-out"])
def test_inspect_refuses_cvaes_it_would_ignore(ws, tmp_path, figure) -> None:
    """``inspect naive.h5 --cvae …`` ignored the CVAEs silently (a naive file has no codes);
    without ``--out`` any file's ``--cvae`` was ignored too."""
    naive = tmp_path / "naive.h5"
    made = invoke("pair", "--source", "mnist", "--source", "fashion-mnist", "--data-dir", ws.data,
                  "--limit", "20", "--out", naive, "-q")  # fmt: skip
    assert made.exit_code == 0, made.output
    cvaes = ["--cvae", ws.cvae_a, "--cvae", ws.cvae_b]
    before = snapshot(tmp_path)
    if figure:
        result = invoke("inspect", naive, *cvaes, "--out", tmp_path / "n.png")
        assert_one_error_line(result, "naive.h5 is a naive file", "drop --cvae")
    else:
        result = invoke("inspect", ws.entangled, *cvaes)
        assert_one_error_line(result, "--cvae", "add --out")
    assert result.stdout == ""  # refused before the summary
    assert snapshot(tmp_path) == before


def test_a_truncated_image_is_named(tmp_path) -> None:
    """A cut-off PNG in a ``folder:`` source: PIL's "image file is truncated" named no file
    (and came with a traceback)."""
    from PIL import Image

    root = write_image_folder(tmp_path / "pics", {"a": 2, "b": 2}, size=16)
    cut = root / "train" / "b" / "1.png"
    noise = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    Image.fromarray(noise).save(cut)
    cut.write_bytes(cut.read_bytes()[:-30])  # the header whole, the pixels cut off
    before = snapshot(tmp_path)
    result = invoke("train-cvae", "--source", f"folder:{root}", "--out", tmp_path / "c", "-q")
    assert_one_error_line(result, "train/b/1.png", "truncated")
    assert snapshot(tmp_path) == before


def test_torchvision_s_bare_assert_gives_a_reason(ws, monkeypatch) -> None:
    """torchvision's checks are bare asserts: the line said "cannot read … ()"."""
    import torchvision.datasets

    from mmgen.data.sources import load_split
    from mmgen.errors import UsageError

    def bare_assert(*args, **kwargs):
        raise AssertionError

    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "__init__", bare_assert)
    with pytest.raises(UsageError) as raised:
        load_split("fashion-mnist", "train", data_dir=ws.data)
    message = str(raised.value)
    assert "()" not in message and "AssertionError check failed" in message, message


# ---------------------------------------------------------------------------------------------
# Issue 20, item 7: every output place (--out, --cache-dir) is checked before any work.


def refuse_training(monkeypatch) -> None:
    """Make any training a test failure: the check must come before it."""

    def trained(*args, **kwargs):
        raise AssertionError("a model trained before the output place was checked")

    monkeypatch.setattr("mmgen.cvae_training.fit", trained)
    monkeypatch.setattr("mmgen.classifiers.train_classifier", trained)
    monkeypatch.setattr("mmgen.runner.run_job", trained)


def test_a_full_train_cvae_out_is_found_before_an_epoch(ws, small_tmpfs, monkeypatch) -> None:
    refuse_training(monkeypatch)
    out = small_tmpfs / "c"
    args = [*train_args(ws)[:-2], "--out", out]
    assert_one_error_line(invoke(*args), "--out", str(out), "No space left on device", "free")
    assert [p for p in small_tmpfs.rglob("*")] == []


@pytest.mark.parametrize("place", ["read-only", "full"])
def test_a_bad_cache_dir_is_found_before_a_classifier_trains(
    ws, small_tmpfs, tmp_path, monkeypatch, place
) -> None:
    refuse_training(monkeypatch)
    if place == "read-only":
        subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    cache, out = small_tmpfs / "cache", tmp_path / "report"
    args = ["evaluate", *ws.evaluate_args(ws.entangled), "--out", out]
    args[args.index("--cache-dir") + 1] = cache
    fragment = "Read-only" if place == "read-only" else "No space left on device"
    assert_one_error_line(invoke(*args), "--cache-dir", str(cache), fragment)
    assert [p for p in small_tmpfs.rglob("*")] == []
    assert not (out / "report.json").exists() and not (out / "jobs" / "settings.json").exists()


def test_a_full_evaluate_out_is_found_before_a_classifier_trains(
    ws, small_tmpfs, tmp_path, monkeypatch
) -> None:
    refuse_training(monkeypatch)
    out = small_tmpfs / "report"
    args = ["evaluate", *ws.evaluate_args(ws.entangled), "--out", out]
    args[args.index("--cache-dir") + 1] = tmp_path / "fresh-cache"
    assert_one_error_line(invoke(*args), "--out", str(out), "No space left on device")
    assert not (tmp_path / "fresh-cache").exists()
    assert [p for p in small_tmpfs.rglob("*") if not p.is_dir()] == []


@pytest.mark.parametrize("place", ["out", "cache-dir"])
def test_a_study_checks_its_out_and_cache_before_the_first_job(
    ws, small_tmpfs, tmp_path, monkeypatch, place
) -> None:
    from test_study import tiny

    refuse_training(monkeypatch)
    monkeypatch.setattr("mmgen.study.run._run_one", refuse_training)  # any job: a failure
    out, cache = tmp_path / "study", tmp_path / "cache"
    if place == "out":  # full (a read-only one is refused by its lock already)
        out, reason = small_tmpfs / "study", "No space left on device"
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
        cache, reason = small_tmpfs / "cache", "Read-only"
    args = ["study", "run", tiny(tmp_path), "--out", out, "--data-dir", ws.data,
            "--cache-dir", cache, "--device", "cpu", "--quiet"]  # fmt: skip
    assert_one_error_line(invoke(*args), f"--{place}", reason)
    assert not (out / "jobs").exists()


# ---------------------------------------------------------------------------------------------
# Issue 20, item 9: Ctrl-C during start-up and inside lazy imports: one line, exit 130.

# Sends SIGINT to itself when the import machinery looks for TARGET, then runs the CLI: an
# interrupt inside numpy's own import left numpy half-initialised ("cannot load module more
# than once per process", a traceback, exit 1).
INTERRUPTED_IMPORT = (
    "import os, signal, sys\n"
    "TARGET = sys.argv.pop(1)\n"
    "class Hook:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == TARGET:\n"
    "            sys.meta_path.remove(self)\n"
    "            os.kill(os.getpid(), signal.SIGINT)\n"
    "sys.meta_path.insert(0, Hook())\n"
    "sys.argv[0] = 'mmgen'\n"
    "from mmgen.cli import main\n"
    "main()\n"
)


def run_interrupted(args: list, target: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("MMGEN_DATA_DIR", None)
    return subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT, target, *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)  # fmt: skip


@pytest.mark.parametrize("target", ["numpy.exceptions", "sympy"])
def test_ctrl_c_inside_an_import_is_one_line(ws, tmp_path, target) -> None:
    """numpy.exceptions loads during start-up, sympy lazily inside train-cvae's work."""
    out = tmp_path / "c"
    args = ["train-cvae", "--source", "mnist", "--data-dir", ws.data, "--limit", "20",
            "--epochs", "1", "-q", "--out", out]  # fmt: skip
    done = run_interrupted(args, target, tmp_path)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Interrupted"), done.stderr
    assert not out.exists() and litter(tmp_path) == []


def test_a_signal_during_an_import_is_raised_after_it(tmp_path, monkeypatch) -> None:
    from mmgen.atomic import signals_as_interrupts

    (tmp_path / "slow_module_r3.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.3)\n"
        "COMPLETE = True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt), signals_as_interrupts():
        import slow_module_r3  # noqa: F401

        time.sleep(5)  # the interrupt arrives here, after the import
    assert sys.modules["slow_module_r3"].COMPLETE
    sys.modules.pop("slow_module_r3")


def test_a_signal_swallowed_by_a_finalizer_is_delivered_again() -> None:
    """SIGTERM that lands inside a weakref callback or __del__ is "ignored" by Python; the
    command must still stop with the interrupt, not go on to exit 0."""
    from mmgen.atomic import Terminated, signals_as_interrupts

    class Finalised:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)  # the handler raises here, inside __del__
            time.sleep(0.05)

    with pytest.raises(Terminated), signals_as_interrupts():
        Finalised()  # its __del__ runs at once: the interrupt is swallowed there
        time.sleep(5)  # and must arrive again here


def test_sigint_at_early_instants_is_one_line(ws, tmp_path) -> None:
    """Ctrl-C at several instants of train-cvae's start: exit 130, no traceback (a bounded loop)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    env.pop("MMGEN_DATA_DIR", None)
    for delay in (0.1, 0.3, 0.5, 0.8, 1.2, 1.8, 2.5):
        out = tmp_path / f"c-{delay}"
        child = subprocess.Popen(
            [sys.executable, "-m", "mmgen", "train-cvae", "--source", "mnist", "--data-dir",
             str(ws.data), "--limit", "20", "--epochs", "100", "-q", "--out", str(out)],
            env=env, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
        assert child.returncode == 130, (delay, stderr)
        assert "Traceback" not in stderr, (delay, stderr)
        assert len(stderr.strip().splitlines()) == 1, (delay, stderr)
    assert litter(tmp_path) == []
