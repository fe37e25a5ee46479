"""``mmgen shuffle``: the mixed baseline of Korthals et al. (M²VAE, Fig. 1), MNIST-ME.

* **Mixed** (``mmgen shuffle``, MNIST-ME): inside every split and every class of an entangled
  file, the tuples of one modality are permuted. Each modality keeps its marginal distribution
  and the class stays shared, but the continuous correlation carried by the shared code ``z``
  is broken: the permuted modality of tuple i comes from the code of another tuple of the same
  class. ``z`` and ``code_index`` are kept as they were, so they remain the code of the
  *non-permuted* modalities; ``permutation/<m>`` tells where each permuted image came from.
* **Naive** pairing (``mmgen pair``) lives in :mod:`mmgen.pair`.

Seeded with NumPy generators keyed by ``(seed, split, ...)`` (docs/method.md).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmgen import __version__, rng
from mmgen.config import to_dict
from mmgen.data import h5io
from mmgen.data.header import SCHEMA_VERSION, DatasetHeader, absolute, check_seed
from mmgen.device import environment
from mmgen.errors import UsageError
from mmgen.shared import SPLIT_KEYS, file_sha256

log = logging.getLogger(__name__)

COPY_ROWS = 8 * h5io.CHUNK_ROWS  # rows read and written at a time when copying a split
# Codes per permutation block of `shuffle` (issue 17): generate's default block, 2,560 tuples
# of a 10-class grid file; a split of at most this many codes is permuted as before issue 17.
DEFAULT_BLOCK_CODES = 256


@dataclass(frozen=True)
class MixConfig:
    """What ``mmgen shuffle`` permutes; saved as the ``config`` attribute of a mixed file.

    ``fraction`` f (issue 16, graded entanglement): in every (class, block) group a seeded
    ``round(f·n)`` of its ``n`` tuples are chosen and permuted among themselves; the others keep
    their own images. ``block_codes`` (issue 17, subsets that keep the marginals): the
    permutation never leaves a block of ``block_codes`` consecutive codes (rows whose
    ``code_index // block_codes`` agree), so every prefix of whole blocks holds the same images
    of the permuted modality as the entangled file's prefix; 0 means the whole split (the
    permutation of mmgen before issue 17). With f = 1 and a split of at most one block the
    permutation is exactly the former one.
    """

    # the modality permuted within each class; "" means the last one; several, comma-separated
    # ("m1,m2,m3,m4" for PolyMNIST-E), are each permuted by their own stream
    modality: str = ""
    seed: int = 0  # keys the permutation of (split, class)
    fraction: float = 1.0  # f: share of each (class, block) group that is permuted
    block_codes: int = DEFAULT_BLOCK_CODES  # codes per permutation block; 0: the whole split

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, int | float):
            raise UsageError(f"--fraction must be a number in [0, 1], got {self.fraction!r}")
        if not 0.0 <= float(self.fraction) <= 1.0:  # NaN fails too
            raise UsageError(
                f"--fraction {self.fraction} is outside [0, 1]: it is the share of each class's "
                "tuples that is permuted (1: the mixed baseline MNIST-ME, 0: the entangled file)"
            )
        object.__setattr__(self, "fraction", float(self.fraction))
        if isinstance(self.block_codes, bool) or not isinstance(self.block_codes, int):
            raise UsageError(f"--block-codes must be an integer >= 0, got {self.block_codes!r}")
        if self.block_codes < 0:
            raise UsageError(
                f"--block-codes must be >= 0 (0: permute within the whole split), "
                f"got {self.block_codes}"
            )

    def record(self) -> dict[str, Any]:
        """The ``config`` attribute: fields at the values of mmgen before issue 16 left out
        (f = 1, whole-split blocks), so that such a file keeps its former bytes and a former
        file reads with the values it was made with (:func:`read_mix_config`)."""
        values = to_dict(self)
        if self.fraction == 1.0:
            del values["fraction"]
        if self.block_codes == 0:
            del values["block_codes"]
        return values


def read_mix_config(config: Mapping[str, Any]) -> MixConfig:
    """The ``MixConfig`` of a mixed file's ``config`` attribute (missing fields: the former
    behaviour, f = 1 over the whole split)."""
    return MixConfig(
        modality=str(config.get("modality", "")),
        seed=int(config.get("seed", 0)),
        fraction=float(config.get("fraction", 1.0)),
        block_codes=int(config.get("block_codes", 0)),
    )


def class_permutation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(N)`` that maps every index to one of the same class.

    Returns:
        ``(N,)`` int64 ``p`` with ``labels[p] == labels``, drawn uniformly per class.
    """
    permutation = np.arange(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        permutation[members] = rng.permutation(members)
    return permutation


def block_permutation(
    labels: np.ndarray,
    blocks: np.ndarray,
    rng: np.random.Generator,
    fraction: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A permutation within every (block, class) group of a seeded ``fraction`` of its rows.

    Groups are visited block by block, classes in increasing order, all from one stream; a
    group of ``n`` rows gets ``round(f·n)`` chosen rows (``rng.choice`` without replacement,
    skipped when f = 1) permuted uniformly among themselves. With one block and f = 1 this is
    :func:`class_permutation`, draw for draw.

    Args:
        labels: ``(N,)`` classes.
        blocks: ``(N,)`` block of every row (``code_index // block_codes``).
        rng: the split's stream.
        fraction: f in [0, 1].

    Returns:
        ``(N,)`` int64 ``p`` (``labels[p] == labels``, ``blocks[p] == blocks``) and ``(N,)``
        bool: the chosen rows (those whose image of the permuted modality may have moved).
    """
    permutation = np.arange(len(labels), dtype=np.int64)
    chosen = np.zeros(len(labels), dtype=bool)
    for block in np.unique(blocks):
        in_block = blocks == block
        for label in np.unique(labels[in_block]):
            members = np.flatnonzero(in_block & (labels == label))
            if fraction < 1.0:
                count = int(np.floor(fraction * len(members) + 0.5))
                members = np.sort(rng.choice(members, size=count, replace=False))
            permutation[members] = rng.permutation(members)
            chosen[members] = True
    return permutation, chosen


def mix_modality(
    source: Path | str,
    out: Path | str,
    config: MixConfig | None = None,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the mixed twin (MNIST-ME) of an entangled file: one modality permuted per class.

    Every dataset and attribute is copied unchanged except the permuted modality, ``kind``
    (``"mixed"``), ``seed``, ``config`` and ``parent`` (the entangled file's attributes and
    SHA-256). The permuted modality of one split is held in memory (47 MB for 60,000 uint8
    images); everything else is copied chunk by chunk. With ``config.fraction`` f < 1 only a
    seeded share f of every (class, block) group is permuted (a partly mixed file, issue 16)
    and ``mixed/<m>`` records which tuples were chosen.

    Args:
        source: an entangled mmgen file (``mmgen generate``).
        out: the mixed file to write; it appears only when complete.
        config: which modality, seed, fraction and permutation block.
        overwrite: replace an existing ``out``.
        on_progress: called with the number of tuples copied after every chunk.

    Raises:
        ValueError: ``source`` is not an entangled mmgen file, or the modality is unknown.
        FileNotFoundError: ``source`` does not exist.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    config = config or MixConfig()
    if Path(source).resolve() == Path(out).resolve():
        raise UsageError(f"--out {out} is the input file; write the mixed file elsewhere")
    h5io.check_output(out, overwrite)
    with h5io.open_dataset(source) as handle:
        parent = h5io.header_from_attrs(handle.attrs, source)
        if parent.kind != "entangled":
            raise UsageError(
                f"{source} is a {parent.kind} file; mmgen shuffle permutes an entangled file "
                "from mmgen generate"
            )
        modalities = parent.modalities
        chosen = (config.modality or modalities[-1]).split(",")
        for modality in chosen:
            if modality not in modalities:
                raise UsageError(
                    f"unknown --modality {modality!r}; {source} has {', '.join(modalities)}"
                )
        if len(set(chosen)) != len(chosen) or len(chosen) == len(modalities):
            raise UsageError(
                f"--modality {config.modality}: name each modality once and keep one unpermuted"
            )
        config = dataclasses.replace(config, modality=",".join(chosen))
        splits = list(h5io.SPLITS)
        image_dtype = handle[splits[0]]["images"][modalities[0]].dtype.name
        extra = tuple(h5io.Field(f"permutation/{m}", np.dtype(np.int64)) for m in chosen)
        if config.fraction < 1.0:  # which tuples were chosen (f = 1: all of them, as before)
            extra += tuple(h5io.Field(f"mixed/{m}", np.dtype(np.uint8)) for m in chosen)
        if parent.has_nuisance:  # PolyMNIST-E: the crops travel with their images
            extra += tuple(
                h5io.Field(f"nuisance/{m}", np.dtype(np.int64), (3,)) for m in modalities
            )
        moved = {
            f"{kind}/{m}" for m in chosen for kind in ("images", "permutation", "nuisance", "mixed")
        }
        fields = h5io.standard_fields(parent.image_shapes, image_dtype, parent.latent_dim, extra)
        fields = tuple(  # each copied dataset deflated at its parent's level (PolyMNIST-E's: 1)
            dataclasses.replace(f, level=handle[splits[0]][f.path].compression_opts or f.level)
            if f.path in handle[splits[0]]
            else f
            for f in fields
        )
        header = mixed_header(parent, config, source)
        sizes = {split: len(handle[split]["labels"]) for split in splits}
        with h5io.create_dataset(out, header, sizes, fields, overwrite) as writer:
            for split in splits:
                group = handle[split]
                labels = h5io.read_rows(group["labels"], slice(None), source)
                codes = h5io.read_rows(group["code_index"], slice(None), source)
                blocks = codes // config.block_codes if config.block_codes else np.zeros_like(codes)
                # One modality: the stream (seed, split) of mmgen before #19; several: each its
                # own (seed, split, its index in the file).
                permutation, mixed = {}, {}
                for m in chosen:
                    stream = (
                        rng.numpy_stream(config.seed, SPLIT_KEYS[split])
                        if len(chosen) == 1
                        else rng.numpy_stream(config.seed, SPLIT_KEYS[split], modalities.index(m))
                    )
                    permutation[m], mixed[m] = block_permutation(
                        labels, blocks, stream, config.fraction
                    )
                # The whole split's images (and crops) of the permuted modalities.
                held = {
                    path: h5io.read_rows(group[path], slice(None), source)
                    for path in moved
                    if path in group and path.split("/")[0] in ("images", "nuisance")
                }
                for start in range(0, sizes[split], COPY_ROWS):
                    stop = min(start + COPY_ROWS, sizes[split])
                    rows = {
                        field.path: h5io.read_rows(group[field.path], slice(start, stop), source)
                        for field in fields
                        if field.path not in moved
                    }
                    for m in chosen:
                        order = permutation[m][start:stop]
                        rows[f"permutation/{m}"] = order
                        if config.fraction < 1.0:
                            rows[f"mixed/{m}"] = mixed[m][start:stop].astype(np.uint8)
                        for path in (f"images/{m}", f"nuisance/{m}"):
                            if path in held:
                                rows[path] = held[path][order]
                    writer.append(split, rows, origin=str(source))
                    if on_progress is not None:
                        on_progress(stop - start)
    log.info(
        "wrote %s (modality %s, fraction %g, permuted within classes and blocks of %s codes)",
        out,
        config.modality,
        config.fraction,
        config.block_codes or "all",
    )
    return Path(out)


def mixed_header(parent: DatasetHeader, config: MixConfig, source: Path | str) -> DatasetHeader:
    """The header of the mixed twin of ``parent``: its sources and classes, a new config."""
    return dataclasses.replace(
        parent,
        kind="mixed",
        seed=config.seed,
        config=config.record(),
        parent={
            "path": absolute(source),
            "sha256": file_sha256(source),
            "kind": parent.kind,
            "seed": parent.seed,
            "config": dict(parent.config),
            "mmgen_version": parent.mmgen_version,
        },
        environment=environment("cpu"),
        mmgen_version=__version__,
        schema_version=SCHEMA_VERSION,
    )
