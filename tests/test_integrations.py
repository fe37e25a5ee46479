"""mmgen files in other code (docs/integrations.md): MultiVae, plain PyTorch, plain h5py.

The MultiVae tests need the optional extra ``mmgen-entangled[multivae]`` (CI installs it) and
skip, saying so, where it is absent. The documentation's code blocks are run as written, on a
tiny file in the working directory.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmgen import rng
from mmgen.objectives import bernoulli_log_likelihood, kl_standard_normal
from test_evaluate import write_mmgen_file

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
needs_multivae = pytest.mark.skipif(
    importlib.util.find_spec("multivae") is None,
    reason="MultiVae is absent: pip install 'mmgen-entangled[multivae]' (CI installs it)",
)


def code_blocks(heading: str) -> list[str]:
    """The ```python blocks of docs/integrations.md under ``## heading``."""
    sections = re.split(r"^## ", DOC.read_text(), flags=re.MULTILINE)
    section = next(s for s in sections if s.startswith(heading))
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def float32_copy(path: Path, target: Path) -> Path:
    """``path`` with its images stored as float32 grey levels (mmgen's --dtype float32)."""
    shutil.copy(path, target)
    with h5py.File(target, "r+") as handle:
        for split in ("train", "test"):
            for m in list(handle[split]["images"]):
                stored = handle[split]["images"][m][:]
                del handle[split]["images"][m]
                handle[split]["images"].create_dataset(m, data=stored.astype(np.float32) / 255)
    return target


@pytest.fixture
def in_tiny_folder(tmp_path, monkeypatch) -> Path:
    """A working directory holding ``mnist-e.h5``, as the documentation's snippets expect."""
    monkeypatch.chdir(tmp_path)
    return write_mmgen_file(tmp_path / "mnist-e.h5", "entangled")


# ----- plain PyTorch and h5py (no extra needed) -------------------------------------------------
def test_documented_pytorch_and_h5py_snippets_read_the_file(in_tiny_folder) -> None:
    with h5py.File(in_tiny_folder) as handle:
        stored = handle["train"]["images"]["fashion"][:]
        true_z = handle["train"]["z"][:]
    (torch_block,) = code_blocks("Plain PyTorch")
    names: dict = {}
    exec(torch_block, names)
    assert names["images"]["mnist"].shape == (40, 1, 28, 28)  # one batch of the 40 tuples
    np.testing.assert_allclose(names["images"]["fashion"].sum(), stored.sum() / 255.0, rtol=1e-5)
    np.testing.assert_array_equal(np.sort(names["z"].numpy(), 0), np.sort(true_z, 0))
    (h5py_block,) = code_blocks("Plain h5py")
    names = {}
    exec(h5py_block, names)
    np.testing.assert_array_equal(names["images"]["fashion"], stored / 255.0)
    np.testing.assert_array_equal(names["z"], true_z)


# ----- MultiVae ---------------------------------------------------------------------------------
@needs_multivae
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_multivae_dataset_holds_float_images_of_the_declared_shape(tmp_path, dtype) -> None:
    from mmgen.integrations.multivae import multivae_dataset

    path = write_mmgen_file(tmp_path / "mnist-e.h5", "entangled")
    with h5py.File(path) as handle:
        stored = {m: handle["test"]["images"][m][:] for m in ("mnist", "fashion")}
        labels, z = handle["test"]["labels"][:], handle["test"]["z"][:]
    if dtype == "float32":
        path = float32_copy(path, tmp_path / "float.h5")
    dataset = multivae_dataset(path, "test")
    assert dataset.modalities == ["mnist", "fashion"] and len(dataset) == len(labels)
    for m, images in stored.items():
        assert dataset.data[m].dtype == torch.float32
        assert dataset.data[m].shape == (len(labels), 1, 28, 28)
        np.testing.assert_allclose(dataset.data[m][:, 0].numpy(), images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(dataset.labels.numpy(), labels)
    np.testing.assert_array_equal(dataset.z.numpy(), z)
    item = dataset[3]
    assert int(item["labels"]) == labels[3] and torch.equal(item["z"], torch.from_numpy(z[3]))
    naive = multivae_dataset(write_mmgen_file(tmp_path / "naive.h5", "naive"), "train", limit=5)
    assert naive.z is None and "z" not in naive[0] and len(naive) == 5


@needs_multivae
def test_grey_level_likelihood_is_mmgens_and_refuses_a_broadcast() -> None:
    from mmgen.integrations.multivae import grey_level_bernoulli_log_prob

    generator = rng.stream(0, "integrations")
    logits = torch.randn(4, 1, 28, 28, generator=generator)
    grey = torch.rand(4, 1, 28, 28, generator=generator)
    per_pixel = grey_level_bernoulli_log_prob(logits, grey)
    torch.testing.assert_close(per_pixel.flatten(1).sum(1), bernoulli_log_likelihood(logits, grey))
    with pytest.raises(ValueError, match=r"differ in shape.*\(N, C, H, W\)"):
        grey_level_bernoulli_log_prob(logits, grey[:, 0])  # (B, 28, 28): the silent trap


@needs_multivae
def test_multivae_jmvae_loss_is_mmgens_per_example_elbo(tmp_path) -> None:
    """MultiVae's JMVAE ``elbo`` on our dataset = the batch mean of −ELBO_M(M) by mmgen.

    The joint encoder's variance is pinned near zero so that MultiVae's own (global-stream)
    noise does not matter: z = μ. A batch-size scaling, probabilities read as logits, or a
    wrong likelihood changes the figure by far more than the tolerance.
    """
    from multivae.models import JMVAE, JMVAEConfig

    from mmgen.integrations.multivae import (
        logit_decoders,
        model_settings,
        multivae_dataset,
        use_grey_level_bernoulli,
    )

    train = multivae_dataset(write_mmgen_file(tmp_path / "mnist-e.h5"), "train")
    config = JMVAEConfig(**model_settings(train, latent_dim=2, beta=2.5))
    model = use_grey_level_bernoulli(JMVAE(config, decoders=logit_decoders(train, 2)))
    with torch.no_grad():
        model.joint_encoder.fc2.weight.zero_()
        model.joint_encoder.fc2.bias.fill_(-40.0)  # σ = e^-20: z is μ to 1e-8
    batch = train[0:8]
    output = model(batch, epoch=100)
    mu, logvar = (t.detach() for t in model.joint_encoder(batch["data"]).values())
    log_likelihood = sum(
        bernoulli_log_likelihood(model.decoders[m](mu).reconstruction, batch["data"][m])
        for m in train.modalities
    )
    expected = -(log_likelihood - 2.5 * kl_standard_normal(mu, logvar)).mean()
    torch.testing.assert_close(output.metrics["elbo"].detach(), expected, rtol=1e-5, atol=1e-3)


@needs_multivae
def test_documented_multivae_lines_train_jmvae_mvae_and_mopoe(in_tiny_folder, monkeypatch) -> None:
    """The documentation's MultiVae block, run as written: one epoch of each model."""
    from multivae.models import JMVAE, MVAE, MoPoE
    from multivae.trainers import BaseTrainer

    changed: list[bool] = []
    train = BaseTrainer.train

    def recording_train(trainer, *args, **kwargs):
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        train(trainer, *args, **kwargs)
        after = trainer.model.state_dict()
        changed.append(all(not torch.equal(before[k], after[k]) for k in before if "decoder" in k))

    monkeypatch.setattr(BaseTrainer, "train", recording_train)
    (block,) = code_blocks("MultiVae")
    exec(block, {})
    assert changed == [True, True, True]  # every decoder weight moved, in every model
    runs = sorted(Path("runs").iterdir())
    assert [r.name.split("_")[0] for r in runs] == ["JMVAE", "MVAE", "MoPoE"]
    for run, model_class in zip(runs, (JMVAE, MVAE, MoPoE), strict=True):
        trained = model_class.load_from_folder(str(run / "final_model"))
        assert isinstance(trained, model_class)
        assert all(torch.isfinite(p).all() for p in trained.parameters())
