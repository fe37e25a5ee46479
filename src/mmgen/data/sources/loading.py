"""Find a source's files (:func:`resolve_root`) and read one split of it (:func:`load_split`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmgen.errors import UsageError

from . import classes as class_choice
from .base import SPLITS, Source, SourceData
from .places import cache_dir
from .registry import get_source

logger = logging.getLogger(__name__)


def resolve_root(
    source: str | Source,
    data_dir: str | Path | None = None,
    download: bool = False,
    mirrors: list[str] | None = None,
) -> Path:
    """Return the folder that holds every file of ``source``.

    Searches ``data_dir``, ``MMGEN_DATA_DIR``, the user cache and (MNIST family) Debian's
    folder, in that order; with ``download`` and nothing found, runs torchvision's download
    into the cache.

    Args:
        source: a :class:`Source` or a spec for :func:`get_source`.
        data_dir: the data root given explicitly (``--data-dir``); searched first.
        download: fetch the files through torchvision when no folder holds them.
        mirrors: base URLs to fetch MNIST, Fashion-MNIST or KMNIST from instead of
            torchvision's (else ``MMGEN_MIRRORS``).

    Raises:
        FileNotFoundError: no folder holds the files and they were not (or could not be)
            downloaded; the message names every place searched, on one line.
        UsageError: a Python package the source needs is missing (names the extra).
    """
    source = get_source(source) if isinstance(source, str) else source
    source.require_extras()
    places = source.search_places(data_dir)
    for _, folder in places:
        if folder is not None and not source.missing_files(folder):
            logger.info("reading %s from %s", source.name, folder)
            return folder
    if download and source.can_download:
        cache = cache_dir()
        made = [folder for folder in (cache, *cache.parents) if not folder.exists()]
        cache.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s into %s through torchvision", source.name, cache)
        try:
            return source.download(cache, mirrors)
        except BaseException:
            for folder in made:  # a failed download leaves no empty cache folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
    raise source.not_found(places)


def load_split(
    spec: str | Source,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    mirrors: list[str] | None = None,
    classes: Sequence[str | int] | None = None,
) -> SourceData:
    """Read one split of a source, validated, with the checksums of its files.

    Args:
        spec: a :class:`Source` or a spec for :func:`get_source` (``mnist``, ``svhn``,
            ``folder:PATH``...).
        split: ``"train"`` or ``"test"``.
        data_dir: the data root given explicitly (``--data-dir``); see :func:`resolve_root`.
        download: fetch the files through torchvision when no folder holds them.
        limit: keep only the first ``limit`` examples (after ``classes``; all when ``None``).
        mirrors: base URLs to fetch from instead of torchvision's (MNIST, Fashion-MNIST, KMNIST).
        classes: names or indices of the classes to keep, in the order wanted; they are
            relabelled 0..K-1 in that order (``None``: every class, as they are).

    Raises:
        UsageError: bad ``split``, ``limit`` or ``classes``, or files that are not valid data.
        FileNotFoundError: the files were not found (see :func:`resolve_root`).
    """
    source = get_source(spec) if isinstance(spec, str) else spec
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise UsageError(f"limit must be a positive number of examples, got {limit}")
    folder = resolve_root(source, data_dir, download=download, mirrors=mirrors)
    read = source.read(folder, split)
    images, labels, class_names = read.images, read.labels, read.class_names
    if labels.size and labels.max() >= len(class_names):
        raise UsageError(
            f"{source.name} ({folder}) holds label {labels.max()} in its {split} split but has "
            f"{len(class_names)} classes (0..{len(class_names) - 1}); the files belong to "
            "another dataset or are corrupt: replace them"
        )
    chosen = None
    if classes is not None:
        chosen = class_choice.class_indices(source.name, class_names, classes)
        keep, labels = class_choice.select(labels, chosen)
        images = images[keep]
        class_names = tuple(class_names[index] for index in chosen)
    # Copy the kept slice: the arrays become writable and the file buffers are freed.
    return SourceData(
        name=source.name,
        split=split,
        images=np.array(images[:limit], dtype=np.uint8),
        labels=np.array(labels[:limit], dtype=np.int64),
        class_names=tuple(class_names),
        files=read.files,
        root=str(folder),
        classes=chosen,
        details=read.details,
    )
