"""``mmgen polymnist``: PolyMNIST-E, PolyMNIST's per-modality nuisance on entangled digits.

PolyMNIST (Sutter et al., *Generalized multimodal ELBO*, ICLR 2021) has five modalities; in
each, an MNIST digit is composited on a random 28×28 crop of that modality's own background
photo (RGB 3×28×28): the digit is binarised at 0.5 and the background's colours are inverted
where the digit is,

    x_m[:, i, j] = 255 − b_m[:, i, j]   where d[i, j] = 1,      x_m[:, i, j] = b_m[:, i, j] else,

with ``b_m`` the crop of modality m's background. The modalities share only the class: each
holds a different MNIST image of it. **PolyMNIST-E** keeps this observation model but draws the
digit of every modality from a CVAE at one shared code (``mmgen generate``, Korthals et al.):
``d_m = 1[σ(decoder_m(z, c)) > 0.5]`` (``--decode mean``) or ``d_m ~ Bernoulli(σ(decoder_m(z,
c)))`` (``--decode sample``), so the modalities vary together through ``z`` while the crops are
independent nuisance. Several modalities may share one CVAE (it is then decoded once per tuple).

Per tuple and modality the nuisance ``(image, top, left)`` is stored in ``nuisance/<m>`` beside
``z``: which of the modality's background images, and the crop's top-left corner. It is drawn
from its own keyed stream ``(seed, split, block, "crop", m)``, so it depends neither on the
batch size nor on the codes. ``--naive`` writes the PolyMNIST-style pairing instead: real images
of the same class from a source (MNIST), one per modality, composited the same way.

Where the ground truth is defined (docs/polymnist.md): the composite is a known deterministic
function of the binary digit and the crop, and it is invertible per pixel, since a uint8 level
v never equals 255 − v: ``d = 1[x_m ≠ b_m]``. With ``--decode sample`` therefore
``p(x_m | z, c, crop) = Π_pixels σ(l)^d (1 − σ(l))^(1−d)``, the CVAE's Bernoulli likelihood of
the recovered digit. With ``--decode mean`` x_m is a deterministic function of (z, c, crop):
a point mass, no density, and the decoder's grey levels are not recoverable (thresholded).

Over 450 lines on purpose: the backgrounds, the keyed crops, the composite and its inverse, and
the two writers (entangled and naive) share one per-tuple nuisance layout that the tests pin byte
for byte; apart, each piece would need the others' row and stream rules.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from mmgen import generate as generating
from mmgen import rng
from mmgen.checkpoint import CVAECheckpoint, load_cvae
from mmgen.config import to_dict
from mmgen.data import h5io, names
from mmgen.data.header import DatasetHeader, ModalitySource, absolute
from mmgen.data.sources import load_split
from mmgen.device import environment, resolve_device
from mmgen.errors import UsageError
from mmgen.pair import pair_indices

log = logging.getLogger(__name__)

COMPOSITE = "invert"  # PolyMNIST: the background's colours inverted where the digit is
THRESHOLD = 0.5  # a decoded mean (or a real digit's level / 255) above it is digit
PHOTO_LEVEL = 1  # gzip level of the composites: photo crops barely compress at any level
NUISANCE_FIELDS = ("image", "top", "left")  # the columns of nuisance/<m>
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SKLEARN_IMAGES = ("china.jpg", "flower.jpg")  # scikit-learn's load_sample_images()
DEFAULT_BACKGROUNDS = tuple(f"sklearn:{name}" for name in SKLEARN_IMAGES)
SPEC_HELP = (
    "sklearn:china.jpg, sklearn:flower.jpg (shipped with scikit-learn), skimage:NAME "
    "(scikit-image's bundled images, if installed), an image file, or a folder of images "
    "(each tuple draws one)"
)


# --- Backgrounds -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Background:
    """One background photo: RGB levels ``(H, W, 3)`` uint8 and what identifies it."""

    name: str  # file name, or skimage:NAME
    pixels: np.ndarray  # (H, W, 3) uint8
    sha256: str  # of the file's bytes (skimage: of the decoded pixels)

    def record(self) -> dict[str, Any]:
        height, width = self.pixels.shape[:2]
        return {"name": self.name, "sha256": self.sha256, "height": height, "width": width}


def _rgb(pixels: np.ndarray, what: str) -> np.ndarray:
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise UsageError(f"background {what} is not an RGB or grey image (shape {pixels.shape})")
    if pixels.dtype != np.uint8:
        if pixels.dtype.kind == "f":
            pixels = np.round(np.clip(pixels, 0, 1) * 255)
        pixels = pixels.astype(np.uint8)
    return np.ascontiguousarray(pixels[..., :3])


def _read_file(path: Path) -> Background:
    from PIL import Image, UnidentifiedImageError

    data = path.read_bytes()
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise UsageError(f"--background {path} is not a readable image ({error})") from None
    return Background(path.name, _rgb(pixels, str(path)), hashlib.sha256(data).hexdigest())


def sklearn_images(spec: str) -> Path:
    """scikit-learn's folder of sample images, found without importing scikit-learn.

    Why: ``importlib.resources.files("sklearn.datasets.images")`` imports ``sklearn.datasets``
    and SciPy with it, 2 s of a 5 s ``mmgen polymnist`` run; ``find_spec`` of the top-level
    package only locates it.
    """
    found = importlib.util.find_spec("sklearn")
    if found is None or not found.submodule_search_locations:
        raise UsageError(f"--background {spec} needs scikit-learn installed")
    return Path(found.submodule_search_locations[0]) / "datasets" / "images"


def load_backgrounds(spec: str) -> list[Background]:
    """The background images named by ``spec`` (see ``SPEC_HELP``), in a fixed order.

    Raises:
        UsageError: an unknown package image, a missing path, a folder without images.
    """
    if spec.startswith("sklearn:"):
        name = spec.removeprefix("sklearn:")
        name = name if name.endswith(".jpg") else f"{name}.jpg"
        if name not in SKLEARN_IMAGES:
            raise UsageError(
                f"unknown --background {spec}; scikit-learn ships "
                f"{', '.join(f'sklearn:{n}' for n in SKLEARN_IMAGES)}"
            )
        return [_read_file(sklearn_images(spec) / name)]
    if spec.startswith("skimage:"):
        name = spec.removeprefix("skimage:")
        try:
            data = importlib.import_module("skimage.data")
        except ModuleNotFoundError:
            raise UsageError(
                f"--background {spec} needs scikit-image (pip install scikit-image); or use "
                f"{' or '.join(DEFAULT_BACKGROUNDS)}"
            ) from None
        loader = getattr(data, name, None)
        if not callable(loader) or name.startswith("_"):
            raise UsageError(f"unknown --background {spec}: skimage.data has no image {name!r}")
        pixels = _rgb(loader(), spec)
        return [Background(spec, pixels, hashlib.sha256(pixels.tobytes()).hexdigest())]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UsageError(f"--background {spec} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return [_read_file(p) for p in files]
    if path.is_file():
        return [_read_file(path)]
    raise UsageError(f"--background {spec} is neither a package image ({SPEC_HELP}) nor a path")


def check_backgrounds(
    backgrounds: Sequence[Background], height: int, width: int, spec: str
) -> None:
    """Refuse a background smaller than the digit images it must hold."""
    for image in backgrounds:
        h, w = image.pixels.shape[:2]
        if h < height or w < width:
            raise UsageError(
                f"--background {spec}: {image.name} is {h}×{w}, smaller than the {height}×"
                f"{width} crops the digits need"
            )


def crop(backgrounds: Sequence[Background], nuisance: np.ndarray, height: int, width: int):
    """The crops ``(N, 3, height, width)`` uint8 that ``nuisance`` rows ``(image, top, left)`` name.

    The rows of one image are cut with a strided window view: no copy of the photo, one gather.
    """
    out = np.empty((len(nuisance), 3, height, width), dtype=np.uint8)
    for index, image in enumerate(backgrounds):
        rows = np.flatnonzero(nuisance[:, 0] == index)
        if len(rows) == 0:
            continue
        # (H − h + 1, W − w + 1, 3, h, w): window [top, left] is the crop at that corner.
        windows = sliding_window_view(image.pixels, (height, width), axis=(0, 1))
        out[rows] = windows[nuisance[rows, 1], nuisance[rows, 2]]
    return out


def composite(digits: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """PolyMNIST's composite: ``255 − crop`` where the binary digit is on, ``crop`` elsewhere.

    Args:
        digits: ``(N, H, W)`` bool, the binarised digits.
        crops: ``(N, 3, H, W)`` uint8 background crops.

    Returns:
        ``(N, 3, H, W)`` uint8.
    """
    # 255 − v is v XOR 255 on uint8: one bitwise pass (10× np.where with a broadcast mask).
    return np.bitwise_xor(crops, digits[:, None].astype(np.uint8) * np.uint8(255))


def recover_digits(images: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """The inverse of :func:`composite`: ``d = 1[x ≠ crop]`` in every channel (v ≠ 255 − v)."""
    return (images != crops).all(axis=1)


def draw_nuisance(
    backgrounds: Sequence[Background],
    height: int,
    width: int,
    count: int,
    generator: np.random.Generator,
) -> np.ndarray:
    """``count`` rows ``(image, top, left)``: a uniform image, then a uniform crop inside it."""
    sizes = np.array([b.pixels.shape[:2] for b in backgrounds], dtype=np.int64)  # (K, 2)
    image = generator.integers(0, len(backgrounds), count)
    top = generator.integers(0, sizes[image, 0] - height + 1)
    left = generator.integers(0, sizes[image, 1] - width + 1)
    return np.stack([image, top, left], axis=1).astype(np.int64)


# --- Configuration ---------------------------------------------------------------------------


def resolve_specs(specs: Sequence[str], count: int) -> list[str]:
    """One background spec per modality: as given (once each), or the package photos cycled."""
    if not specs:
        return [DEFAULT_BACKGROUNDS[k % len(DEFAULT_BACKGROUNDS)] for k in range(count)]
    if len(specs) == 1 and count > 1 and Path(specs[0]).is_dir():
        return list(specs) * count  # one folder for every modality; crops still differ
    if len(specs) != count:
        raise UsageError(
            f"{len(specs)} --background for {count} modalities; give one per modality, one "
            "folder for all, or none (the scikit-learn photos, alternating)"
        )
    return list(specs)


def nuisance_attr(specs: Sequence[str], modalities: Sequence[str], backgrounds) -> dict:
    """The header's ``nuisance`` attribute (docs/format.md)."""
    return {
        "kind": "background-crop",
        "composite": COMPOSITE,
        "threshold": THRESHOLD,
        "fields": list(NUISANCE_FIELDS),
        "backgrounds": {
            m: {"spec": spec, "images": [b.record() for b in images]}
            for m, spec, images in zip(modalities, specs, backgrounds, strict=True)
        },
    }


def nuisance_rows(
    seed: int,
    split: str,
    per_block: int,
    start: int,
    stop: int,
    modality: int,
    backgrounds: Sequence[Background],
    height: int,
    width: int,
) -> np.ndarray:
    """Nuisance of tuples ``start:stop``, cut from blocks of ``per_block`` tuples keyed
    ``(seed, split, block, "crop", modality)``: the same rows whatever the batch size."""
    first, last = start // per_block, (stop - 1) // per_block
    parts = [
        draw_nuisance(
            backgrounds,
            height,
            width,
            per_block,
            rng.numpy_stream(seed, generating.SPLIT_KEYS[split], block, "crop", modality),
        )
        for block in range(first, last + 1)
    ]
    rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return rows[start - first * per_block : stop - first * per_block]


# --- PolyMNIST-E -----------------------------------------------------------------------------


def default_names(count: int) -> list[str]:
    """PolyMNIST's modality names ``m0 … m{k−1}`` (MoPoE's folders ``m{k}``)."""
    return [f"m{k}" for k in range(count)]


def _modality_names(modality_names: Sequence[str] | None, count: int, flag: str) -> list[str]:
    if modality_names is None:
        return default_names(count)
    names.check_modality_names(list(modality_names))
    if len(modality_names) != count:
        raise UsageError(
            f"{len(modality_names)} modality names for {count} modalities; give one --modality "
            f"per {flag}, or none (m0, m1, ...)"
        )
    return list(modality_names)


@torch.inference_mode()
def digits_of(
    config: generating.GenerateConfig,
    models: dict[str, Any],
    cvae_of: Sequence[str],
    drawn: dict[str, torch.Tensor],
    device: torch.device,
) -> list[np.ndarray]:
    """The binary digit ``(T, H, W)`` of every modality: each distinct CVAE decoded once.

    ``mean``: ``σ(l) > THRESHOLD``; ``sample``: the modality's own uniform noise ``< σ(l)``.
    """
    z, labels = drawn["z"].to(device), drawn["labels"].to(device)
    means: dict[str, torch.Tensor] = {}
    for key in dict.fromkeys(cvae_of):
        parts = [
            models[key].decode(
                z[s : s + generating.DECODE_ROWS], labels[s : s + generating.DECODE_ROWS]
            )
            for s in range(0, len(labels), generating.DECODE_ROWS)
        ]
        means[key] = torch.cat(parts)[:, 0]  # (T, H, W): grey digits
    digits = []
    for index, key in enumerate(cvae_of):
        if config.decode == "sample":
            on = drawn[f"noise/{index}"][:, 0].to(device) < means[key]
        else:
            on = means[key] > THRESHOLD
        digits.append(on.cpu().numpy())
    return digits


def generate_polymnist(
    checkpoint_folders: Sequence[Path | str],
    out: Path | str,
    config: generating.GenerateConfig | None = None,
    backgrounds: Sequence[str] = (),
    device: str = "auto",
    batch_size: int = generating.DEFAULT_BATCH_SIZE,
    modality_names: Sequence[str] | None = None,
    overwrite: bool = False,
    allow_collapsed: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Write PolyMNIST-E: one shared ``(z, c)`` per tuple, each modality's decoded digit on a
    seeded crop of its own background (module docstring).

    Args:
        checkpoint_folders: one CVAE folder per modality (repeat a folder to share a CVAE);
            the CVAEs decode grey images and agree on latent size and classes.
        out: the HDF5 file; it appears only when complete.
        config: codes, labels, decoding and seed as for ``mmgen generate`` (``dtype`` must be
            ``uint8``: the composite is defined on uint8 levels).
        backgrounds: one spec per modality (``SPEC_HELP``), one folder for all, or none.
        device, batch_size, modality_names, overwrite, on_progress: as ``generate_dataset``.
        allow_collapsed: decode a CVAE whose posterior collapsed (``generate``'s override).
    """
    config = config or generating.GenerateConfig()
    if config.dtype != "uint8":
        raise UsageError("PolyMNIST-E stores uint8 composites; --dtype float32 is not offered")
    h5io.check_output(out, overwrite)
    count = len(checkpoint_folders)
    if count < 2:
        raise UsageError(f"PolyMNIST-E needs at least two --cvae (one per modality), got {count}")
    modalities = _modality_names(modality_names, count, "--cvae")
    specs = resolve_specs(list(backgrounds), count)
    torch_device = resolve_device(device)
    keys = [absolute(folder) for folder in checkpoint_folders]
    loaded: dict[str, CVAECheckpoint] = {}
    for key, folder in zip(keys, checkpoint_folders, strict=True):
        if key not in loaded:
            loaded[key] = load_cvae(folder, torch_device)
    checkpoints = [loaded[key] for key in keys]
    generating.check_compatible(checkpoints)
    generating.refuse_collapsed(checkpoints, allow_collapsed)
    channels, height, width = checkpoints[0].image_shape
    for checkpoint in checkpoints:
        if checkpoint.image_shape[0] != 1 or checkpoint.image_shape != (channels, height, width):
            raise UsageError(
                f"{checkpoint.path} decodes {checkpoint.image_shape} images; PolyMNIST-E needs "
                "grey digits of one size (1×H×W) from every CVAE"
            )
    images = [load_backgrounds(spec) for spec in specs]
    for spec, group in zip(specs, images, strict=True):
        check_backgrounds(group, height, width, spec)
    latent_dim, num_classes = checkpoints[0].config.latent_dim, checkpoints[0].config.num_classes
    for split in h5io.SPLITS:
        generating.num_codes(config, split, num_classes)
    generating.sample_truncated_normal(
        1, latent_dim, config.truncation, config.radius, torch.Generator()
    )
    base = generating.entangled_header(
        config, checkpoints, modalities, torch.device(torch_device.type)
    )
    sources = {
        m: ModalitySource(**{**vars(base.sources[m]), "image_shape": (3, height, width)})
        for m in modalities
    }
    header = DatasetHeader(
        kind="entangled",
        modalities=tuple(modalities),
        sources=sources,
        num_classes=num_classes,
        class_names=base.class_names,
        latent_dim=latent_dim,
        seed=config.seed,
        config={
            **to_dict(config),
            "polymnist": {"backgrounds": specs},
            **_overrides(checkpoints, allow_collapsed),
        },
        environment=base.environment,
        nuisance=nuisance_attr(specs, modalities, images),
    )
    models = {key: loaded[key].model.eval() for key in loaded}
    extra = tuple(h5io.Field(f"nuisance/{m}", np.dtype(np.int64), (3,)) for m in modalities)
    fields = photo_level(h5io.standard_fields(header.image_shapes, "uint8", latent_dim, extra))
    sizes = {split: config.size(split) for split in h5io.SPLITS}
    per_block = config.block_codes * (num_classes if config.labels == "grid" else 1)
    step = math.ceil(batch_size / generating.DECODE_ROWS) * generating.DECODE_ROWS
    grey = [(1, height, width)] * count

    def make_rows(split: str, start: int, stop: int) -> dict[str, np.ndarray]:
        drawn = generating.draw_rows(config, latent_dim, num_classes, split, start, stop, grey)
        digits = digits_of(config, models, keys, drawn, torch_device)
        rows = {
            "labels": drawn["labels"].numpy(),
            "z": drawn["z"].numpy(),
            "code_index": drawn["code_index"].numpy(),
        }
        for index, (name, group) in enumerate(zip(modalities, images, strict=True)):
            nuisance = nuisance_rows(
                config.seed, split, per_block, start, stop, index, group, height, width
            )
            rows[f"nuisance/{name}"] = nuisance
            rows[f"images/{name}"] = composite(digits[index], crop(group, nuisance, height, width))
        return rows

    log.info("generating PolyMNIST-E %s from %d CVAEs: %s", out, len(loaded), to_dict(config))
    _write(out, header, sizes, fields, overwrite, step, make_rows, on_progress)
    return Path(out)


def photo_level(fields: tuple[h5io.Field, ...]) -> tuple[h5io.Field, ...]:
    """The composites' fields at gzip level ``PHOTO_LEVEL``: photo crops deflate to 0.756 of
    their size at level 1 and 0.754 at level 4, for 30 % less CPU (docs/performance.md)."""
    return tuple(
        dataclasses.replace(f, level=PHOTO_LEVEL) if f.path.startswith("images/") else f
        for f in fields
    )


def _overrides(checkpoints: Sequence[CVAECheckpoint], allow_collapsed: bool) -> dict[str, Any]:
    collapsed = generating.collapsed_checkpoints(checkpoints)
    return {"allow_collapsed": sorted(collapsed)} if allow_collapsed and collapsed else {}


def _write(
    out: Path | str,
    header: DatasetHeader,
    sizes: dict[str, int],
    fields: tuple[h5io.Field, ...],
    overwrite: bool,
    step: int,
    make_rows: Callable[[str, int, int], dict[str, np.ndarray]],
    on_progress: Callable[[int], None] | None,
) -> None:
    """Make steps of ``step`` rows in order; the writer compresses one while the next is made."""
    with (
        h5io.create_dataset(out, header, sizes, fields, overwrite) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmgen-writer") as pool,
    ):
        pending: Future | None = None
        for split in h5io.SPLITS:
            for start in range(0, sizes[split], step):
                stop = min(start + step, sizes[split])
                rows = make_rows(split, start, stop)
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.append, split, rows)
                if on_progress is not None:
                    on_progress(stop - start)
        if pending is not None:
            pending.result()
    log.info("wrote %s", out)


# --- The PolyMNIST-style naive pairing -------------------------------------------------------


def pair_polymnist(
    out: Path | str,
    modalities: int | Sequence[str] = 5,
    backgrounds: Sequence[str] = (),
    source: str = "mnist",
    seed: int = 0,
    data_dir: Path | str | None = None,
    limit: int | None = None,
    download: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """PolyMNIST itself, from the same pool of backgrounds: per tuple, a different real image
    of the same class for every modality (``mmgen.pair.pair_indices``), each binarised at
    0.5 and composited on a seeded crop of that modality's background. No ``z``.

    Args:
        modalities: how many (named m0, m1, ...), or their names.
        source: where the real digits come from (grey images; ``mnist`` for PolyMNIST).
        seed: keys the pairing ``(seed, split, m + 1, class)`` and crops ``(seed, split, 0,
            "crop", m)``.
    """
    h5io.check_output(out, overwrite)
    names_ = (
        default_names(modalities)
        if isinstance(modalities, int)
        else _modality_names(modalities, len(modalities), "modality")
    )
    if len(names_) < 2:
        raise UsageError(f"a PolyMNIST pairing needs at least two modalities, got {len(names_)}")
    specs = resolve_specs(list(backgrounds), len(names_))
    images = [load_backgrounds(spec) for spec in specs]
    data = {
        split: load_split(source, split, data_dir=data_dir, download=download, limit=limit)
        for split in h5io.SPLITS
    }
    channels, height, width = data["train"].image_shape
    if channels != 1:
        raise UsageError(
            f"--source {source} has {channels}-channel images; PolyMNIST needs grey digits"
        )
    for spec, group in zip(specs, images, strict=True):
        check_backgrounds(group, height, width, spec)
    pairs = {}
    for split, split_data in data.items():
        key = generating.SPLIT_KEYS[split]
        pairs[split] = pair_indices(
            [split_data.labels] * len(names_),
            split_data.num_classes,
            lambda m, label, key=key: rng.numpy_stream(seed, key, m + 1, label),
        )
    train = data["train"]
    sources = {
        m: ModalitySource(
            name=train.name,
            class_names=tuple(train.class_names),
            files={**train.files, **data["test"].files},
            root=absolute(train.root),
            image_shape=(3, height, width),
        )
        for m in names_
    }
    header = DatasetHeader(
        kind="naive",
        modalities=tuple(names_),
        sources=sources,
        num_classes=train.num_classes,
        class_names=tuple(train.class_names),
        latent_dim=0,
        seed=seed,
        config={
            "source": source,
            "seed": seed,
            "limit": limit,
            "polymnist": {"backgrounds": specs},
        },
        environment=environment("cpu"),
        nuisance=nuisance_attr(specs, names_, images),
    )
    extra = tuple(
        field
        for m in names_
        for field in (
            h5io.Field(f"source_index/{m}", np.dtype(np.int64)),
            h5io.Field(f"nuisance/{m}", np.dtype(np.int64), (3,)),
        )
    )
    fields = photo_level(h5io.standard_fields(header.image_shapes, "uint8", 0, extra))
    sizes = {split: len(p[0]) for split, p in pairs.items()}

    # One block per split: the crops of a split are drawn at once, keyed (seed, split, 0, ...).
    drawn = {
        split: [
            nuisance_rows(seed, split, sizes[split], 0, sizes[split], m, group, height, width)
            for m, group in enumerate(images)
        ]
        for split in h5io.SPLITS
    }

    def make_rows(split: str, start: int, stop: int) -> dict[str, np.ndarray]:
        split_data = data[split]
        rows = {"labels": split_data.labels[pairs[split][0][start:stop]]}
        for index, (name, group) in enumerate(zip(names_, images, strict=True)):
            chosen = pairs[split][index][start:stop]
            nuisance = drawn[split][index][start:stop]
            digits = split_data.images[chosen, 0] > THRESHOLD * 255
            rows[f"images/{name}"] = composite(digits, crop(group, nuisance, height, width))
            rows[f"source_index/{name}"] = chosen
            rows[f"nuisance/{name}"] = nuisance
        return rows

    _write(out, header, sizes, fields, overwrite, 8 * h5io.CHUNK_ROWS, make_rows, on_progress)
    return Path(out)
