"""Training a CVAE end to end on fake data: checkpoints, reproducibility, resuming."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import legacy_folders
from mmgen import cvae_training, rng
from mmgen.atomic import lock_path
from mmgen.checkpoint import load_cvae, save_checkpoint
from mmgen.cvae_training import train_cvae
from mmgen.errors import UsageError
from mmgen.kinds import load
from mmgen.models.cvae import CVAE, CVAEConfig, build_cvae
from mmgen.train import TrainConfig, make_optimizer


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 16, **overrides})


def weights(folder) -> dict[str, torch.Tensor]:
    """The state dict stored in a model folder, read with the safe loader."""
    return load(folder).model.state_dict()


def test_train_writes_a_complete_checkpoint(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    checkpoint = train_cvae(out, "mnist", train_config=quick(), data_dir=fake_data_root)
    for name in (
        "model.json",
        "weights.pt",
        "history.json",
        "samples.png",
        "latent.png",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    record = json.loads((out / "model.json").read_text())
    assert record["kind"] == "cvae" and record["config"]["num_classes"] == 10
    config = record["run"]
    assert config["epochs_done"] == 2 and config["limit"] is None and config["device"] == "cpu"
    assert config["mmgen_version"] and config["torch_version"] == torch.__version__
    assert config["source"]["name"] == "mnist"
    assert set(config["source"]["files"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"}
    assert config["train"]["optimizer"] == "rmsprop"
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [record["epoch"] for record in history] == [1, 2]
    assert {"train_loss", "test_loss", "test_kl", "test_reconstruction"} <= set(history[0])
    assert checkpoint.config.num_classes == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cvae", "data"]  # no temporaries left
    images = checkpoint.decode(torch.zeros(10, 2), torch.arange(10))
    assert images.shape == (10, 1, 28, 28)


def test_weights_load_with_weights_only(tmp_path) -> None:
    model = CVAE(CVAEConfig())
    save_checkpoint(tmp_path / "m", model, None, {"source": {"name": "x"}}, [])
    state = torch.load(tmp_path / "m" / "weights.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(state["state_dict"][name], value, rtol=0, atol=0)
    loaded = load_cvae(tmp_path / "m")
    for name, value in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, rtol=0, atol=0)
    z, labels = torch.randn(4, 2), torch.arange(4)
    torch.testing.assert_close(loaded.decode(z, labels), model.eval().decode(z, labels))


def test_same_seed_gives_identical_weights(tmp_path, fake_data_root) -> None:
    runs = [
        train_cvae(
            tmp_path / name, "fashion-mnist", train_config=quick(seed=seed), data_dir=fake_data_root
        )
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    ]
    a, b, c = (weights(run.path) for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, fake_data_root) -> None:
    straight = train_cvae(
        tmp_path / "straight", "mnist", train_config=quick(epochs=3), data_dir=fake_data_root
    )
    train_cvae(tmp_path / "resumed", "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    resumed = train_cvae(
        tmp_path / "resumed",
        "mnist",
        train_config=quick(epochs=3),
        data_dir=fake_data_root,
        resume=True,
    )
    a, b = weights(straight.path), weights(resumed.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((resumed.path / "history.json").read_text())["epochs"]
    assert [record["epoch"] for record in history] == [1, 2, 3]


def test_existing_checkpoint_is_not_overwritten(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    before = (out / "weights.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    assert (out / "weights.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"resume": True}, FileNotFoundError, "no checkpoint to resume"),
        ({"limit": 0}, ValueError, "--limit must be > 0"),
        ({"device": "tpu"}, ValueError, "unknown device"),
    ],
)
def test_bad_requests_raise_clear_errors(tmp_path, fake_data_root, kwargs, error, message):
    with pytest.raises(error, match=message):
        train_cvae(tmp_path / "x", "mnist", train_config=quick(), data_dir=fake_data_root, **kwargs)


def test_load_cvae_rejects_a_folder_without_checkpoint(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a CVAE checkpoint"):
        load_cvae(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cvae(tmp_path / "missing")
    (tmp_path / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="damaged"):
        load_cvae(tmp_path)


def test_resume_refuses_every_changed_setting_but_epochs(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    before = (out / "weights.pt").read_bytes()
    with pytest.raises(UsageError) as error:
        train_cvae(
            out,
            "fashion-mnist",
            CVAEConfig(latent_dim=8, beta=1.0),
            quick(epochs=3, lr=0.5),
            data_dir=fake_data_root,
            limit=20,
            resume=True,
        )
    message = str(error.value)
    for fragment in (
        "--source fashion-mnist (saved: mnist)",
        "--latent-dim 8 (saved: 2)",
        "--beta 1.0 (saved: 4.0)",
        "--lr 0.5 (saved: 0.001)",
        "--limit 20 (saved: None)",
    ):
        assert fragment in message, message
    assert message.count("(saved:") == 5, message  # --epochs 3 (saved: 1) is not a difference
    assert (out / "weights.pt").read_bytes() == before


def test_resume_refuses_other_source_files(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    images = fake_data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    other = tmp_path / "other"
    (other / "MNIST").mkdir(parents=True)
    (fake_data_root / "MNIST" / "raw").rename(other / "MNIST" / "raw")
    assert (other / "MNIST" / "raw" / images.name).is_file()
    legacy = other / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    from conftest import write_idx  # the labels of a different data set

    legacy.unlink()
    write_idx(
        legacy.with_suffix(""), (torch.arange(60) % 10).flip(0).numpy().astype("uint8"), gz=True
    )
    with pytest.raises(UsageError, match="files of source mnist differ"):
        train_cvae(out, "mnist", train_config=quick(epochs=2), data_dir=other, resume=True)


def test_a_first_format_checkpoint_resumes_like_an_uninterrupted_run(
    tmp_path, fake_data_root
) -> None:
    straight = train_cvae(
        tmp_path / "straight", "mnist", train_config=quick(epochs=2), data_dir=fake_data_root
    )
    one = train_cvae(
        tmp_path / "one", "mnist", train_config=quick(epochs=1), data_dir=fake_data_root
    )
    # The same epoch-1 state, saved as the first releases saved it.
    saved = load(one.path)
    optimizer = make_optimizer(saved.model.parameters(), quick())
    optimizer.load_state_dict(saved.optimizer)
    metadata = {
        key: saved.run[key] for key in ("source", "train", "limit", "device", "epochs_done")
    }
    old = legacy_folders.write_cvae(tmp_path / "old", saved.model, optimizer, metadata, one.history)
    resumed = train_cvae(
        old, "mnist", train_config=quick(epochs=2), data_dir=fake_data_root, resume=True
    )
    assert resumed.metadata["epochs_done"] == 2
    a, b = weights(straight.path), weights(resumed.path)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (old / "config.json").exists()  # rewritten in the current format


def test_an_incomplete_first_format_folder_is_not_stuck(tmp_path, fake_data_root, caplog):
    """A kill between weights.pt and config.json left weights.pt alone (first format)."""
    out = tmp_path / "cvae"
    legacy_folders.write_cvae(out, CVAE(CVAEConfig()), None, {"source": {}}, [])
    (out / "config.json").unlink()
    with pytest.raises(UsageError, match="incomplete checkpoint.*without --resume"):
        train_cvae(out, "mnist", train_config=quick(), data_dir=fake_data_root, resume=True)
    with caplog.at_level(logging.WARNING, logger="mmgen.cvae_training"):
        done = train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    assert done.metadata["epochs_done"] == 1
    assert "replacing the incomplete checkpoint" in caplog.text


def test_an_empty_folder_is_trained_into_without_a_warning(tmp_path, fake_data_root, caplog):
    """A study's job folder exists before its CVAE: nothing is replaced, nothing to warn of."""
    out = tmp_path / "job"
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="mmgen.cvae_training"):
        train_cvae(out, "mnist", train_config=quick(epochs=1), data_dir=fake_data_root)
    assert "replacing" not in caplog.text


def test_a_folder_of_other_files_is_never_replaced(tmp_path, fake_data_root) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        train_cvae(out, "mnist", train_config=quick(), data_dir=fake_data_root)
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_unwritable_out_fails_before_any_work(tmp_path, fake_data_root, monkeypatch) -> None:
    def no_data(*args, **kwargs):
        raise AssertionError("data was read before --out was checked")

    monkeypatch.setattr(cvae_training, "load_split", no_data)
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match=r"cannot write .*file/out"):
        train_cvae(tmp_path / "file" / "out", "mnist", train_config=quick())


def test_a_second_writer_fails_at_once(tmp_path, fake_data_root, monkeypatch) -> None:
    import fcntl
    import os

    out = tmp_path / "cvae"
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running train-cvae holds
    try:
        with pytest.raises(UsageError, match=f"another process is writing {out}"):
            train_cvae(out, "mnist", train_config=quick(), data_dir=fake_data_root)
    finally:
        os.close(fd)
    assert not out.exists()


@pytest.mark.slow
def test_real_mnist_slice_learns(tmp_path, real_data_dir) -> None:
    """A short run on 2,000 real MNIST digits: the test loss falls well below the start."""
    checkpoint = train_cvae(
        tmp_path / "real",
        "mnist",
        train_config=quick(epochs=2, batch_size=64),
        data_dir=real_data_dir,
        limit=2000,
    )
    history = json.loads((checkpoint.path / "history.json").read_text())["epochs"]
    # An untrained decoder scores about 543 nats per image; a learnt one far less.
    assert history[-1]["test_reconstruction"] < 230
    assert history[-1]["test_loss"] < history[0]["train_loss"]


def test_the_library_s_default_beta_is_the_command_s(tmp_path, fake_data_root) -> None:
    """One β default, 4·C·H·W/784, whether the CVAE is built, trained by the library or by
    ``mmgen train-cvae`` (issue 18, item 3): 8×8 digits get 4·64/784, not 4."""
    assert build_cvae(CVAEConfig(), rng.stream(0, "init")).config.beta == 4.0
    small = CVAEConfig(num_classes=10, image_shape=(1, 8, 8))
    assert build_cvae(small, rng.stream(0, "init")).config.beta == pytest.approx(4 * 64 / 784)
    assert CVAEConfig(beta=1.5).resolved().beta == 1.5
    library = train_cvae(tmp_path / "lib", "digits", train_config=quick(epochs=1), limit=40)
    assert library.config.beta == pytest.approx(4 * 64 / 784)
    colour = CVAEConfig(image_shape=(3, 32, 32)).resolved()
    assert colour.beta == pytest.approx(4 * 3 * 32 * 32 / 784)
