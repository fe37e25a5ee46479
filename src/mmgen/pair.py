"""``mmgen pair``: the naive baseline of Korthals et al. (M²VAE, Fig. 1), "m-MNIST".

Real images of the same class from each source are paired at random, as MNIST-SVHN (Shi et al.)
and PolyMNIST (Sutter et al.) do. There is no true latent code (``has_latent`` is false, no
``z``); per split, class c holds ``min_m count_m(c)`` tuples, the smallest count of that class
over the sources. Seeded with NumPy generators keyed by ``(seed, split, source, class)``
(docs/method.md). The mixed twin (``mmgen shuffle``) is :mod:`mmgen.shuffle`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmgen import rng
from mmgen.config import require_positive, to_dict
from mmgen.data import h5io, names
from mmgen.data.header import DatasetHeader, ModalitySource, absolute, check_seed
from mmgen.data.shapes import to_stored
from mmgen.data.sources import SourceData, get_source, load_split
from mmgen.device import environment
from mmgen.errors import UsageError
from mmgen.shared import SPLIT_KEYS

log = logging.getLogger(__name__)

COPY_ROWS = 8 * h5io.CHUNK_ROWS  # rows read and written at a time when copying a split


@dataclass(frozen=True)
class PairConfig:
    """What ``mmgen pair`` draws; saved as the ``config`` attribute of a naive file."""

    sources: tuple[str, ...] = ("mnist", "fashion-mnist")  # source specs, one per modality
    seed: int = 0  # keys the pairing of (split, source, class) and the tuple order
    limit: int | None = None  # read only the first N examples of each source split
    # --classes: per source, the class names or indices kept (relabelled 0..K-1 in that
    # order); empty: every class of every source
    classes: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        if len(self.sources) < 2:
            raise UsageError(
                f"pairing needs at least two sources, got {list(self.sources)}; "
                "pass --source once per modality, e.g. --source mnist --source fashion-mnist"
            )
        if self.limit is not None:
            require_positive("limit (--limit)", self.limit)
        check_seed(self.seed)
        for spec in self.sources:
            get_source(spec)  # an unknown name fails here, before any file is searched
        if self.classes and len(self.classes) != len(self.sources):
            raise UsageError(
                f"--classes is given {len(self.classes)} times for {len(self.sources)} sources; "
                "give it once (for every source) or once per --source"
            )


def pair_indices(
    label_sets: list[np.ndarray], num_classes: int, rng_for: Callable[[int, int], Any]
) -> list[np.ndarray]:
    """Indices into each source that pair examples of the same class at random.

    Args:
        label_sets: the labels of every source's split.
        num_classes: classes 0..C-1.
        rng_for: ``(source index, class) → numpy Generator``; ``(-1, 0)`` orders the tuples.

    Returns:
        One ``(N,)`` int64 index array per source, where ``N = Σ_c min_m count_m(c)`` and
        ``label_sets[m][result[m][i]]`` is the same for every m.
    """
    per_source: list[list[np.ndarray]] = [[] for _ in label_sets]
    for label in range(num_classes):
        members = [np.flatnonzero(labels == label) for labels in label_sets]
        count = min(len(m) for m in members)
        for index, candidates in enumerate(members):
            per_source[index].append(rng_for(index, label).permutation(candidates)[:count])
    pairs = [np.concatenate(parts).astype(np.int64) for parts in per_source]
    order = rng_for(-1, 0).permutation(len(pairs[0]))  # classes interleaved, not in blocks
    return [p[order] for p in pairs]


def pair_sources(
    out: Path | str,
    config: PairConfig | None = None,
    data_dir: Path | str | None = None,
    download: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Pair real images of the same class from two or more sources (the naive baseline).

    Args:
        out: the HDF5 file to write; it appears only when complete.
        config: the sources, seed and optional limit.
        data_dir: where the sources' files are (see ``mmgen.data.sources.resolve_root``).
        download: fetch missing source files from the official mirrors.
        overwrite: replace an existing ``out``.
        on_progress: called with the number of tuples written after every chunk.

    Raises:
        ValueError: the sources differ in their number of classes, or share no class.
        FileNotFoundError: a source's files were not found.
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    config = config or PairConfig()
    h5io.check_output(out, overwrite)
    modalities = names.derive_modality_names(list(config.sources))
    data: dict[str, list[SourceData]] = {
        split: [
            load_split(
                spec,
                split,
                data_dir=data_dir,
                download=download,
                limit=config.limit,
                classes=config.classes[index] if config.classes else None,
            )
            for index, spec in enumerate(config.sources)
        ]
        for split in h5io.SPLITS
    }
    class_counts = {d.name: d.num_classes for d in data["train"]}
    if len(set(class_counts.values())) > 1:
        listing = ", ".join(f"{name} has {count}" for name, count in class_counts.items())
        raise UsageError(
            f"the sources disagree on the number of classes: {listing}; "
            "pair sources with the same class set"
        )
    num_classes = data["train"][0].num_classes
    pairs = {}
    for split, split_data in data.items():
        key = SPLIT_KEYS[split]
        pairs[split] = pair_indices(
            [d.labels for d in split_data],
            num_classes,
            lambda source, label, key=key: rng.numpy_stream(config.seed, key, source + 1, label),
        )
        if len(pairs[split][0]) == 0:
            raise UsageError(
                f"the {split} splits of {', '.join(config.sources)} share no class; "
                "pair sources with the same class set (or raise --limit)"
            )
    sources = {
        name: ModalitySource(
            name=train.name,
            class_names=tuple(train.class_names),
            files={**train.files, **test.files},
            root=absolute(train.root),
            image_shape=train.image_shape,
            classes=train.classes,
        )
        for name, train, test in zip(modalities, data["train"], data["test"], strict=True)
    }
    header = DatasetHeader(
        kind="naive",
        modalities=tuple(modalities),
        sources=sources,
        num_classes=num_classes,
        class_names=tuple(data["train"][0].class_names),
        latent_dim=0,
        seed=config.seed,
        config=to_dict(config),
        environment=environment("cpu"),
    )
    extra = tuple(h5io.Field(f"source_index/{m}", np.dtype(np.int64)) for m in modalities)
    fields = h5io.standard_fields(header.image_shapes, "uint8", 0, extra)
    sizes = {split: len(p[0]) for split, p in pairs.items()}
    with h5io.create_dataset(out, header, sizes, fields, overwrite) as writer:
        for split, split_data in data.items():
            for start in range(0, sizes[split], COPY_ROWS):
                stop = min(start + COPY_ROWS, sizes[split])
                rows: dict[str, np.ndarray] = {}
                for name, source_data, index in zip(
                    modalities, split_data, pairs[split], strict=True
                ):
                    rows[f"images/{name}"] = to_stored(source_data.images[index[start:stop]])
                    rows[f"source_index/{name}"] = index[start:stop]
                rows["labels"] = split_data[0].labels[pairs[split][0][start:stop]]
                writer.append(split, rows)
                if on_progress is not None:
                    on_progress(stop - start)
    log.info("wrote %s (%s)", out, sizes)
    return Path(out)
