"""The ranking study's only calls into MultiVae: its models, trainer, classifier and coherence.

- ``load_split``: an export read by MultiVae's own ``MMNISTDataset`` (the first rows only);
- ``build_model``: MVAE, MMVAE or MoPoE with MultiVae's PolyMNIST convolutional architectures
  (``multivae.models.nn.mmnist``) and its benchmark's likelihood (Laplace, fixed scale);
- ``train_model``: MultiVae's ``BaseTrainer`` (which seeds Python, NumPy and torch globally
  with the training seed: MultiVae's way, not mmgen's keyed streams);
- ``train_classifier`` / ``accuracy``: ``ClassifierPolyMNIST``, the architecture of the field's
  pretrained PolyMNIST classifiers (which need a download), trained here;
- ``coherences``: ``CoherenceEvaluator`` (joint coherence from the prior; cross coherence from
  every subset of k = 1 … 4 given modalities to each missing one, averaged per k);
- ``load_model`` / ``posterior_means``: a saved fit reloaded (``AutoModel``) and its posterior
  means ``encode(..., return_mean=True)`` given all modalities and each one alone, for mmgen's
  latent-recovery probes.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmgen import rng

log = logging.getLogger(__name__)

CROSS = "cross coherence k={k}"
JOINT = "joint coherence"


def metric_names(modalities: int = 5) -> list[str]:
    """The reported metrics: joint coherence, then cross coherence given k = 1 … M − 1."""
    return [JOINT] + [CROSS.format(k=k) for k in range(1, modalities)]


def load_split(folder: Path, split: str, rows: int):
    """The first ``rows`` tuples of an export's ``split``, read by MultiVae's ``MMNISTDataset``.

    Returns a ``MultimodalBaseDataset`` (images float32 ``(N, 3, 28, 28)``, labels ``(N,)``).
    """
    from multivae.data.datasets import MMNISTDataset
    from multivae.data.datasets.base import MultimodalBaseDataset

    whole = MMNISTDataset(data_path=str(folder), split=split)
    data = {m: images[:rows] for m, images in whole.images_dict.items()}
    return MultimodalBaseDataset(data, whole.labels[:rows].long())


def build_model(name: str, settings: Mapping[str, Any], modalities: list[str]) -> nn.Module:
    """MultiVae's ``name`` (mvae, mmvae, mopoe) with its PolyMNIST conv encoders/decoders."""
    from multivae.models import MMVAE, MVAE, MMVAEConfig, MoPoE, MoPoEConfig, MVAEConfig
    from multivae.models.base import BaseAEConfig
    from multivae.models.nn.mmnist import DecoderConvMMNIST, EncoderConvMMNIST_multilatents

    latent = settings["latent_dim"]
    common = {
        "n_modalities": len(modalities),
        "input_dims": dict.fromkeys(modalities, (3, 28, 28)),
        "latent_dim": latent,
        "decoders_dist": dict.fromkeys(modalities, "laplace"),
        "decoder_dist_params": {m: {"scale": settings["scale"]} for m in modalities},
        "beta": settings["beta"],
    }
    kinds = {
        "mvae": (MVAE, MVAEConfig, {"warmup": settings["mvae_warmup"]}),
        "mmvae": (MMVAE, MMVAEConfig, {"K": settings["mmvae_k"]}),
        "mopoe": (MoPoE, MoPoEConfig, {}),
    }
    cls, config_cls, extra = kinds[name]
    architecture = BaseAEConfig(latent_dim=latent, input_dim=(3, 28, 28))
    # EncoderConvMMNIST_multilatents with style_dim 0 is MultiVae's PolyMNIST conv encoder
    # whose output keeps its batch axis for a batch of one (the _adapted one squeezes it away)
    return cls(
        config_cls(**common, **extra),
        encoders={m: EncoderConvMMNIST_multilatents(architecture) for m in modalities},
        decoders={m: DecoderConvMMNIST(architecture) for m in modalities},
    )


def train_model(name: str, settings: Mapping[str, Any], train, seed: int, device: str) -> nn.Module:
    """Train MultiVae's ``name`` on ``train`` with MultiVae's ``BaseTrainer``; the model after
    its last epoch."""
    from multivae.trainers import BaseTrainer, BaseTrainerConfig

    model = build_model(name, settings, list(train.data))
    with tempfile.TemporaryDirectory() as scratch:  # MultiVae's dated training folder
        config = BaseTrainerConfig(
            output_dir=scratch,
            num_epochs=settings["epochs"],
            per_device_train_batch_size=settings["batch_size"],
            learning_rate=settings["lr"],
            seed=seed,
            no_cuda=device == "cpu",
        )
        trainer = BaseTrainer(model, train, training_config=config)
        trainer.train()
    return trainer.model


def train_classifier(train_images: torch.Tensor, labels: torch.Tensor, settings, seed: int):
    """A ``ClassifierPolyMNIST`` trained with Adam on one modality's images.

    Initialisation, dropout and batch order from the keyed seed ``seed`` (a scoped torch
    generator state, restored afterwards).
    """
    from multivae.metrics.classifiers.mmnist import ClassifierPolyMNIST

    order_stream = rng.stream(seed, "order")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.key_entropy(seed, "init"))
        classifier = ClassifierPolyMNIST()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=settings["lr"])
        loss_fn = nn.CrossEntropyLoss()
        classifier.train()
        n, batch = len(labels), settings["batch_size"]
        for _ in range(settings["epochs"]):
            order = torch.randperm(n, generator=order_stream)
            for start in range(0, n, batch):
                index = order[start : start + batch]
                optimizer.zero_grad()
                loss = loss_fn(classifier(train_images[index]), labels[index])
                loss.backward()
                optimizer.step()
    return classifier.eval()


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The share of ``images`` that ``classifier`` labels right."""
    classifier.eval()
    predicted = torch.cat([classifier(part).argmax(1) for part in images.split(512)])
    return float((predicted == labels).double().mean())


def coherences(
    model: nn.Module,
    classifiers: dict[str, nn.Module],
    test,
    settings: Mapping[str, Any],
    seed: int,
) -> dict[str, float]:
    """MultiVae's ``CoherenceEvaluator`` on ``test``: joint and cross coherences (0 … 1).

    Its draws (prior samples, posterior samples) use torch's global generator: set from the
    keyed seed inside a scoped state, so the figures are reproducible and nothing leaks.
    """
    from multivae.metrics import CoherenceEvaluator, CoherenceEvaluatorConfig

    config = CoherenceEvaluatorConfig(
        batch_size=settings["batch_size"],
        nb_samples_for_joint=settings["joint_samples"],
        nb_samples_for_cross=settings["cross_samples"],
        num_classes=10,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.key_entropy(seed, "coherence"))
        evaluator = CoherenceEvaluator(model, classifiers, test, eval_config=config)
        # its own logger prints every subset to the console: route it through mmgen's logging
        evaluator.logger.removeHandler(evaluator.console_handler)
        evaluator.logger = log.getChild("coherence")
        metrics = evaluator.eval()
    modalities = len(classifiers)
    values = {JOINT: float(metrics["joint_coherence_prior"])}
    for k in range(1, modalities):
        values[CROSS.format(k=k)] = float(metrics[f"mean_coherence_{k}"])
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} is {value}: the coherence evaluation failed")
    return values


def load_model(folder: Path) -> nn.Module:
    """A model saved by ``train_model``'s caller (``model.save``), reloaded by MultiVae."""
    from multivae.models import AutoModel

    return AutoModel.load_from_folder(str(folder)).eval()


@torch.no_grad()
def posterior_means(model: nn.Module, data, batch: int = 512) -> dict[str, torch.Tensor]:
    """``(N, D)`` posterior means given every modality (key ``m0+m1+…``) and each alone.

    MultiVae's own ``encode(..., return_mean=True)``: its product (MVAE), mixture (MMVAE) or
    mixture of products (MoPoE) of experts, as each model defines its joint posterior.
    """
    from multivae.data.datasets.base import MultimodalBaseDataset

    from mmgen.metrics import subset_name

    modalities = list(data.data)
    subsets = {subset_name(modalities): "all", **{m: [m] for m in modalities}}
    means: dict[str, list[torch.Tensor]] = {name: [] for name in subsets}
    for start in range(0, len(data.labels), batch):
        part = MultimodalBaseDataset(
            {m: images[start : start + batch] for m, images in data.data.items()},
            data.labels[start : start + batch],
        )
        for name, given in subsets.items():
            z = model.encode(part, cond_mod=given, return_mean=True).z
            means[name].append(z.reshape(len(part.labels), -1).float())
    return {name: torch.cat(parts) for name, parts in means.items()}
