"""Warnings that save a user's week (issue #19): posterior collapse, sigmoid decoders, weights."""

from __future__ import annotations

import importlib.util
import json
import logging

import h5py
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from conftest import assert_one_line_error, make_checkpoint
from mmgen import collapse
from mmgen.checkpoint import load_cvae
from mmgen.cli import app
from mmgen.cvae_training import train_cvae
from mmgen.data import h5io
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.models.cvae import CVAEConfig
from mmgen.train import TrainConfig
from test_evaluate import write_mmgen_file

runner = CliRunner()
needs_multivae = pytest.mark.skipif(
    importlib.util.find_spec("multivae") is None,
    reason="MultiVae is absent: pip install 'mmgen-entangled[multivae]' (CI installs it)",
)


def mark_collapsed(folder, test_kl: float) -> None:
    """Give a checkpoint a history whose last test KL is ``test_kl`` (no run-record flag)."""
    (folder / "history.json").write_text(json.dumps({"epochs": [{"epoch": 1, "test_kl": test_kl}]}))


# ----- train-cvae records and warns ------------------------------------------------------------


def test_train_cvae_records_and_warns_a_collapsed_posterior(tmp_path, fake_data_root, caplog):
    caplog.set_level(logging.WARNING)
    # β = 10⁴ makes any information in z cost more than the whole reconstruction: KL → 0.
    checkpoint = train_cvae(
        tmp_path / "c",
        "mnist",
        CVAEConfig(beta=1e4),
        TrainConfig(epochs=2, batch_size=16),
        data_dir=fake_data_root,
    )
    kl = checkpoint.history[-1]["test_kl"]
    assert kl < 0.5
    assert checkpoint.metadata["collapse"] == {
        "collapsed": True,
        "test_kl": kl,
        "threshold_nats": 0.5,
    }
    assert any("posterior collapse" in r.getMessage() for r in caplog.records)


def test_collapse_record_compares_the_last_test_kl_with_half_a_nat() -> None:
    history = [{"test_kl": 0.1}, {"train_kl": 3.0}, {"test_kl": 0.49}]
    assert collapse.collapse_record(history) == {
        "collapsed": True,
        "test_kl": 0.49,
        "threshold_nats": 0.5,
    }
    assert collapse.collapse_record([{"test_kl": 0.01}, {"test_kl": 0.5}])["collapsed"] is False
    assert collapse.collapse_record([])["collapsed"] is None
    # The run record's flag wins over the history (it is what train-cvae decided).
    assert collapse.is_collapsed({"collapse": {"collapsed": False}}, [{"test_kl": 0.0}]) is False
    assert collapse.is_collapsed({}, [{"test_kl": 0.2}]) is True


# ----- generate refuses unless --allow-collapsed -----------------------------------------------


def test_generate_refuses_a_collapsed_cvae_in_one_line(tmp_path) -> None:
    a = make_checkpoint(tmp_path / "a", "mnist")
    b = make_checkpoint(tmp_path / "b", "fashion-mnist", seed=1)
    mark_collapsed(b, 0.03)
    out = tmp_path / "e.h5"
    args = ["generate", "--cvae", a, "--cvae", b, "--out", out, "--n-train", 20, "--n-test", 10]
    result = runner.invoke(app, [str(x) for x in args])
    assert_one_line_error(result, str(b.resolve()), "collapsed (test KL 0.030", "--allow-collapsed")
    assert not out.exists()
    result = runner.invoke(app, [str(x) for x in [*args, "--allow-collapsed", "--quiet"]])
    assert result.exit_code == 0, result.output
    header = h5io.read_header(out)
    assert header.config["allow_collapsed"] == [str(b.resolve())]
    # A healthy pair records no override: the file's config is as before #19.
    mark_collapsed(b, 2.0)
    generate_dataset([a, b], tmp_path / "h.h5", GenerateConfig(n_train=20, n_test=10))
    assert "allow_collapsed" not in h5io.read_header(tmp_path / "h.h5").config


def test_polymnist_refuses_a_collapsed_cvae_too(tmp_path) -> None:
    a = make_checkpoint(tmp_path / "a", "mnist")
    mark_collapsed(a, 0.0)
    args = ["polymnist", "--cvae", a, "--cvae", a, "--out", tmp_path / "p.h5"]
    assert_one_line_error(runner.invoke(app, [str(x) for x in args]), "collapsed")
    result = runner.invoke(
        app, [str(x) for x in [*args, "--allow-collapsed", "--n-train", 10, "--n-test", 10, "-q"]]
    )
    assert result.exit_code == 0, result.output
    with h5py.File(tmp_path / "p.h5") as handle:
        assert str(a.resolve()) in handle.attrs["config"]
    assert load_cvae(a).history[-1]["test_kl"] == 0.0


# ----- MultiVae helpers ------------------------------------------------------------------------


def functional_sigmoid(latent_dim: int) -> nn.Module:
    """A pythae decoder whose sigmoid is a function call, invisible in its modules."""
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder

    class FunctionalSigmoid(BaseDecoder):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(latent_dim, 784)

        def forward(self, z):
            logits = self.net(z).reshape(-1, 1, 28, 28)
            return ModelOutput(reconstruction=torch.sigmoid(logits))

    return FunctionalSigmoid()


@needs_multivae
def test_sigmoid_decoders_are_refused_logit_ones_accepted(tmp_path) -> None:
    from multivae.models import JMVAE, JMVAEConfig

    from mmgen.integrations.multivae import (
        logit_decoders,
        model_settings,
        multivae_dataset,
        use_grey_level_bernoulli,
    )

    train = multivae_dataset(write_mmgen_file(tmp_path / "e.h5"), "train")
    config = JMVAEConfig(**model_settings(train, latent_dim=2))
    with pytest.raises(ValueError, match="ends in a sigmoid.*logits"):
        use_grey_level_bernoulli(JMVAE(config))  # MultiVae's default MLP decoder
    functional = {m: functional_sigmoid(2) for m in train.modalities}
    with pytest.raises(ValueError, match=r"only values in \[0, 1\]"):
        use_grey_level_bernoulli(JMVAE(config, decoders=functional))
    model = use_grey_level_bernoulli(JMVAE(config, decoders=logit_decoders(train, 2)))
    assert model.decoders[train.modalities[0]].training  # the probe left the mode alone


@needs_multivae
def test_balance_gives_every_modality_the_largest_ones_weight(tmp_path) -> None:
    from multivae.models import MoPoE, MoPoEConfig

    from mmgen.integrations.multivae import MmgenMultiVaeDataset, model_settings

    data = {"small": torch.zeros(4, 1, 8, 8), "large": torch.zeros(4, 3, 32, 32)}
    dataset = MmgenMultiVaeDataset(data, torch.zeros(4, dtype=torch.long), None)
    plain = model_settings(dataset, latent_dim=2)
    assert "rescale_factors" not in plain and "uses_likelihood_rescaling" not in plain
    settings = model_settings(dataset, latent_dim=2, balance=True)
    assert settings["rescale_factors"] == {"small": 48.0, "large": 1.0}  # 3·32·32 / 8·8
    model = MoPoE(MoPoEConfig(**settings))
    assert model.rescale_factors == {"small": 48.0, "large": 1.0}
    assert model_settings(dataset, 2, warmup=0)["warmup"] == 0
