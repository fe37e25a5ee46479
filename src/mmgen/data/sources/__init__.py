"""Uni-modal sources: any labelled image set, by name, folder or array file.

The M²VAE paper (Korthals et al.) builds MNIST-E "from distinct and disconnected uni-modal
sets": any labelled image sets that share their classes. A source is named by a spec
(``docs/sources.md``):

- a name of :data:`SOURCES`: ``mnist``, ``fashion-mnist``, ``kmnist``, ``qmnist``,
  ``emnist-digits``, ``emnist-letters`` (:mod:`.mnist`), ``svhn``, ``cifar10``, ``cifar100``
  (:mod:`.torchvision_sets`), all read and downloaded by torchvision's classes, and ``digits``
  (:mod:`.digits`, scikit-learn's bundled 8×8 digits);
- ``idx:PATH`` (four MNIST IDX files), ``folder:PATH`` (:mod:`.folder`, ImageFolder layout),
  ``npz:PATH`` (:mod:`.arrays`).

Where named sources' files are looked for, first match wins: ``--data-dir``, ``MMGEN_DATA_DIR``,
the user cache, Debian's ``/usr/share/datasets`` (MNIST family); only with ``--download``,
torchvision's download into the cache (:mod:`.places`). Every split is read as
:class:`SourceData`: images ``(N, C, H, W)`` uint8, labels, class names and a SHA-256 per file
read; ``classes`` (``--classes``) keeps and reorders a subset (:mod:`.classes`).
"""

from .base import SPLITS, Source, SourceData
from .classes import parse_classes
from .idx import read_idx
from .loading import load_split, resolve_root
from .places import DATA_DIR_ENV, cache_dir
from .registry import SOURCES, get_source

__all__ = [
    "DATA_DIR_ENV",
    "SOURCES",
    "SPLITS",
    "Source",
    "SourceData",
    "cache_dir",
    "get_source",
    "load_split",
    "parse_classes",
    "read_idx",
    "resolve_root",
]
