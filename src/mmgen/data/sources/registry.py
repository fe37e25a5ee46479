"""The named sources (:data:`SOURCES`) and the spec parser (:func:`get_source`).

Class names are torchvision's where it has them (Fashion-MNIST, KMNIST, EMNIST, CIFAR's meta
files), except that every digit set is named "0".."9" (torchvision writes MNIST's as
"0 - zero"...) so that digit sources agree with each other and with today's MNIST checkpoints.
EMNIST letters drops torchvision's unused class 0 ("N/A"): its labels 1..26 become 0..25.
"""

from __future__ import annotations

import string
from collections.abc import Callable

from mmgen.errors import UsageError

from .arrays import NpzSource
from .base import Source, digit_names
from .digits import DigitsSource
from .folder import ImageFolderSource
from .mnist import IdxFolderSource, IdxSource
from .torchvision_sets import TorchvisionSource


def _emnist(split: str, class_names: tuple[str, ...], label_offset: int = 0) -> IdxSource:
    prefix = f"emnist-{split}"
    return IdxSource(
        name=prefix,
        folder="EMNIST",
        class_names=class_names,
        split_files={
            name: (f"{prefix}-{name}-images-idx3-ubyte", f"{prefix}-{name}-labels-idx1-ubyte")
            for name in ("train", "test")
        },
        torchvision_class="EMNIST",
        torchvision_args=(("split", split),),
        label_offset=label_offset,
        transposed=True,
    )


def _cifar(name: str, torchvision_class: str, folder: str, train: tuple[str, ...],
           meta: str) -> TorchvisionSource:  # fmt: skip
    return TorchvisionSource(
        name=name,
        folder=folder,  # torchvision's base_folder, created by its archive
        torchvision_class=torchvision_class,
        split_files={"train": train, "test": ("test_batch",) if name == "cifar10" else ("test",)},
        shared_files=(meta,),
        channels_last=True,
    )


SOURCES: dict[str, Source] = {
    source.name: source
    for source in (
        IdxSource(
            name="mnist", folder="MNIST", class_names=digit_names(), torchvision_class="MNIST"
        ),
        IdxSource(
            name="fashion-mnist",
            folder="FashionMNIST",
            # torchvision's FashionMNIST.classes
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
            ),  # fmt: skip
            torchvision_class="FashionMNIST",
        ),
        IdxSource(
            name="kmnist",
            folder="KMNIST",
            class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            torchvision_class="KMNIST",
        ),
        IdxSource(
            name="qmnist",
            folder="QMNIST",
            class_names=digit_names(),
            split_files={
                name: (f"qmnist-{name}-images-idx3-ubyte", f"qmnist-{name}-labels-idx2-int")
                for name in ("train", "test")
            },
            torchvision_class="QMNIST",
            label_column=0,  # the other seven columns: NIST writer, series, ...
        ),
        _emnist("digits", digit_names()),
        _emnist("letters", tuple(string.ascii_lowercase), label_offset=-1),
        TorchvisionSource(
            name="svhn",
            folder="SVHN",
            torchvision_class="SVHN",
            split_files={"train": ("train_32x32.mat",), "test": ("test_32x32.mat",)},
            class_names=digit_names(),  # torchvision already maps SVHN's label 10 to 0
            split_by_name=True,
            folder_is_root=True,
            requires=(("scipy", "svhn"),),
        ),
        _cifar(
            "cifar10",
            "CIFAR10",
            "cifar-10-batches-py",
            tuple(f"data_batch_{k}" for k in range(1, 6)),
            "batches.meta",
        ),  # fmt: skip
        _cifar("cifar100", "CIFAR100", "cifar-100-python", ("train",), "meta"),
        DigitsSource(name="digits", folder="", requires=(("sklearn", "digits"),)),
    )
}

# spec prefix -> (builder from the path, what the path is, an example)
PREFIXES: dict[str, tuple[Callable[[str], Source], str]] = {
    "idx:": (IdxFolderSource.from_folder, "a folder holding the four MNIST IDX files"),
    "folder:": (ImageFolderSource.from_folder, "an ImageFolder tree PATH/{train,test}/<class>/"),
    "npz:": (NpzSource.from_file, "a .npz file with x_train, y_train, x_test, y_test"),
}


def get_source(spec: str) -> Source:
    """Return the source named by ``spec``: a key of :data:`SOURCES`, or ``PREFIX:PATH``.

    Raises:
        UsageError: ``spec`` names no source, or a prefix without a path.
    """
    if spec in SOURCES:
        return SOURCES[spec]
    for prefix, (build, what) in PREFIXES.items():
        if spec.startswith(prefix):
            path = spec.removeprefix(prefix)
            if not path:
                raise UsageError(
                    f"source {prefix!r} names no path; write {prefix}PATH, with PATH {what}"
                )
            return build(path)
    prefixes = ", ".join(f"{prefix}PATH ({what})" for prefix, (_, what) in PREFIXES.items())
    raise UsageError(f"unknown source {spec!r}; valid sources: {', '.join(SOURCES)}, or {prefixes}")
