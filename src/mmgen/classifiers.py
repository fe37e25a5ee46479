"""Real-data image classifiers: the judges of coherence and of generated-image quality.

Coherence (Shi et al., MMVAE, §4) asks a classifier trained on the **real** source whether a
generated image shows the intended class; the classifier's own test accuracy on real data is the
ceiling any coherence figure can reach, and is reported beside every one (docs/method.md). Its
penultimate layer is also the feature space of the Fréchet distance (Heusel et al.).

One small CNN per source (two 3×3 convolutions with max-pooling, a 128-unit layer, a linear
read-out) reaches about 99 % on MNIST and about 90 % on Fashion-MNIST in a few epochs. It reads
the source's own image shape ``(C, H, W)``: the two poolings leave ``⌊H/4⌋ × ⌊W/4⌋`` (7×7 at
28×28, the network of before #10, so cached classifiers stay valid; 2×2 at 8×8; 8×8 at
32×32). Trained classifiers are cached on disk, one model folder (``mmgen.checkpoint``, kind
``"classifier"``) per source, keyed by the SHA-256 of the source's four files together with the
classifier config, so a second evaluation loads instead of training:

    <cache>/<source>-<key>/model.json   config (+ num_classes, image_shape); run record: key,
                                        source identity, test accuracy, history, device,
                                        versions
    <cache>/<source>-<key>/weights.pt   state dict (``torch.load(weights_only=True)``)

``<cache>`` is ``$XDG_CACHE_HOME/mmgen/classifiers`` (``~/.cache/mmgen/classifiers``) unless a
folder is given.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmgen import checkpoint, rng
from mmgen.checkpoint import run_record
from mmgen.config import from_dict, require_positive, to_dict
from mmgen.data.header import SourceIdentity
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, ImageShape, check_image_shape, describe
from mmgen.data.sources import SourceData, cache_dir, load_split
from mmgen.device import resolve_device
from mmgen.errors import UsageError
from mmgen.nn import build
from mmgen.resources import checkpoint_bytes, meta_model, require_output_space
from mmgen.shared import safe_name
from mmgen.train import TrainConfig, fit

log = logging.getLogger(__name__)

ARCHITECTURE_VERSION = 2  # bump when the network or its training changes: old caches go stale
WEIGHTS_FILE = checkpoint.WEIGHTS_FILE


@dataclass(frozen=True)
class ClassifierConfig:
    """Training of one real-data classifier (defaults reach ~99 % MNIST, ~90 % Fashion)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3  # Adam
    seed: int = 0  # initialisation and shuffles; part of the cache key
    channels: tuple[int, ...] = (32, 64)  # widths of the two convolutions
    feature_dim: int = 128  # penultimate layer: the Fréchet-distance feature space

    def __post_init__(self) -> None:
        require_positive("classifier epochs", self.epochs)
        require_positive("classifier batch_size", self.batch_size)
        require_positive("classifier lr", self.lr)
        require_positive("classifier feature_dim", self.feature_dim)
        if len(self.channels) != 2:
            raise UsageError(
                f"channels needs two widths (one per convolution), got {self.channels}"
            )
        for width in self.channels:
            require_positive("classifier channel width", width)


class ImageClassifier(nn.Module):
    """``C×H×W`` image → class logits; ``features`` gives the penultimate activations."""

    def __init__(
        self,
        num_classes: int,
        config: ClassifierConfig,
        image_shape: ImageShape = DEFAULT_IMAGE_SHAPE,
    ) -> None:
        super().__init__()
        self.image_shape = check_image_shape(image_shape, "the classifier's image shape")
        channels, height, width = self.image_shape
        if height < 4 or width < 4:
            raise UsageError(
                f"the classifier pools twice by 2, so images need at least 4×4 pixels; got "
                f"{describe(self.image_shape)}"
            )
        first, second = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, first, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # H → ⌊H/2⌋ (28 → 14)
            nn.Conv2d(first, second, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # → ⌊H/4⌋ (14 → 7)
            nn.Flatten(),  # (B, second · ⌊H/4⌋ · ⌊W/4⌋)
            nn.Linear(second * (height // 4) * (width // 4), config.feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(config.feature_dim, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] → penultimate features ``(B, feature_dim)``."""
        return self.body(images.reshape(-1, *self.image_shape))

    def forward(self, images: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] → logits ``(B, num_classes)``."""
        return self.head(self.features(images))

    def loss_on(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Cross-entropy and accuracy of a batch (the interface of ``mmgen.train.fit``)."""
        logits = self(batch["images"])
        return {
            "loss": F.cross_entropy(logits, batch["labels"]),
            "accuracy": (logits.argmax(1) == batch["labels"]).float().mean(),
        }


@dataclass
class TrainedClassifier:
    """A real-data classifier with its ceiling (test accuracy) and where it came from."""

    model: ImageClassifier
    source: str  # source spec, e.g. "mnist"
    class_names: tuple[str, ...]
    test_accuracy: float  # accuracy on the real test split: the ceiling of coherence figures
    info: dict[str, Any]  # the run record: key, identity, config, history, versions
    path: Path  # cache folder
    loaded: bool  # True when read from the cache, False when trained now
    classes: tuple[int, ...] | None = None  # --classes: the source classes it tells apart

    @property
    def identity(self) -> SourceIdentity:
        """The source and class selection this classifier judges."""
        return SourceIdentity(self.source, self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def classify(self, images: Tensor) -> Tensor:
        """Images ``(B, C, H, W)`` in [0, 1] → class logits ``(B, K)`` (eval mode)."""
        return self._inference_model()(images.to(self.device))

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 1000) -> Tensor:
        """Penultimate features ``(N, feature_dim)`` of ``images``, in batches."""
        model = self._inference_model()
        return torch.cat(
            [
                model.features(images[start : start + batch_size].to(self.device))
                for start in range(0, len(images), batch_size)
            ]
        )

    def _inference_model(self) -> ImageClassifier:
        """The model in eval mode with channels-last weights, converted once after training.

        oneDNN's convolutions run channels-last about 2.3× faster on a CPU (joint coherence
        classifies 10,000 decoded samples per modality and model; docs/performance.md); the
        logits agree with NCHW to float rounding (1e-7). Training keeps NCHW.
        """
        return self.model.eval().to(memory_format=torch.channels_last)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record for a report: accuracy, cache folder, source files, config."""
        record: dict[str, Any] = {"source": self.source}
        if self.classes is not None:
            record["classes"] = list(self.classes)
            record["class_names"] = list(self.class_names)
        return {
            **record,
            "test_accuracy": self.test_accuracy,
            "cache": str(self.path),
            "loaded_from_cache": self.loaded,
            "files": self.info["files"],
            "config": self.info["config"],
        }


def classifier_cache_dir(folder: Path | str | None = None) -> Path:
    """``folder`` when given, else ``$XDG_CACHE_HOME/mmgen/classifiers``."""
    return Path(folder).expanduser() if folder is not None else cache_dir() / "classifiers"


def cache_key(train: SourceData, test: SourceData, config: ClassifierConfig) -> str:
    """SHA-256 of the source files' checksums, the class selection (only when ``--classes``
    chose one: the keys of every-class caches stay as they were), the config and the
    architecture version."""
    record: dict[str, Any] = {
        "files": {**train.files, **test.files},
        "num_train": len(train.labels),
        "num_test": len(test.labels),
        "config": to_dict(config),
        "architecture": ARCHITECTURE_VERSION,
    }
    if train.classes is not None:
        record["classes"] = list(train.classes)
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def train_classifier(
    train: SourceData,
    test: SourceData,
    config: ClassifierConfig,
    device: torch.device,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> tuple[ImageClassifier, list[dict[str, float]]]:
    """Train a fresh classifier on ``train`` with Adam; evaluate on ``test`` after each epoch.

    Returns:
        The model (eval mode) and one record per epoch (``test_accuracy`` is the last ceiling).
    """
    init = rng.stream(config.seed, "init")
    model = build(lambda: ImageClassifier(train.num_classes, config, train.image_shape), init).to(
        device
    )
    train_config = TrainConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        optimizer="adam",
        seed=config.seed,
    )
    history = fit(
        model, train.as_tensors(device), test.as_tensors(device), train_config, on_step=on_step
    )
    return model.eval(), history


def load_or_train_classifier(
    source: str,
    data_dir: Path | str | None = None,
    cache: Path | str | None = None,
    config: ClassifierConfig | None = None,
    device: str | torch.device = "auto",
    on_step: Callable[[dict[str, float]], None] | None = None,
    classes: Sequence[int] | None = None,
    reserve: int = 1,
) -> TrainedClassifier:
    """The classifier of ``source``: loaded from the cache when its key matches, else trained.

    Before training, the cache is checked writable with room for ``reserve`` classifiers
    (``mmgen.resources.require_output_space``): a full or read-only cache is one line before
    the minutes of training, not after them. A complete cache may be read-only.

    Args:
        source: a source spec of ``mmgen.data.sources`` (``mnist``, ``fashion-mnist``, ``idx:DIR``).
        data_dir: where the source's files are (else the usual search order).
        cache: the cache folder (default ``classifier_cache_dir()``).
        config: training settings (part of the cache key).
        device: ``auto``, ``cpu``, ``cuda`` or a ``torch.device``.
        on_step: progress callback after every training step.
        classes: the source's class indices a dataset uses, in its label order (a header's
            ``classes``, ``--classes``): the classifier tells these apart, label k being the
            source's class ``classes[k]``. ``None``: every class.
        reserve: how many classifiers the caller may still train into the cache (the space
            checked before this one trains).

    Raises:
        FileNotFoundError: the source's files were not found (the message says where to put them).
    """
    config = config or ClassifierConfig()
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    classes = None if classes is None else tuple(int(k) for k in classes)
    train = load_split(source, "train", data_dir=data_dir, classes=classes)
    test = load_split(source, "test", data_dir=data_dir, classes=classes)
    key = cache_key(train, test, config)
    label = SourceIdentity(train.name, classes).label
    folder = classifier_cache_dir(cache) / f"{safe_name(label, 'source')}-{key[:16]}"
    loaded = _load_cached(folder, key, train.num_classes, torch_device)
    if loaded is not None:
        model, info = loaded
        log.info("loaded the %s classifier from %s", source, folder)
        return TrainedClassifier(
            model, source, train.class_names, info["test_accuracy"], info, folder, True, classes
        )

    size = checkpoint_bytes(
        meta_model(lambda: ImageClassifier(train.num_classes, config, train.image_shape))
    )
    require_output_space(
        classifier_cache_dir(cache), "--cache-dir", reserve * size, f"the {source} classifier"
    )
    log.info("training the %s classifier (%d epochs)", source, config.epochs)
    model, history = train_classifier(train, test, config, torch_device, on_step)
    info = run_record(
        torch_device,
        key=key,
        source=source,
        class_names=list(train.class_names),
        files={**train.files, **test.files},
        train=train.identity(),
        test=test.identity(),
        config=to_dict(config),
        architecture=ARCHITECTURE_VERSION,
        test_accuracy=history[-1]["test_accuracy"],
        history=history,
    )
    model_config = {
        "num_classes": train.num_classes,
        "image_shape": list(train.image_shape),
        **to_dict(config),
    }
    checkpoint.save(folder, "classifier", model, model_config, info)
    log.info(
        "%s classifier: test accuracy %.4f, cached in %s", source, info["test_accuracy"], folder
    )
    return TrainedClassifier(
        model, source, train.class_names, info["test_accuracy"], info, folder, False, classes
    )


def classifier_from_config(config: dict[str, Any]) -> ImageClassifier:
    """A fresh classifier from its model-folder config: ``num_classes``, ``image_shape`` (absent
    before #10: 1×28×28) and the fields of ``ClassifierConfig``."""
    fields = dict(config)
    if "num_classes" not in fields:
        raise UsageError("the classifier's config lacks num_classes")
    num_classes = fields.pop("num_classes")
    image_shape = fields.pop("image_shape", DEFAULT_IMAGE_SHAPE)
    return ImageClassifier(num_classes, from_dict(ClassifierConfig, fields), image_shape)


def _load_cached(
    folder: Path, key: str, num_classes: int, device: torch.device
) -> tuple[ImageClassifier, dict[str, Any]] | None:
    """The cached model and its run record when ``folder`` holds a complete, matching entry."""
    if not checkpoint.holds_model(folder):
        return None
    try:
        saved = checkpoint.load(
            folder, device, kinds={"classifier": classifier_from_config}, what="a classifier"
        )
    except (OSError, ValueError) as error:  # a damaged entry is rebuilt, not fatal
        log.warning("ignoring the damaged classifier cache %s (%s); retraining", folder, error)
        return None
    if saved.run.get("key") != key or saved.config.get("num_classes") != num_classes:
        log.warning("classifier cache %s does not match its key; retraining", folder)
        return None
    return saved.model, saved.run  # type: ignore[return-value]
