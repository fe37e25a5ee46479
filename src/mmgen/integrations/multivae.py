"""An mmgen file in MultiVae (Senellart et al., the reference multimodal-VAE library).

Needs the optional extra: ``pip install 'mmgen-entangled[multivae]'``. Three traps a new
user meets when handing an mmgen file to MultiVae, and what this module does about each:

1. **Image shape.** mmgen stores grey images ``(N, 28, 28)``; a MultiVae model declared with
   ``input_dims = (1, 28, 28)`` decodes ``(B, 1, 28, 28)``, and its likelihood silently
   broadcasts ``(B, 1, 28, 28)`` against ``(B, 28, 28)`` into ``(B, B, 28, 28)``: the loss grows
   with the batch size and raises no error. ``multivae_dataset`` returns ``(N, C, H, W)`` for
   every modality, at its own shape (issue #10), and ``model_settings`` declares those shapes.
2. **Probabilities for logits.** MultiVae's default MLP decoder ends in a sigmoid, while its
   ``"bernoulli"`` likelihood reads the decoder output as logits; and PyTorch's ``Bernoulli``
   refuses grey-level targets. ``logit_decoders`` end without a sigmoid, and
   ``use_grey_level_bernoulli`` scores grey levels ``x ∈ [0, 1]`` as mmgen does (docs/method.md,
   "Notation"): ``log p(x|z) = Σ_pixels [x log σ(l) + (1 − x) log(1 − σ(l))]``.
3. **uint8.** mmgen may store grey levels as uint8 ×255; MultiVae needs floats in [0, 1].
   ``multivae_dataset`` converts (``mmgen.data.h5io.to_unit_float``).
4. **A sigmoid decoder of one's own.** ``use_grey_level_bernoulli`` refuses a model whose
   decoder ends in a sigmoid (MultiVae's ``bernoulli`` reads the output as logits:
   ``multivae.models.base.base_utils`` scores ``Bernoulli(logits=recon)``), found by its last
   module or by outputs that all lie in [0, 1] on a probe of codes.
5. **Warm-up.** JMVAE and MVAE anneal the KL weight linearly over ``warmup`` epochs (MultiVae's
   default 10: JMVAE uses ``epoch / warmup``, so a 1-epoch run trains at weight 0.1); pass
   ``warmup=0`` to ``model_settings`` (or the config) for the full ELBO from the start.
6. **Mixed shapes.** MultiVae sums the log-likelihood over pixels, so a modality weighs in
   proportion to its C·H·W: 3×32×32 outweighs 8×8 48:1. ``model_settings(balance=True)``
   rescales every modality to the largest (MultiVae's ``uses_likelihood_rescaling``, factors
   ``max_m |x_m| / |x_m|``, stated explicitly as ``rescale_factors``).

Example (MultiVae's JMVAE on MNIST-E; ``MVAE`` and ``MoPoE`` take the same arguments)::

    from multivae.models import JMVAE, JMVAEConfig
    from multivae.trainers import BaseTrainer, BaseTrainerConfig
    from mmgen.integrations.multivae import (
        logit_decoders, model_settings, multivae_dataset, use_grey_level_bernoulli)

    train = multivae_dataset("mnist-e.h5", "train")
    config = JMVAEConfig(**model_settings(train, latent_dim=2))
    model = use_grey_level_bernoulli(JMVAE(config, decoders=logit_decoders(train, 2)))
    BaseTrainer(model, train, training_config=BaseTrainerConfig(num_epochs=10)).train()
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgen.data.h5io import read_split

try:
    from multivae.data.datasets.base import DatasetOutput, MultimodalBaseDataset
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn.base_architectures import BaseDecoder
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "mmgen.integrations.multivae needs MultiVae: pip install 'mmgen-entangled[multivae]'"
    ) from error

IMAGE_SHAPE = (1, 28, 28)  # default channels × height × width, as MultiVae's input_dims

__all__ = [
    "MmgenMultiVaeDataset",
    "LogitDecoder",
    "balance_factors",
    "grey_level_bernoulli_log_prob",
    "logit_decoders",
    "model_settings",
    "multivae_dataset",
    "refuse_sigmoid",
    "use_grey_level_bernoulli",
]


class MmgenMultiVaeDataset(MultimodalBaseDataset):
    """A ``MultimodalBaseDataset`` of an mmgen split that also keeps the true codes ``z``.

    ``data``: modality → float32 ``(N, C, H, W)`` levels in [0, 1]; ``labels``: ``(N,)``
    int64 classes; ``z``: ``(N, d)`` float32 true latent codes, or ``None`` (a naive pairing
    stores none). Items are MultiVae's ``DatasetOutput(data=..., labels=...)`` plus ``z`` where
    the file has it (MultiVae's models read ``data`` and ignore the rest).
    """

    def __init__(self, data: dict[str, Tensor], labels: Tensor, z: Tensor | None) -> None:
        super().__init__(data, labels)
        self.z = z

    @property
    def modalities(self) -> list[str]:
        """The modality names, in the file's order."""
        return list(self.data)

    @property
    def image_shapes(self) -> dict[str, tuple[int, int, int]]:
        """Modality → ``(C, H, W)``: MultiVae's ``input_dims``."""
        return {m: tuple(images.shape[1:]) for m, images in self.data.items()}

    def __getitem__(self, index: Any) -> DatasetOutput:
        item = super().__getitem__(index)
        if self.z is not None:
            item["z"] = self.z[index]
        return item


def multivae_dataset(
    path: Path | str, split: str = "train", limit: int | None = None
) -> MmgenMultiVaeDataset:
    """One split of an mmgen file as a MultiVae dataset: float images ``(N, C, H, W)``.

    Args:
        path: an HDF5 file written by ``mmgen generate`` or ``mmgen shuffle``.
        split: ``"train"`` or ``"test"``.
        limit: read only the first ``limit`` tuples.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        mmgen.errors.UsageError: not an mmgen file, or an unknown split.
    """
    split_data = read_split(path, split, limit)
    data = {
        m: torch.from_numpy(split_data.images_float(m))  # (N, C, H, W), C = 1 for grey files
        for m in split_data.images
    }
    z = None if split_data.z is None else torch.from_numpy(np.asarray(split_data.z, np.float32))
    return MmgenMultiVaeDataset(data, torch.from_numpy(split_data.labels), z)


def balance_factors(dataset: MmgenMultiVaeDataset) -> dict[str, float]:
    """Per-modality likelihood weights that give every modality the largest one's pixel count:
    ``max_m |x_m| / |x_m|`` (MultiVae's default ``rescale_factors``), e.g. 48 for 8×8 beside
    3×32×32."""
    sizes = {m: int(np.prod(shape)) for m, shape in dataset.image_shapes.items()}
    largest = max(sizes.values())
    return {m: largest / size for m, size in sizes.items()}


def model_settings(
    dataset: MmgenMultiVaeDataset, latent_dim: int, balance: bool = False, **extra: Any
) -> dict[str, Any]:
    """Keyword arguments of any MultiVae model config for ``dataset``'s modalities.

    ``n_modalities``, ``input_dims`` (every modality's ``(C, H, W)``), ``latent_dim`` and
    ``decoders_dist = "bernoulli"`` (the likelihood's family; ``use_grey_level_bernoulli`` then
    makes it accept grey levels), merged with ``extra`` (e.g. ``beta``, ``alpha``,
    ``warmup=0``: JMVAE and MVAE otherwise anneal the KL weight over 10 epochs).

    Args:
        balance: weight every modality's log-likelihood by ``balance_factors`` (MultiVae's
            ``uses_likelihood_rescaling``); without it a modality weighs its pixel count.
    """
    modalities = dataset.modalities
    settings: dict[str, Any] = {
        "n_modalities": len(modalities),
        "input_dims": dataset.image_shapes,
        "latent_dim": latent_dim,
        "decoders_dist": dict.fromkeys(modalities, "bernoulli"),
    }
    if balance:
        settings["uses_likelihood_rescaling"] = True
        settings["rescale_factors"] = balance_factors(dataset)
    return {**settings, **extra}


class LogitDecoder(BaseDecoder):
    """An MLP decoder ``z → logits (…, C, H, W)`` for MultiVae, with no final sigmoid.

    MultiVae's default ``Decoder_AE_MLP`` (one hidden layer of 512, ReLU) without its sigmoid,
    so that its output is what the Bernoulli likelihood expects: logits.
    """

    def __init__(
        self,
        latent_dim: int,
        hidden_widths: Sequence[int] = (512,),
        image_shape: tuple[int, int, int] = IMAGE_SHAPE,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        sizes = [latent_dim, *hidden_widths]
        layers: list[nn.Module] = []
        for width_in, width_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], int(np.prod(self.image_shape))))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> ModelOutput:
        logits = self.net(z)
        return ModelOutput(reconstruction=logits.reshape(*z.shape[:-1], *self.image_shape))


def logit_decoders(
    dataset: MmgenMultiVaeDataset, latent_dim: int, hidden_widths: Sequence[int] = (512,)
) -> dict[str, LogitDecoder]:
    """One ``LogitDecoder`` per modality of ``dataset``, for a MultiVae model's ``decoders``."""
    return {
        m: LogitDecoder(latent_dim, hidden_widths, shape)
        for m, shape in dataset.image_shapes.items()
    }


def grey_level_bernoulli_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel ``x log σ(l) + (1 − x) log(1 − σ(l))`` for grey levels ``x`` in [0, 1].

    mmgen's likelihood (``mmgen.objectives.bernoulli_log_likelihood`` before its sum over
    pixels), in MultiVae's ``recon_log_probs`` form: element-wise, MultiVae sums. Unlike
    ``torch.distributions.Bernoulli`` it accepts non-binary targets. The shapes must match:
    a broadcast here is the silent batch-size scaling this module exists to prevent.
    """
    if logits.shape != target.shape:
        raise ValueError(
            f"decoder output {tuple(logits.shape)} and images {tuple(target.shape)} differ in "
            "shape; build the dataset with mmgen.integrations.multivae.multivae_dataset, "
            "which gives images (N, C, H, W)"
        )
    return -F.binary_cross_entropy_with_logits(logits, target, reduction="none")


PROBE_CODES = 64  # codes ~ N(0, I) a decoder is probed with (a fixed, private stream)
SIGMOIDS = (nn.Sigmoid, nn.Hardsigmoid)


def refuse_sigmoid(decoder: nn.Module, modality: str, latent_dim: int) -> None:
    """Raise ``ValueError`` if ``decoder`` outputs probabilities instead of logits.

    Two signs: its last module is a sigmoid (MultiVae's default ``Decoder_AE_MLP``), or every
    output on ``PROBE_CODES`` codes lies in [0, 1] (a ``torch.sigmoid`` in ``forward``); logits
    of images with dark backgrounds are far below 0.
    """
    leaves = [m for m in decoder.modules() if not list(m.children())]
    fix = (
        "MultiVae's bernoulli likelihood reads decoder outputs as logits; drop the final "
        "sigmoid or use mmgen.integrations.multivae.logit_decoders"
    )
    if leaves and isinstance(leaves[-1], SIGMOIDS):
        raise ValueError(f"the decoder of {modality!r} ends in a sigmoid: {fix}")
    generator = torch.Generator().manual_seed(0)  # a probe, not data: no recorded seed needed
    parameter = next(decoder.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    z = torch.randn(PROBE_CODES, latent_dim, generator=generator).to(device)
    was_training = decoder.training
    decoder.eval()
    try:
        with torch.no_grad():
            output = decoder(z).reconstruction
    finally:
        decoder.train(was_training)
    if output.min() >= 0 and output.max() <= 1:
        raise ValueError(
            f"the decoder of {modality!r} outputs only values in [0, 1] (probabilities, as after "
            f"a sigmoid): {fix}"
        )


def use_grey_level_bernoulli(model: nn.Module) -> nn.Module:
    """Make a MultiVae model score every modality with ``grey_level_bernoulli_log_prob``.

    MultiVae builds ``model.recon_log_probs`` (modality → element-wise log-likelihood) from the
    config's ``decoders_dist`` names and has no name for a grey-level Bernoulli, so this
    replaces the entries. Call it again after ``load_from_folder``, which rebuilds them from
    the names. Returns ``model``.

    Raises:
        ValueError: a decoder ends in a sigmoid (``refuse_sigmoid``).
    """
    log_probs = getattr(model, "recon_log_probs", None)
    if not isinstance(log_probs, dict):
        raise TypeError(
            f"{type(model).__name__} has no recon_log_probs dict; pass a MultiVae model"
        )
    for modality, decoder in getattr(model, "decoders", {}).items():
        refuse_sigmoid(decoder, modality, model.latent_dim)
    for modality in list(log_probs):
        log_probs[modality] = grey_level_bernoulli_log_prob
    return model
