"""Training a CVAE end to end on fake data: checkpoints, reproducibility, resuming."""

from __future__ import annotations

import json

import pytest
import torch

from mmgen.checkpoint import load_cvae, read_weights, save_checkpoint
from mmgen.cvae_training import train_cvae
from mmgen.models.cvae import CVAE, CVAEConfig
from mmgen.train import TrainConfig


def quick(**overrides) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 16, **overrides})


def test_train_writes_a_complete_checkpoint(tmp_path, fake_data_root) -> None:
    out = tmp_path / "cvae"
    checkpoint = train_cvae(out, "mnist", train_config=quick(), data_dir=fake_data_root)
    for name in (
        "config.json",
        "weights.pt",
        "history.json",
        "samples.png",
        "latent.png",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["epochs_done"] == 2
    assert config["source"]["name"] == "mnist"
    assert set(config["source"]["files"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte"}
    assert config["train"]["optimizer"] == "rmsprop"
    history = json.loads((out / "history.json").read_text())["epochs"]
    assert [record["epoch"] for record in history] == [1, 2]
    assert {"train_loss", "test_loss", "test_kl", "test_reconstruction"} <= set(history[0])
    assert checkpoint.config.num_classes == 10
    images = checkpoint.decode(torch.zeros(10, 2), torch.arange(10))
    assert images.shape == (10, 1, 28, 28)


def test_weights_load_with_weights_only(tmp_path) -> None:
    model = CVAE(CVAEConfig())
    save_checkpoint(tmp_path, model, None, {"source": {"name": "x"}}, [])
    state = torch.load(tmp_path / "weights.pt", weights_only=True)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(state["model"][name], value, rtol=0, atol=0)
    loaded = load_cvae(tmp_path)
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
    a, b, c = (read_weights(run.path)["model"] for run in runs)
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
    a, b = read_weights(straight.path)["model"], read_weights(resumed.path)["model"]
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
