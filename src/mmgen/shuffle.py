"""``mmgen shuffle``: the mixed baseline of Korthals et al. (M²VAE, Fig. 1), MNIST-ME.

* **Mixed** (``mmgen shuffle``, MNIST-ME): inside every split and every class of an entangled
  file, the tuples of one modality are permuted. Each modality keeps its marginal distribution
  and the class stays shared, but the continuous correlation carried by the shared code ``z``
  is broken: the permuted modality of tuple i comes from the code of another tuple of the same
  class. ``z`` and ``code_index`` are kept as they were, so they remain the code of the
  *non-permuted* modalities; ``permutation/<m>`` tells where each permuted image came from.
* **Naive** pairing (``mmgen pair``) lives in :mod:`mmgen.pair`.

Seeded with NumPy generators keyed by ``(seed, split, ...)`` (METHOD.md §3).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class MixConfig:
    """What ``mmgen shuffle`` permutes; saved as the ``config`` attribute of a mixed file."""

    modality: str = ""  # the modality permuted within each class; "" means the last one
    seed: int = 0  # keys the permutation of (split, class)

    def __post_init__(self) -> None:
        check_seed(self.seed)


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
    images); everything else is copied chunk by chunk.

    Args:
        source: an entangled mmgen file (``mmgen generate``).
        out: the mixed file to write; it appears only when complete.
        config: which modality and seed.
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
        modality = config.modality or modalities[-1]
        if modality not in modalities:
            raise UsageError(
                f"unknown --modality {modality!r}; {source} has {', '.join(modalities)}"
            )
        config = MixConfig(modality=modality, seed=config.seed)
        splits = list(h5io.SPLITS)
        image_dtype = handle[splits[0]]["images"][modalities[0]].dtype.name
        extra = (h5io.Field(f"permutation/{modality}", np.dtype(np.int64)),)
        fields = h5io.standard_fields(parent.image_shapes, image_dtype, parent.latent_dim, extra)
        header = mixed_header(parent, config, source)
        sizes = {split: len(handle[split]["labels"]) for split in splits}
        with h5io.create_dataset(out, header, sizes, fields, overwrite) as writer:
            for split in splits:
                group = handle[split]
                permutation = class_permutation(
                    h5io.read_rows(group["labels"], slice(None), source),
                    rng.numpy_stream(config.seed, SPLIT_KEYS[split]),
                )
                # The whole split's images of `modality`.
                permuted = h5io.read_rows(group["images"][modality], slice(None), source)
                for start in range(0, sizes[split], COPY_ROWS):
                    stop = min(start + COPY_ROWS, sizes[split])
                    rows = {
                        field.path: h5io.read_rows(group[field.path], slice(start, stop), source)
                        for field in fields
                        if field.path not in (f"images/{modality}", f"permutation/{modality}")
                    }
                    rows[f"images/{modality}"] = permuted[permutation[start:stop]]
                    rows[f"permutation/{modality}"] = permutation[start:stop]
                    writer.append(split, rows)
                    if on_progress is not None:
                        on_progress(stop - start)
    log.info("wrote %s (modality %s permuted within classes)", out, modality)
    return Path(out)


def mixed_header(parent: DatasetHeader, config: MixConfig, source: Path | str) -> DatasetHeader:
    """The header of the mixed twin of ``parent``: its sources and classes, a new config."""
    return dataclasses.replace(
        parent,
        kind="mixed",
        seed=config.seed,
        config=to_dict(config),
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
