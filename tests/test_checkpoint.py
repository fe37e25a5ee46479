"""Model folders: one save/load for all kinds, first-format folders, damage, atomic swaps, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import legacy_folders
from mmgen import atomic, checkpoint
from mmgen.atomic import atomic_folder, atomic_path, folder_lock, recover, signals_as_interrupts
from mmgen.checkpoint import load_cvae, save
from mmgen.classifiers import ClassifierConfig, ImageClassifier
from mmgen.config import to_dict
from mmgen.errors import UsageError
from mmgen.kinds import load, model_kinds
from mmgen.models.cvae import CVAE, CVAEConfig
from mmgen.models.registry import MODELS, build_model, load_model

SMALL_CLASSIFIER = {"num_classes": 3, **to_dict(ClassifierConfig(channels=(2, 4), feature_dim=8))}


def small_config(kind: str) -> dict:
    """A config of ``kind`` that builds a small model."""
    if kind == "cvae":
        return to_dict(CVAEConfig(latent_dim=3, num_classes=4))
    if kind == "classifier":
        return SMALL_CLASSIFIER
    config_class, _ = MODELS[kind]
    return to_dict(config_class(modalities=("a", "b")))


def randomised(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``model`` with every tensor of its state drawn from a seeded stream (no shared zeros)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator))
    return model


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_b = b.state_dict()
    for name, value in a.state_dict().items():
        assert torch.equal(value, state_b[name]), name


@pytest.mark.parametrize("kind", sorted(model_kinds()))
def test_every_kind_saves_and_loads_through_one_format(tmp_path: Path, kind: str) -> None:
    config = small_config(kind)
    model = randomised(model_kinds()[kind](config), seed=1)
    optimizer = torch.optim.Adam(model.parameters())
    run = checkpoint.run_record("cpu", epochs_done=3, source={"name": "fake"})
    save(tmp_path / "m", kind, model, config, run, optimizer)

    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (record["format"], record["format_version"], record["kind"]) == (
        "mmgen-model",
        checkpoint.FORMAT_VERSION,
        kind,
    )
    assert record["run"]["epochs_done"] == 3
    assert record["run"]["torch_version"] == torch.__version__
    assert record["run"]["environment"]["device"] == "cpu"
    # Tensors and plain values only: the safe loader reads it.
    torch.load(tmp_path / "m" / "weights.pt", weights_only=True)

    loaded = load(tmp_path / "m")
    assert loaded.kind == kind and loaded.config == config and loaded.format_version == 2
    assert not loaded.model.training
    assert_same_state(model, loaded.model)
    assert loaded.optimizer is not None
    assert loaded.sha256 == checkpoint.file_sha256(tmp_path / "m" / "weights.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporaries, no lock


def test_load_refuses_a_kind_the_caller_does_not_accept(tmp_path: Path) -> None:
    config = small_config("classifier")
    save(tmp_path / "c", "classifier", model_kinds()["classifier"](config), config, {})
    with pytest.raises(UsageError, match="holds a classifier model, not a CVAE checkpoint"):
        load_cvae(tmp_path / "c")


def test_first_format_cvae_still_loads(tmp_path: Path) -> None:
    model = randomised(CVAE(CVAEConfig(latent_dim=3)), seed=2)
    metadata = {"source": {"name": "mnist", "name_spec": "mnist"}, "epochs_done": 4, "limit": 7}
    history = [{"epoch": 4, "train_loss": 1.5}]
    legacy_folders.write_cvae(tmp_path / "old", model, None, metadata, history)
    assert json.loads((tmp_path / "old" / "config.json").read_text())["model"]["image_size"] == 28
    loaded = load_cvae(tmp_path / "old")
    assert loaded.config == model.config and loaded.image_shape == (1, 28, 28)
    assert loaded.metadata["epochs_done"] == 4 and loaded.metadata["limit"] == 7
    assert loaded.source["name"] == "mnist"
    assert loaded.history == history
    assert_same_state(model, loaded.model)
    z, labels = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.arange(5)
    torch.testing.assert_close(loaded.decode(z, labels), model.eval().decode(z, labels))


def test_format_2_cvae_folder_from_before_shapes_loads_as_1x28x28(tmp_path: Path) -> None:
    """model.json of mmgen before #10: the CVAE config holds ``image_size: 28``."""
    model = randomised(CVAE(CVAEConfig(latent_dim=3)), seed=2)
    config = legacy_folders.cvae_config(model.config)
    save(tmp_path / "m", "cvae", model, config, {"source": {"name": "mnist"}})
    loaded = load_cvae(tmp_path / "m")
    assert loaded.config == CVAEConfig(latent_dim=3).resolved()
    assert loaded.image_shape == (1, 28, 28)
    assert_same_state(model, loaded.model)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_format_2_multimodal_folders_from_before_shapes_load(tmp_path: Path, name: str) -> None:
    model = randomised(build_model(name, ("a", "b"), seed=0), seed=3)
    config = legacy_folders.multimodal_config(model.config)
    save(tmp_path / name, name, model, config, {})
    loaded = load_model(tmp_path / name)
    assert loaded.config.shapes == {"a": (1, 28, 28), "b": (1, 28, 28)}
    assert_same_state(model, loaded)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_first_format_multimodal_folders_still_load(tmp_path: Path, name: str) -> None:
    model = randomised(build_model(name, ("a", "b"), seed=0), seed=3)
    legacy_folders.write_multimodal(tmp_path / name, name, model)
    loaded = load_model(tmp_path / name)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert_same_state(model, loaded)


def test_first_format_classifier_still_loads(tmp_path: Path) -> None:
    config = ClassifierConfig(channels=(2, 4), feature_dim=8)
    model = randomised(ImageClassifier(3, config), seed=4)
    info = {"key": "k", "test_accuracy": 0.5}
    legacy_folders.write_classifier(tmp_path / "c", model, 3, config, info)
    loaded = load(tmp_path / "c")
    assert loaded.kind == "classifier" and loaded.run == info and loaded.format_version == 1
    assert loaded.config == SMALL_CLASSIFIER
    assert_same_state(model, loaded.model)


def test_a_damaged_weights_file_is_one_clear_error_without_unsafe_advice(tmp_path: Path) -> None:
    model = CVAE(CVAEConfig())
    save(tmp_path / "m", "cvae", model, to_dict(model.config), {"source": {}})
    (tmp_path / "m" / "weights.pt").write_bytes(b"\x80\x02not a torch file")
    with pytest.raises(UsageError) as error:
        load_cvae(tmp_path / "m")
    message = str(error.value)
    assert "damaged" in message and "weights.pt" in message
    assert "weights_only" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"config.json": {"model": {}}}, "has no 'source'"),  # a CVAE folder of another program
        ({}, "incomplete CVAE checkpoint"),  # weights.pt of a save killed before config.json
        ({"model.json": {"format": "other"}}, "not written by mmgen"),
        (
            {"model.json": {"format": "mmgen-model", "format_version": 99}},
            "upgrade mmgen",
        ),
    ],
)
def test_foreign_or_broken_folders_are_one_clear_error(
    tmp_path: Path, files: dict, fragment: str
) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    torch.save({"model": {}, "model_config": to_dict(CVAEConfig())}, folder / "weights.pt")
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))
    with pytest.raises(UsageError, match=fragment):
        load_cvae(folder)


def test_a_config_that_does_not_fit_the_weights_is_one_clear_error(tmp_path: Path) -> None:
    config = small_config("cvae")
    save(tmp_path / "m", "cvae", model_kinds()["cvae"](config), config, {"source": {}})
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    record["config"]["latent_dim"] = 5
    (tmp_path / "m" / "model.json").write_text(json.dumps(record))
    with pytest.raises(UsageError, match="config and weights disagree"):
        load_cvae(tmp_path / "m")


def test_a_record_without_weights_is_one_clear_error(tmp_path: Path) -> None:
    config = small_config("classifier")
    save(tmp_path / "c", "classifier", model_kinds()["classifier"](config), config, {})
    (tmp_path / "c" / "weights.pt").unlink()
    with pytest.raises(UsageError, match="model.json but no weights.pt"):
        load(tmp_path / "c")


def test_weights_of_another_program_are_refused(tmp_path: Path) -> None:
    torch.save({"net": {"w": torch.zeros(2)}}, tmp_path / "weights.pt")
    with pytest.raises(UsageError, match="not written by mmgen"):
        load(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model.json or weights.pt"):
        load(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "missing")


# --- atomic folders ---------------------------------------------------------------------------


def write_marker(folder: Path, value: str) -> None:
    (folder / "a").write_text(value)
    (folder / "b").write_text(value)


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )


@pytest.mark.parametrize("kill_at", ["writing", "between-renames", "after-swap"])
def test_a_kill_during_a_folder_swap_leaves_a_complete_folder(tmp_path: Path, kill_at: str) -> None:
    """A writer dies (``os._exit``: no clean-up runs) at each stage of the swap."""
    path = tmp_path / "out"
    with atomic_folder(path) as tmp:
        write_marker(tmp, "old")
    result = run_python(
        f"""
        import os, shutil
        from pathlib import Path
        from mmgen import atomic
        path = Path({str(path)!r})
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if {kill_at!r} == "between-renames" and Path(dst).name.startswith(".out.old-"):
                os._exit(9)
        atomic.os.replace = replace
        atomic.shutil.rmtree = lambda *a, **k: os._exit(9) if {kill_at!r} == "after-swap" else None
        with atomic.atomic_folder(path) as tmp:
            (tmp / "a").write_text("new")
            if {kill_at!r} == "writing":
                os._exit(9)
            (tmp / "b").write_text("new")
        """
    )
    assert result.returncode == 9, result.stderr
    assert any(p.name.startswith(".out.") for p in tmp_path.iterdir())  # the killed run's litter
    with folder_lock(path):  # what the next writer does first
        recover(path, locked=True)
    expected = "new" if kill_at == "after-swap" else "old"
    assert (path / "a").read_text() == (path / "b").read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_next_write_recovers_a_folder_left_between_renames(tmp_path: Path) -> None:
    """The state a kill between the renames leaves: no folder, a complete ``.old-`` sibling."""
    path = tmp_path / "out"
    with atomic_folder(path) as tmp:
        write_marker(tmp, "old")
    os.replace(path, tmp_path / ".out.old-999999999-abcd")
    (tmp_path / ".out.tmp-999999999-ef01").mkdir()
    assert not path.exists()
    with pytest.raises(RuntimeError), atomic_folder(path) as tmp:
        raise RuntimeError("the next writer fails too")
    assert (path / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_older_mmgens_swap_leftover_is_recovered(tmp_path: Path) -> None:
    """The first releases moved the old folder *into* a fresh ``.<name>.old-XXXX`` folder."""
    nested = tmp_path / ".out.old-k2j4h5" / "out"
    nested.mkdir(parents=True)
    write_marker(nested, "old")
    with folder_lock(tmp_path / "out"):
        recover(tmp_path / "out", locked=True)
    assert (tmp_path / "out" / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_file_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    dead = tmp_path / ".x.h5.tmp-999999999-abcd"
    alive = tmp_path / f".x.h5.tmp-{os.getppid()}-abcd"  # our parent is alive
    other = tmp_path / ".y.h5.tmp-999999999-abcd"
    for path in (dead, alive, other):
        path.write_text("partial")
    with atomic_path(tmp_path / "x.h5") as tmp:
        tmp.write_text("done")
    assert (tmp_path / "x.h5").read_text() == "done"
    assert not dead.exists() and alive.exists() and other.exists()


def test_a_write_error_names_the_output_not_the_temporary(tmp_path, monkeypatch) -> None:
    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", denied)
    with pytest.raises(PermissionError, match=r"cannot write .*out\.json: Permission denied") as e:
        with atomic_path(tmp_path / "out.json"):
            pass
    assert ".tmp-" not in str(e.value)


# --- locks and signals ------------------------------------------------------------------------


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mmgen.atomic import folder_lock\n"
            f"with folder_lock({str(path)!r}):\n    print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match=f"another process is writing {path}"):
            with folder_lock(path):
                pass
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the killed holder's lock: the next writer proceeds, then cleans up.
    with folder_lock(path), folder_lock(path):  # re-entrant within one process
        assert atomic.lock_path(path).exists()
    assert not atomic.lock_path(path).exists()


def test_sigterm_and_sighup_become_interrupts_inside_the_block() -> None:
    before = signal.getsignal(signal.SIGTERM)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(KeyboardInterrupt, match=sig.name), signals_as_interrupts():
            os.kill(os.getpid(), sig)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("error", [TypeError("bug"), KeyError("bug"), RuntimeError("bug")])
def test_a_bug_in_a_model_constructor_keeps_its_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """Issue 18, item 6: not reported as a damaged folder (a UsageError, one line)."""
    config = small_config("cvae")
    save(tmp_path / "m", "cvae", model_kinds()["cvae"](config), config, {"source": {}})

    def broken(_config):
        raise error

    with pytest.raises(type(error), match="bug") as raised:
        checkpoint.load(tmp_path / "m", "cpu", {"cvae": broken})
    assert not isinstance(raised.value, UsageError)
