"""``mmgen generate``: decode shared latent codes with one CVAE per source into MNIST-E.

Korthals et al. (*Deep generative models for learning coherent latent representations from
multi-modal data*, M²VAE) build an *entangled* dataset: one class-conditional β-CVAE
``p_m(x | z, C)`` is trained per uni-modal source m, then for a shared code ``z`` and class ``C``

    x_m = σ(decoder_m(z, C))   for every source m,

so the modalities of a tuple vary together through ``z`` (their Fig. 1). docs/method.md:

* ``z ~ N(0, I_d)`` restricted to a radius by exact rejection (never clipping): ``radial``
  keeps ``‖z‖₂ ≤ r``, ``box`` keeps ``max_i |z_i| ≤ r``; default r = 2 (the authors' notebook
  used radial with r = 1.645).
* labels ``grid`` (default, as the released dataset): n codes, each decoded once with every
  class, so a split of N tuples holds N / C codes and is exactly balanced; ``independent``:
  every tuple draws its own code and a uniform class.
* splits are drawn from separate random streams, so no test code appears in training.

Randomness is keyed by position: the codes of block ``b`` of split ``s`` (``BLOCK_CODES``
codes) come from a generator seeded with ``(seed, s, b)``, so the data depend neither on the
decoding batch size nor on the device's random number generator, and any block can be produced
on its own. Codes are drawn on the CPU; only decoding runs on the chosen device.

Near 500 lines on purpose: the truncated sampler, the keyed blocks, the decoding pipeline (a
thread drawing ahead of the decoder) and the writer are one stream whose byte-for-byte output
the tests pin; split apart, each piece would need the others' chunking rules to stay correct.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmgen import collapse, rng
from mmgen.checkpoint import CVAECheckpoint, load_cvae
from mmgen.config import require_positive, to_dict
from mmgen.data import h5io, names
from mmgen.data.header import DatasetHeader, ModalitySource, absolute, check_seed
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, ImageShape, to_stored
from mmgen.device import environment, resolve_device
from mmgen.distributed import World
from mmgen.errors import UsageError
from mmgen.models.cvae import CVAE
from mmgen.shared import SPLIT_KEYS, to_levels

log = logging.getLogger(__name__)

NOISE_KEY = 1_000  # offset of the Bernoulli-noise streams from the code stream, per modality
MIN_ACCEPTANCE = 1e-3  # below this, rejection sampling would take too long: an error instead
# The decoder always sees the same groups of tuples (rows k·DECODE_ROWS ... of a split): a
# row's float rounding can depend on the rows computed with it (vectorised loops split the
# batch differently), so fixed groups keep the bytes independent of --batch-size.
DECODE_ROWS = 1024
DEFAULT_BATCH_SIZE = 4 * DECODE_ROWS  # tuples per step: decoded, then written on a thread
MAX_TUPLES = 10**9  # per split: 1.5 TB of uint8 image pairs; beyond, a flag typo is likelier


def _radial_keep(z: Tensor, radius: float) -> Tensor:
    return z.square().sum(dim=1) <= radius**2


def _radial_acceptance(latent_dim: int, radius: float) -> float:
    # P(χ²_d ≤ r²) = P(d/2, r²/2), the regularised lower incomplete gamma function.
    return float(torch.special.gammainc(torch.tensor(latent_dim / 2), torch.tensor(radius**2 / 2)))


def _box_keep(z: Tensor, radius: float) -> Tensor:
    return z.abs().amax(dim=1) <= radius


def _box_acceptance(latent_dim: int, radius: float) -> float:
    return math.erf(radius / math.sqrt(2)) ** latent_dim


@dataclass(frozen=True)
class Truncation:
    """A region of latent space: ``keep`` marks codes inside, ``acceptance`` is P(inside)."""

    keep: Callable[[Tensor, float], Tensor]
    acceptance: Callable[[int, float], float]


TRUNCATIONS: dict[str, Truncation] = {
    "radial": Truncation(_radial_keep, _radial_acceptance),
    "box": Truncation(_box_keep, _box_acceptance),
}
LABEL_POLICIES = ("grid", "independent")
DECODE_MODES = ("mean", "sample")


@dataclass(frozen=True)
class GenerateConfig:
    """What ``mmgen generate`` draws (defaults: docs/method.md, the released MNIST-E).

    Saved as the root attribute ``config`` of every generated file.
    """

    n_train: int = 60_000  # tuples in the train split (grid: a multiple of the class count)
    n_test: int = 10_000  # tuples in the test split
    truncation: str = "radial"  # a key of TRUNCATIONS: ‖z‖₂ ≤ radius, or every |z_i| ≤ radius
    radius: float = 2.0  # in standard deviations; the authors' notebook used radial 1.645
    labels: str = "grid"  # grid: every code with every class; independent: a class per tuple
    decode: str = "mean"  # mean: σ(logits); sample: one Bernoulli draw per pixel
    dtype: str = "uint8"  # image storage: uint8 = round(255·x), or float32 in [0, 1]
    seed: int = 0  # keys every draw: (seed, split, block)
    block_codes: int = 256  # codes per random block; changing it changes the data

    def __post_init__(self) -> None:
        for name, flag in (("n_train", "--n-train"), ("n_test", "--n-test")):
            value = getattr(self, name)
            require_positive(f"{name} ({flag})", value)
            if value > MAX_TUPLES:
                raise UsageError(f"{flag} {value} is too large; at most {MAX_TUPLES} tuples")
        require_positive("radius (--radius)", self.radius)
        if not math.isfinite(self.radius):
            raise UsageError(f"--radius must be a finite number of σ, got {self.radius}")
        require_positive("block_codes", self.block_codes)
        check_seed(self.seed)
        for name, value, valid in (
            ("truncation", self.truncation, tuple(TRUNCATIONS)),
            ("labels", self.labels, LABEL_POLICIES),
            ("decode", self.decode, DECODE_MODES),
            ("dtype", self.dtype, tuple(h5io.IMAGE_DTYPES)),
        ):
            if value not in valid:
                raise UsageError(f"unknown --{name} {value!r}; choose one of {', '.join(valid)}")

    def size(self, split: str) -> int:
        """Tuples in ``split``."""
        return self.n_train if split == "train" else self.n_test


def sample_truncated_normal(
    count: int,
    latent_dim: int,
    truncation: str,
    radius: float,
    generator: torch.Generator,
) -> Tensor:
    """``count`` draws of ``N(0, I_d)`` restricted to a region, by exact rejection.

    Draws standard normals in rounds and keeps those inside the region, in draw order, until
    ``count`` are kept; nothing is clipped, so the result is exactly the truncated normal.

    Args:
        count: codes to return.
        latent_dim: d.
        truncation: a key of ``TRUNCATIONS``.
        radius: the region's radius, in standard deviations.
        generator: the CPU random stream.

    Returns:
        ``(count, latent_dim)`` float32.

    Raises:
        ValueError: the region keeps less than ``MIN_ACCEPTANCE`` of the draws.
    """
    if truncation not in TRUNCATIONS:
        raise UsageError(f"unknown truncation {truncation!r}; choose one of {list(TRUNCATIONS)}")
    region = TRUNCATIONS[truncation]
    acceptance = region.acceptance(latent_dim, radius)
    if acceptance < MIN_ACCEPTANCE:
        raise UsageError(
            f"--truncation {truncation} --radius {radius} keeps only {acceptance:.1e} of the "
            f"draws from N(0, I_{latent_dim}); use a larger --radius (radial keeps about half at "
            f"sqrt(d) = {math.sqrt(latent_dim):.2f}) or --truncation box"
        )
    round_size = math.ceil(count / acceptance * 1.1) + 16
    kept: list[Tensor] = []
    total = 0
    while total < count:
        z = torch.randn(round_size, latent_dim, generator=generator)
        z = z[region.keep(z, radius)]
        kept.append(z)
        total += len(z)
    return torch.cat(kept)[:count]


@dataclass(frozen=True)
class Block:
    """The tuples of one random block: codes, classes and their place in the split."""

    z: Tensor  # (T, d) float32, the code of every tuple (grid: each code repeated C times)
    labels: Tensor  # (T,) int64
    code_index: Tensor  # (T,) int64, index of the code within the split
    block: int  # block number within the split


def draw_block(
    config: GenerateConfig, latent_dim: int, num_classes: int, split: str, block: int
) -> Block:
    """The tuples of block ``block`` of ``split``, keyed by ``(seed, split, block)`` only.

    The first ``block_codes`` codes are always drawn in full and then cut to the split's size,
    so a smaller ``n`` gives a prefix of a larger one.
    """
    codes_total = num_codes(config, split, num_classes)
    first = block * config.block_codes
    count = min(config.block_codes, codes_total - first)
    if count <= 0:
        raise UsageError(f"block {block} lies beyond the {codes_total} codes of split {split!r}")
    generator = rng.stream(config.seed, SPLIT_KEYS[split], block)
    z = sample_truncated_normal(
        config.block_codes, latent_dim, config.truncation, config.radius, generator
    )[:count]
    code_index = torch.arange(first, first + count)
    if config.labels == "grid":
        # Tuple order is code-major: code j appears with classes 0..C-1 in tuples jC..jC+C-1.
        z = z.repeat_interleave(num_classes, dim=0)  # (count·C, d)
        code_index = code_index.repeat_interleave(num_classes)
        labels = torch.arange(num_classes).repeat(count)
    else:
        labels = torch.randint(num_classes, (config.block_codes,), generator=generator)[:count]
    return Block(z=z, labels=labels, code_index=code_index, block=block)


def num_codes(config: GenerateConfig, split: str, num_classes: int) -> int:
    """Distinct latent codes in ``split``: n / C with grid labels, n otherwise."""
    size = config.size(split)
    if config.labels == "grid":
        if size % num_classes:
            flag = "--n-train" if split == "train" else "--n-test"
            lower = size - size % num_classes
            nearest = f"{lower} or " if lower else ""
            raise UsageError(
                f"{flag} {size} is not a multiple of the {num_classes} classes: with --labels "
                f"grid every code is decoded once per class; use {nearest}"
                f"{lower + num_classes}, or --labels independent"
            )
        return size // num_classes
    return size


def bernoulli_noise(
    config: GenerateConfig,
    split: str,
    block: Block,
    modality: int,
    image_shape: ImageShape = DEFAULT_IMAGE_SHAPE,
) -> Tensor:
    """Uniform noise ``(T, C, H, W)`` for Bernoulli sampling, keyed like the block's codes.

    The key does not depend on the shape: at 1×28×28 the draws are those of mmgen before #10.
    """
    generator = rng.stream(config.seed, SPLIT_KEYS[split], block.block, NOISE_KEY + modality)
    return torch.rand(len(block.labels), *image_shape, generator=generator)


def to_storage(images: Tensor, dtype: str) -> np.ndarray:
    """Images ``(B, C, H, W)`` in [0, 1] → rows as stored (uint8: round(255·x)).

    Grey images (C = 1) are stored ``(B, H, W)``, others ``(B, C, H, W)`` (``mmgen.data.shapes``).
    """
    if dtype == "uint8":
        images = to_levels(images)
    return to_stored(images.contiguous().cpu().numpy())


def check_compatible(checkpoints: list[CVAECheckpoint]) -> None:
    """Raise ``ValueError`` unless there are ≥ 2 CVAEs agreeing on latent size and class count."""
    if len(checkpoints) < 2:
        raise UsageError(
            f"generate needs at least two CVAE checkpoints (one per modality), got "
            f"{len(checkpoints)}; pass --cvae once per source"
        )
    for attribute, flag in (("latent_dim", "--latent-dim"), ("num_classes", "classes")):
        values = {str(c.path): getattr(c.config, attribute) for c in checkpoints}
        if len(set(values.values())) > 1:
            listing = ", ".join(f"{path} has {value}" for path, value in values.items())
            fix = (
                f"retrain them with the same {flag}"
                if attribute == "latent_dim"
                else "use sources with the same number of classes"
            )
            raise UsageError(f"the CVAEs disagree on {attribute}: {listing}; {fix}")


def collapsed_checkpoints(checkpoints: Sequence[CVAECheckpoint]) -> list[str]:
    """Absolute folders of the CVAEs whose posterior collapsed (``mmgen.collapse``)."""
    return sorted(
        {absolute(c.path) for c in checkpoints if collapse.is_collapsed(c.metadata, c.history)}
    )


def refuse_collapsed(checkpoints: Sequence[CVAECheckpoint], allow_collapsed: bool) -> None:
    """One line naming the first collapsed CVAE, unless ``allow_collapsed`` (then a warning)."""
    collapsed = collapsed_checkpoints(checkpoints)
    if not collapsed:
        return
    kl = collapse.last_test_kl(
        next(c.history for c in checkpoints if absolute(c.path) == collapsed[0])
    )
    what = f"{collapsed[0]} collapsed (test KL {kl:.3f} nats < {collapse.COLLAPSE_KL_NATS})"
    if not allow_collapsed:
        raise UsageError(
            f"{what}: its images barely depend on z, so the file would be class-only, not "
            "entangled; retrain it, or pass --allow-collapsed (recorded in the file)"
        )
    log.warning("%s; decoding it anyway (--allow-collapsed, recorded in the header)", what)


def entangled_header(
    config: GenerateConfig,
    checkpoints: list[CVAECheckpoint],
    modalities: list[str],
    device: torch.device,
) -> DatasetHeader:
    """The header of an entangled file: every CVAE's source and exact weights (absolute paths)."""
    sources = {
        name: ModalitySource(
            name=str(checkpoint.source.get("name", "")),
            class_names=tuple(checkpoint.source.get("class_names", ())),
            files=dict(checkpoint.source.get("files", {})),
            checkpoint=absolute(checkpoint.path),
            checkpoint_sha256=checkpoint.sha256,
            image_shape=checkpoint.image_shape,
            classes=checkpoint.identity.classes,
        )
        for name, checkpoint in zip(modalities, checkpoints, strict=True)
    }
    first = checkpoints[0]
    class_names = list(first.source.get("class_names", [])) or [
        str(k) for k in range(first.config.num_classes)
    ]
    return DatasetHeader(
        kind="entangled",
        modalities=tuple(modalities),
        sources=sources,
        num_classes=first.config.num_classes,
        class_names=tuple(class_names),
        latent_dim=first.config.latent_dim,
        seed=config.seed,
        config=to_dict(config),
        environment=environment(device),
    )


def draw_rows(
    config: GenerateConfig,
    latent_dim: int,
    num_classes: int,
    split: str,
    start: int,
    stop: int,
    image_shapes: Sequence[ImageShape],
) -> dict[str, Tensor]:
    """Tuples ``start:stop`` of ``split``: cut from the keyed blocks that cover them.

    Args:
        image_shapes: ``(C, H, W)`` of every modality, in order (the noise of ``"sample"``).

    Returns:
        ``z`` (T, d), ``labels`` (T,), ``code_index`` (T,) and, for ``decode="sample"``,
        ``noise/<i>`` (T, C_i, H_i, W_i) uniform draws for modality i.
    """
    per_block = config.block_codes * (num_classes if config.labels == "grid" else 1)
    first, last = start // per_block, (stop - 1) // per_block
    blocks = [draw_block(config, latent_dim, num_classes, split, b) for b in range(first, last + 1)]
    offset = first * per_block
    rows = {
        "z": torch.cat([b.z for b in blocks]),
        "labels": torch.cat([b.labels for b in blocks]),
        "code_index": torch.cat([b.code_index for b in blocks]),
    }
    if config.decode == "sample":
        for index, shape in enumerate(image_shapes):
            rows[f"noise/{index}"] = torch.cat(
                [bernoulli_noise(config, split, b, index, shape) for b in blocks]
            )
    return {name: value[start - offset : stop - offset] for name, value in rows.items()}


@torch.inference_mode()
def decode_rows(
    config: GenerateConfig,
    models: list[CVAE],
    modalities: list[str],
    drawn: dict[str, Tensor],
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Decode drawn tuples in every modality: the rows to append to a split.

    The decoder is called on groups of ``DECODE_ROWS`` tuples; callers start ``drawn`` at a
    multiple of ``DECODE_ROWS`` so that the groups sit at fixed positions in the split.
    """
    z, labels = drawn["z"], drawn["labels"]
    rows: dict[str, np.ndarray] = {
        "labels": labels.numpy(),
        "z": z.numpy(),
        "code_index": drawn["code_index"].numpy(),
    }
    z_device, labels_device = z.to(device), labels.to(device)
    for index, (name, model) in enumerate(zip(modalities, models, strict=True)):
        parts = []
        for start in range(0, len(labels), DECODE_ROWS):
            stop = start + DECODE_ROWS
            images = model.decode(z_device[start:stop], labels_device[start:stop])
            if config.decode == "sample":
                noise = drawn[f"noise/{index}"][start:stop].to(device)
                images = (noise < images).to(images.dtype)
            parts.append(to_storage(images, config.dtype))
        rows[f"images/{name}"] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return rows


def generate_dataset(
    checkpoint_folders: list[Path | str],
    out: Path | str,
    config: GenerateConfig | None = None,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    modality_names: list[str] | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
    world: World | None = None,
    allow_collapsed: bool = False,
) -> Path:
    """Decode shared latent codes with every CVAE and write an entangled HDF5 file.

    Streams: memory holds one step of ``batch_size`` tuples being decoded and one being written
    (on a background thread), whatever the number of tuples.

    Args:
        checkpoint_folders: two or more CVAE checkpoint folders, one per modality, in order.
        out: the HDF5 file to write; it appears only when complete.
        config: what to draw (defaults: 60,000 / 10,000 tuples, radial 2σ, grid labels).
        device: ``auto``, ``cpu`` or ``cuda``; decoding runs there, codes are drawn on the CPU.
        batch_size: tuples per step, rounded up to a multiple of ``DECODE_ROWS``; the step
            being written while the next decodes (memory and speed only, not the data).
        modality_names: names instead of the sources' (``mnist``, ``fashion-mnist``, ...).
        overwrite: replace an existing ``out``.
        on_progress: called with the number of tuples finished after every chunk (rank 0).
        world: under torchrun, the ranks decode disjoint steps of ``batch_size`` tuples (step
            i on rank i mod W) and rank 0 writes them in order: the same bytes as one process.
        allow_collapsed: decode CVAEs whose posterior collapsed (``mmgen.collapse``) instead of
            refusing them; their folders are recorded as ``config["allow_collapsed"]``.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        ValueError: incompatible checkpoints, bad sizes, names or options.
        FileNotFoundError: a checkpoint folder does not exist.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    config = config or GenerateConfig()
    world = world or World()
    require_positive("batch_size (--batch-size)", batch_size)
    h5io.check_output(out, overwrite)
    if modality_names is not None:
        names.check_modality_names(modality_names)  # before any checkpoint is read
        if len(modality_names) != len(checkpoint_folders):
            raise UsageError(
                f"{len(modality_names)} modality names for {len(checkpoint_folders)} "
                "checkpoints; give one --modality per --cvae, or none"
            )
    torch_device = world.device(resolve_device(device))
    checkpoints = [load_cvae(folder, torch_device) for folder in checkpoint_folders]
    check_compatible(checkpoints)
    refuse_collapsed(checkpoints, allow_collapsed)
    latent_dim, num_classes = checkpoints[0].config.latent_dim, checkpoints[0].config.num_classes
    if modality_names is None:
        sources = [str(c.source.get("name", "")) for c in checkpoints]
        modalities = names.derive_modality_names(sources)
    else:
        modalities = list(modality_names)
    for split in h5io.SPLITS:
        num_codes(config, split, num_classes)  # grid: n must be a multiple of the classes
    # Fail before decoding anything when the region is too small to sample.
    sample_truncated_normal(1, latent_dim, config.truncation, config.radius, torch.Generator())
    models = [c.model.eval() for c in checkpoints]
    step = math.ceil(batch_size / DECODE_ROWS) * DECODE_ROWS  # tuples per step
    log.info(
        "generating %s from %d CVAEs on %s: %s",
        out,
        len(checkpoints),
        torch_device,
        to_dict(config),
    )
    # The device type, not a rank's GPU index: the file records what a one-process run does.
    header = entangled_header(config, checkpoints, modalities, torch.device(torch_device.type))
    if allow_collapsed and collapsed_checkpoints(checkpoints):
        overridden = {**header.config, "allow_collapsed": collapsed_checkpoints(checkpoints)}
        header = dataclasses.replace(header, config=overridden)
    sizes = {split: config.size(split) for split in h5io.SPLITS}
    fields = h5io.standard_fields(header.image_shapes, config.dtype, latent_dim)
    image_shapes = [c.image_shape for c in checkpoints]
    steps = [
        (split, start, min(start + step, sizes[split]))
        for split in h5io.SPLITS
        for start in range(0, sizes[split], step)
    ]

    def decode_step(index: int) -> dict[str, np.ndarray] | None:
        if index >= len(steps):
            return None  # the last round has fewer steps than ranks
        split, start, stop = steps[index]
        drawn = draw_rows(config, latent_dim, num_classes, split, start, stop, image_shapes)
        return decode_rows(config, models, modalities, drawn, torch_device)

    # Round r: rank k decodes step r·W + k (its keyed blocks: any rank draws the same codes)
    # and rank 0 receives the W steps in rank order, so it appends them in the file's order.
    rounds = range(0, len(steps), world.size)
    if not world.is_main:
        for first in rounds:
            world.gather(decode_step(first + world.rank))
        return Path(out)
    with (
        h5io.create_dataset(out, header, sizes, fields, overwrite) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="mmgen-writer") as pool,
    ):
        # Double buffering: the writer thread compresses a step while the next decodes.
        pending: Future | None = None
        for first in rounds:
            gathered = world.gather(decode_step(first + world.rank)) or []
            for (split, start, stop), rows in zip(steps[first:], gathered, strict=False):
                if rows is None:
                    continue
                if pending is not None:
                    pending.result()
                pending = pool.submit(writer.append, split, rows)
                if on_progress is not None:
                    on_progress(stop - start)
        if pending is not None:
            pending.result()
    log.info("wrote %s", out)
    return Path(out)
