"""Uni-modal sources: MNIST-like IDX datasets, where to find them, and how to fetch them.

The M²VAE paper (Korthals et al.) builds MNIST-E from two uni-modal sources, MNIST and
Fashion-MNIST. Both ship as four IDX files (LeCun et al.'s format: a big-endian header, then the
raw array) with the same names; they differ only in data: folder, class names, mirrors and
checksums. As in torchvision's ``datasets/mnist.py``, each source is therefore one instance of
:class:`Source` that differs only in those fields, kept in the registry :data:`SOURCES`; a plain
folder of the four files is a :class:`FolderSource` (spec ``idx:PATH``).

Where the files are looked for, first match wins (``docs/sources.md``):

1. ``data_dir`` (the CLI's ``--data-dir``): ``<data_dir>/<folder>/raw/``, torchvision's layout;
2. the environment variable ``MMGEN_DATA_DIR``, same layout;
3. the user cache, ``$XDG_CACHE_HOME/mmgen`` or ``~/.cache/mmgen``, same layout;
4. Debian's ``/usr/share/datasets/<name>/`` with the files directly in it
   (the package ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist/``);
5. only with ``download=True``: the official mirrors (``MMGEN_MIRRORS`` overrides them), into the
   cache, each file checked against its published MD5 and written atomically.

Every file may be raw or gzip-compressed (``.gz``); a folder is used only when it holds all four.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmgen.atomic import atomic_path
from mmgen.errors import UsageError

logger = logging.getLogger(__name__)

SPLITS = ("train", "test")
IMAGE_SHAPE = (28, 28)  # every model in mmgen is built for 28×28 grey images
DATA_DIR_ENV = "MMGEN_DATA_DIR"
MIRRORS_ENV = "MMGEN_MIRRORS"
# Debian's dataset packages install here; a module constant so that tests can point it elsewhere.
DEBIAN_DATASETS_DIR = Path("/usr/share/datasets")
DOWNLOAD_TIMEOUT_S = 60.0

# split -> (images file, labels file): the standard names, without the optional ".gz".
STANDARD_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# IDX type code (third byte of the magic number) -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, kw_only=True)
class Source:
    """One MNIST-like source: four IDX files in torchvision's layout, plus where to fetch them.

    Registered sources differ only in these fields; see :data:`SOURCES`.
    """

    name: str  # registry key, also the Debian folder name: "mnist", "fashion-mnist"
    folder: str  # torchvision's folder under a data root: "MNIST" → <root>/MNIST/raw/
    class_names: tuple[str, ...]  # index = label; empty: derive from the labels (max + 1)
    mirrors: tuple[str, ...] = ()  # base URLs that serve "<file>.gz"
    md5: dict[str, str] = field(default_factory=dict)  # "<file>.gz" -> MD5 of the official file
    split_files: dict[str, tuple[str, str]] = field(default_factory=lambda: dict(STANDARD_FILES))

    @property
    def file_names(self) -> tuple[str, ...]:
        """All files of the source (both splits), without the optional ``.gz``."""
        return tuple(name for split in SPLITS for name in self.split_files[split])

    @property
    def can_download(self) -> bool:
        """Whether the source lists mirrors and a checksum for every file."""
        return bool(self.mirrors) and all(f"{name}.gz" in self.md5 for name in self.file_names)

    def search_places(self, data_dir: str | Path | None = None) -> list[tuple[str, Path | None]]:
        """Return ``(label, folder)`` for every place searched, in order; ``None`` where unset.

        Args:
            data_dir: the explicit data root (``--data-dir``), or ``None``.
        """
        env_root = os.environ.get(DATA_DIR_ENV) or None
        given = self.raw_folder(data_dir) if data_dir else None
        from_env = self.raw_folder(env_root) if env_root else None
        places: list[tuple[str, Path | None]] = [
            ("--data-dir", given),
            (DATA_DIR_ENV, from_env),
            ("cache", self.raw_folder(cache_dir())),
            ("Debian", DEBIAN_DATASETS_DIR / self.name),
        ]
        if given is not None and given == from_env:
            # --data-dir was filled from the variable (a caller's envvar fallback): one place.
            places[:2] = [(f"--data-dir/{DATA_DIR_ENV}", given)]
        return places

    def how_to_supply(self) -> str:
        """One sentence telling the user how to make the files available."""
        names = ", ".join(self.file_names)
        hint = (
            f"put {names} (raw or .gz) in ROOT/{self.folder}/raw and pass --data-dir ROOT "
            f"or set {DATA_DIR_ENV}=ROOT"
        )
        if self.can_download:
            hint += f", or pass --download to fetch them into {self.raw_folder(cache_dir())}"
        return hint

    def raw_folder(self, root: str | Path) -> Path:
        """Return where this source keeps its files under the data root ``root``."""
        return Path(root).expanduser() / self.folder / "raw"


@dataclass(frozen=True, kw_only=True)
class FolderSource(Source):
    """A folder holding the four standard IDX files directly (spec ``idx:PATH``).

    Its classes are unnamed: their number is the largest label + 1, their names the digits.
    """

    location: Path  # the folder itself; nothing else is searched and nothing is downloaded

    @classmethod
    def from_folder(cls, path: str | Path) -> FolderSource:
        """Build the source for ``path`` (the folder need not exist yet)."""
        path = Path(path).expanduser()
        return cls(name=f"idx:{path}", folder=path.name, class_names=(), location=path)

    def search_places(self, data_dir: str | Path | None = None) -> list[tuple[str, Path | None]]:
        """Return the folder itself: an ``idx:`` source ignores ``data_dir`` and the cache."""
        return [("idx folder", self.location)]

    def how_to_supply(self) -> str:
        """One sentence telling the user how to make the files available."""
        return f"put {', '.join(self.file_names)} (raw or .gz) directly in {self.location}"


MNIST = Source(
    name="mnist",
    folder="MNIST",
    class_names=tuple(str(digit) for digit in range(10)),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
FASHION_MNIST = Source(
    name="fashion-mnist",
    folder="FashionMNIST",
    class_names=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
)
SOURCES: dict[str, Source] = {source.name: source for source in (MNIST, FASHION_MNIST)}


@dataclass(frozen=True, eq=False)
class SourceData:
    """One split of a source in memory, with what identifies the files it came from."""

    name: str  # source spec: "mnist", "fashion-mnist" or "idx:PATH"
    split: str  # "train" | "test"
    images: np.ndarray  # (N, C, H, W) uint8 levels (C = 1: grey, C = 3: RGB)
    labels: np.ndarray  # (N,) int64 in [0, num_classes)
    class_names: tuple[str, ...]  # index = label
    files: dict[str, str]  # standard file name (no ".gz") -> SHA-256 of its decompressed bytes
    root: str  # folder the files were read from

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image: the shape the models of this source are built for."""
        channels, height, width = self.images.shape[1:]
        return int(channels), int(height), int(width)

    @property
    def num_classes(self) -> int:
        """Number of classes of the source (not only those present in this split)."""
        return len(self.class_names)

    def as_tensors(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Levels ``x / 255`` as ``(N, C, H, W)`` float32 and labels ``(N,)``, on ``device``.

        The keys ``"images"`` and ``"labels"`` are what the CVAE and the classifiers train on.
        """
        images = torch.from_numpy(self.images).to(device).float().div_(255.0)
        return {"images": images, "labels": torch.from_numpy(self.labels).to(device)}

    def identity(self) -> dict[str, Any]:
        """Return a JSON-ready record of where these examples came from."""
        return {
            "name": self.name,
            "split": self.split,
            "root": self.root,
            "files": dict(self.files),
            "num_images": int(len(self.labels)),
        }


def get_source(spec: str) -> Source:
    """Return the source named by ``spec``: a key of :data:`SOURCES` or ``idx:PATH``.

    Raises:
        ValueError: ``spec`` names no source.
    """
    if spec in SOURCES:
        return SOURCES[spec]
    if spec.startswith("idx:"):
        path = spec.removeprefix("idx:")
        if not path:
            raise UsageError("source 'idx:' names no folder; write idx:PATH, e.g. idx:./my-data")
        return FolderSource.from_folder(path)
    raise UsageError(
        f"unknown source {spec!r}; valid sources: {', '.join(SOURCES)}, "
        "or idx:PATH for a folder holding the four IDX files"
    )


def cache_dir() -> Path:
    """Return mmgen's user cache folder: ``$XDG_CACHE_HOME/mmgen`` or ``~/.cache/mmgen``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "mmgen"


def resolve_root(
    source: str | Source,
    data_dir: str | Path | None = None,
    download: bool = False,
    mirrors: list[str] | None = None,
) -> Path:
    """Return the folder that holds all four files of ``source``.

    Searches ``data_dir``, ``MMGEN_DATA_DIR``, the user cache and Debian's folder in that order;
    with ``download`` and nothing found, fetches the missing files into the cache.

    Args:
        source: a :class:`Source` or a spec for :func:`get_source`.
        data_dir: the data root given explicitly (``--data-dir``); searched first.
        download: fetch the files from the mirrors when no folder holds them.
        mirrors: base URLs to fetch from instead of the source's own (else ``MMGEN_MIRRORS``).

    Raises:
        FileNotFoundError: no folder holds the files and they were not (or could not be)
            downloaded; the message names every place searched.
        ValueError: a downloaded file did not match its published checksum.
    """
    source = get_source(source) if isinstance(source, str) else source
    places = source.search_places(data_dir)
    for _, folder in places:
        if folder is not None and not _missing_files(source, folder):
            logger.info("reading %s from %s", source.name, folder)
            return folder
    if download and source.can_download:
        return _download(source, _mirror_urls(source, mirrors))
    searched = "; ".join(_describe_place(source, label, folder) for label, folder in places)
    raise FileNotFoundError(
        f"{source.name} files not found; searched {searched}. To fix: {source.how_to_supply()}"
    )


def load_split(
    spec: str | Source,
    split: str,
    data_dir: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    mirrors: list[str] | None = None,
) -> SourceData:
    """Read one split of a source, validated, with the checksums of its files.

    Args:
        spec: a :class:`Source` or a spec for :func:`get_source` (``mnist``, ``idx:PATH``...).
        split: ``"train"`` or ``"test"``.
        data_dir: the data root given explicitly (``--data-dir``); see :func:`resolve_root`.
        download: fetch the files from the mirrors when no folder holds them.
        limit: keep only the first ``limit`` examples (all when ``None``).
        mirrors: base URLs to fetch from instead of the source's own.

    Raises:
        ValueError: bad ``split`` or ``limit``, or files that are not valid IDX data for
            28×28 images with labels in range.
        FileNotFoundError: the files were not found (see :func:`resolve_root`).
    """
    source = get_source(spec) if isinstance(spec, str) else spec
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if limit is not None and limit <= 0:
        raise UsageError(f"limit must be a positive number of examples, got {limit}")
    folder = resolve_root(source, data_dir, download=download, mirrors=mirrors)
    images_name, labels_name = source.split_files[split]
    images_path, labels_path = _find_file(folder, images_name), _find_file(folder, labels_name)
    images, images_sha = _read_idx_with_sha(images_path)
    labels, labels_sha = _read_idx_with_sha(labels_path)
    _check_split(images, labels, images_path, labels_path)
    class_names = source.class_names or _class_names_from_labels(source, folder)
    if labels.max(initial=0) >= len(class_names):
        raise UsageError(
            f"{labels_path} holds label {labels.max()} but {source.name} has "
            f"{len(class_names)} classes (0..{len(class_names) - 1}); the file belongs to "
            "another dataset or is corrupt: replace it"
        )
    # Copy the kept slice: the arrays become writable and the decompressed buffer is freed.
    return SourceData(
        name=source.name,
        split=split,
        images=images[:limit, None].copy(),  # (N, 28, 28) → (N, 1, 28, 28)
        labels=labels[:limit].astype(np.int64),
        class_names=class_names,
        files={images_name: images_sha, labels_name: labels_sha},
        root=str(folder),
    )


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a NumPy array in native byte order.

    Args:
        path: the file; compression is detected from its content, not its name.

    Raises:
        ValueError: the file is not valid IDX data (bad magic number, unknown type code,
            truncated, trailing bytes, corrupt gzip); the message names the file.
    """
    array, _ = _read_idx_with_sha(Path(path))
    return array.copy()


def _read_idx_with_sha(path: Path) -> tuple[np.ndarray, str]:
    """Return a read-only view of the IDX data and the SHA-256 of the decompressed bytes."""
    data = path.read_bytes()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise UsageError(
                f"{path} is not a valid gzip file ({error}); the download or copy is "
                "incomplete: replace the file"
            ) from None
    return _parse_idx(data, path), hashlib.sha256(data).hexdigest()


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes: magic 0x0000TTDD (T type code, D number of dims), dims, then data."""
    if len(data) < 4 or data[:2] != b"\0\0":
        raise UsageError(
            f"{path} is not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 0000TTDD); check that it is one of the four MNIST-like files"
        )
    type_code, num_dims = data[2], data[3]
    if type_code not in IDX_DTYPES:
        valid = ", ".join(f"0x{code:02x}" for code in IDX_DTYPES)
        raise UsageError(f"{path} has unknown IDX type code 0x{type_code:02x}; valid: {valid}")
    if num_dims == 0:
        raise UsageError(f"{path} declares 0 dimensions; an IDX array needs at least one")
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise UsageError(f"{path} is truncated inside its header; replace the file")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=num_dims, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        shape = "×".join(str(d) for d in dims)
        raise UsageError(
            f"{path} {problem}: its header declares {shape} values ({expected} bytes) but "
            f"{actual} bytes follow; replace the file"
        )
    array = np.frombuffer(data, dtype, offset=header_size).reshape(dims)
    return array if dtype.itemsize == 1 else array.astype(dtype.newbyteorder("="))


def _check_split(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path):
    """Check shapes and types of one split: (N, 28, 28) uint8 images, (N,) uint8 labels."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise UsageError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}; mmgen needs "
            "(N, 28, 28) unsigned bytes: check that it is an images file"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UsageError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}; labels must be "
            "(N,) unsigned bytes: check that it is a labels file"
        )
    if len(images) != len(labels):
        raise UsageError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels; the two files come from different datasets: replace them"
        )


def _class_names_from_labels(source: Source, folder: Path) -> tuple[str, ...]:
    """Name the classes of an unnamed source "0".."K-1", K = largest label of both splits + 1."""
    label_paths = [_find_file(folder, source.split_files[split][1]) for split in SPLITS]
    largest = max(int(_read_idx_with_sha(path)[0].max(initial=0)) for path in label_paths)
    return tuple(str(label) for label in range(largest + 1))


def _find_file(folder: Path, name: str) -> Path:
    """Return ``folder/name`` or ``folder/name.gz``, preferring the raw file (no decompression)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"neither {name} nor {name}.gz is in {folder}")


def _missing_files(source: Source, folder: Path) -> list[str]:
    """Return the files of ``source`` that ``folder`` lacks in both raw and gzip form."""
    return [
        name
        for name in source.file_names
        if not (folder / name).is_file() and not (folder / f"{name}.gz").is_file()
    ]


def _describe_place(source: Source, label: str, folder: Path | None) -> str:
    """Describe one searched place for the not-found message."""
    if folder is None:
        return f"{label} (not set)"
    if not folder.is_dir():
        return f"{label} {folder} (no such folder)"
    missing = ", ".join(_missing_files(source, folder))
    return f"{label} {folder} (lacks {missing})"


def _mirror_urls(source: Source, mirrors: list[str] | None) -> list[str]:
    """Return the base URLs to try: ``mirrors``, else ``MMGEN_MIRRORS``, else the source's own.

    ``MMGEN_MIRRORS`` holds URLs separated by spaces or commas; ``{name}`` and ``{folder}`` in
    them become the source's name and folder, so one variable can serve several sources.
    """
    if mirrors is None:
        from_env = [url for url in re.split(r"[\s,]+", os.environ.get(MIRRORS_ENV, "")) if url]
        mirrors = from_env or list(source.mirrors)
    return [
        url.replace("{name}", source.name).replace("{folder}", source.folder) for url in mirrors
    ]


def _download(source: Source, mirrors: list[str]) -> Path:
    """Fetch the files that the cache lacks from ``mirrors``; return the cache folder."""
    folder = source.raw_folder(cache_dir())
    for name in _missing_files(source, folder):
        file_name = f"{name}.gz"
        _download_file(source, file_name, folder / file_name, mirrors)
    return folder


def _download_file(source: Source, file_name: str, destination: Path, mirrors: list[str]) -> None:
    """Download ``file_name`` from the first mirror that serves it with the published MD5."""
    md5 = source.md5[file_name]
    failures = []
    mismatch = False
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{file_name}"
        logger.info("downloading %s to %s", url, destination)
        try:
            with atomic_path(destination) as tmp:
                actual = _fetch(url, tmp)
                if actual != md5:
                    raise _ChecksumMismatch(f"MD5 {actual}, expected {md5}")
            return
        except _ChecksumMismatch as error:
            mismatch = True
            failures.append(f"{url} ({error})")
        except (OSError, http.client.HTTPException) as error:
            failures.append(f"{url} ({' '.join(str(error).split())})")
    reasons = "; ".join(failures) or "no mirror given"
    message = (
        f"could not download {source.name} file {file_name}: {reasons}. To fix: check the "
        f"network or the mirrors ({MIRRORS_ENV}), or copy the files by hand and pass --data-dir "
        "ROOT"
    )
    if mismatch:
        raise UsageError(message)
    raise FileNotFoundError(message)


def _fetch(url: str, destination: Path) -> str:
    """Stream ``url`` into ``destination``; return the MD5 of the bytes written."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        with destination.open("wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    return digest.hexdigest()


class _ChecksumMismatch(Exception):
    """A downloaded file's MD5 differs from the published one (the file is deleted)."""


__all__ = [
    "SOURCES",
    "FolderSource",
    "Source",
    "SourceData",
    "cache_dir",
    "get_source",
    "load_split",
    "read_idx",
    "resolve_root",
]
