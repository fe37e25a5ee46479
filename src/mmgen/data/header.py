"""The typed header of an mmgen dataset file: what the root attributes of the HDF5 file say.

Every writer (``generate``, ``shuffle``, ``pair``) builds one :class:`DatasetHeader`; the file's
root attributes are written from it and read back into it, validated both ways, so that no reader
guesses a missing value. ``docs/format.md`` documents every field.

Schema versions:
    1: the first layout: no ``environment``; checkpoint and parent paths as the writer was
       given them (possibly relative to its working directory).
    2: adds ``environment`` (where the file was computed; optional for readers, since it only
       informs); checkpoint and parent paths are absolute. Since issue #10 a source record may
       hold ``image_shape`` ``[C, H, W]``; it is written only when the shape is not 1×28×28, so
       grey 28×28 files keep their bytes, and a record without it (every file written before)
       reads as 1×28×28.
    3: a source record may hold ``classes``: the source's own index of each class the file
       uses, in label order (``--classes``; label k is the source's class ``classes[k]``). A
       record without it (every file of schema 1 and 2, and every file of all classes) means
       every class of the source, in its own order.
All read into the same :class:`DatasetHeader`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from mmgen import __version__, rng
from mmgen.data.names import check_modality_names
from mmgen.data.shapes import DEFAULT_IMAGE_SHAPE, ImageShape, check_image_shape
from mmgen.errors import UsageError

FORMAT = "mmgen"
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
KINDS = ("entangled", "mixed", "naive")
JSON_ATTRS = (
    "modalities",
    "sources",
    "class_names",
    "config",
    "parent",
    "environment",
    "nuisance",
)
# Attributes every readable file has (``parent``, written for mixed files, only informs).
REQUIRED_ATTRS = (
    "format",
    "schema_version",
    "mmgen_version",
    "kind",
    "modalities",
    "sources",
    "num_classes",
    "class_names",
    "latent_dim",
    "has_latent",
    "seed",
    "config",
)


class SourceIdentity(NamedTuple):
    """A source spec and its ``--classes`` selection (``None``: every class, in its order).

    The one identity carried from ``train-cvae`` through ``generate`` and ``pair`` into the
    file's header and on to ``evaluate``'s classifiers: two files judged by the same classifier
    have the same identity.
    """

    spec: str
    classes: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        """``spec``, or ``spec[3,1,7]`` for a selection: a key in reports and cache names."""
        if self.classes is None:
            return self.spec
        return f"{self.spec}[{','.join(map(str, self.classes))}]"


@dataclass(frozen=True)
class ModalitySource:
    """Where one modality's images came from."""

    name: str  # source spec: "mnist", "fashion-mnist" or "idx:/absolute/folder"
    class_names: tuple[str, ...] = ()  # the source's own class names
    files: Mapping[str, str] = field(default_factory=dict)  # source file → SHA-256
    checkpoint: str = ""  # entangled/mixed: the CVAE folder that decoded it (absolute)
    checkpoint_sha256: str = ""  # SHA-256 of that folder's weights.pt: the exact decoder
    root: str = ""  # naive: the folder the real images were read from
    image_shape: ImageShape = DEFAULT_IMAGE_SHAPE  # (C, H, W) of this modality's images
    # --classes: the source's index of each class used, in label order; None: every class.
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        shape = check_image_shape(self.image_shape, f"the image shape of source {self.name!r}")
        object.__setattr__(self, "image_shape", shape)
        if self.classes is not None:
            if not self.classes or not all(
                isinstance(k, int | np.integer) and not isinstance(k, bool) and k >= 0
                for k in self.classes
            ):
                raise UsageError(
                    f"the classes of source {self.name!r} must be source class indices, "
                    f"got {self.classes!r}"
                )
            object.__setattr__(self, "classes", tuple(int(k) for k in self.classes))

    @property
    def identity(self) -> SourceIdentity:
        """The source and its class selection: what the classifier judging it is trained on."""
        return SourceIdentity(self.name, self.classes)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values; empty optional fields and a 1×28×28 shape are left out."""
        record: dict[str, Any] = {
            "name": self.name,
            "class_names": list(self.class_names),
            "files": dict(self.files),
        }
        for key in ("checkpoint", "checkpoint_sha256", "root"):
            if getattr(self, key):
                record[key] = getattr(self, key)
        if self.classes is not None:
            record["classes"] = list(self.classes)
        if self.image_shape != DEFAULT_IMAGE_SHAPE:
            record["image_shape"] = list(self.image_shape)
        return record


@dataclass(frozen=True)
class DatasetHeader:
    """The root attributes of an mmgen file, typed and validated (``docs/format.md``)."""

    kind: str  # entangled (MNIST-E) | mixed (MNIST-ME) | naive (real images paired by class)
    modalities: tuple[str, ...]  # names under images/, in order (mmgen.data.names rule)
    sources: Mapping[str, ModalitySource]  # modality → where its images came from
    num_classes: int  # C; labels are 0 .. C-1
    class_names: tuple[str, ...]  # C names (the first modality's)
    latent_dim: int  # d of the stored true codes z; 0 when there are none (naive)
    seed: int  # the seed of the command that wrote the file
    config: Mapping[str, Any]  # that command's config (GenerateConfig, MixConfig, PairConfig)
    parent: Mapping[str, Any] | None = None  # mixed: the entangled file (path, sha256, ...)
    environment: Mapping[str, Any] = field(default_factory=dict)  # mmgen.device.environment
    # PolyMNIST-style files (mmgen.polymnist): how each modality was composited on its
    # background and what the per-tuple ``nuisance/<m>`` rows mean; None for other files.
    nuisance: Mapping[str, Any] | None = None
    mmgen_version: str = __version__
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.kind not in KINDS:
            raise UsageError(f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if len(self.modalities) < 2:
            raise UsageError(f"a dataset needs at least two modalities, got {self.modalities}")
        if self.schema_version >= 2:
            check_modality_names(self.modalities)
        else:  # schema 1 allowed any name without '/': such files still read
            _check_legacy_names(self.modalities)
        if set(self.sources) != set(self.modalities):
            raise UsageError(
                f"sources are recorded for {sorted(self.sources)}, "
                f"but the modalities are {list(self.modalities)}"
            )
        for name in ("num_classes", "latent_dim", "seed", "schema_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise UsageError(f"{name} must be an integer, got {value!r}")
        if self.num_classes < 1 or len(self.class_names) != self.num_classes:
            raise UsageError(
                f"num_classes is {self.num_classes} but {len(self.class_names)} class names "
                "are given"
            )
        if self.latent_dim < 0 or (self.kind == "naive") != (self.latent_dim == 0):
            raise UsageError(
                f"a {self.kind} dataset cannot have latent_dim {self.latent_dim} (naive files "
                "store no code: 0; entangled and mixed files store z: >= 1)"
            )
        if self.parent is not None and self.kind != "mixed":
            raise UsageError(f"a {self.kind} dataset has no parent file; only mixed ones do")
        check_seed(self.seed)
        for name in ("config", "parent", "environment", "nuisance"):
            _check_json(name, getattr(self, name))
        if self.nuisance is not None and set(self.nuisance.get("backgrounds", {})) != set(
            self.modalities
        ):
            raise UsageError(
                f"the nuisance attribute records backgrounds for "
                f"{sorted(self.nuisance.get('backgrounds', {}))}, but the modalities are "
                f"{list(self.modalities)}"
            )

    @property
    def image_shapes(self) -> dict[str, ImageShape]:
        """Modality → ``(C, H, W)`` of its images (1×28×28 for files written before #10)."""
        return {m: self.sources[m].image_shape for m in self.modalities}

    @property
    def has_nuisance(self) -> bool:
        """Whether every split stores ``nuisance/<m>`` for every modality (PolyMNIST-style)."""
        return self.nuisance is not None

    @property
    def has_latent(self) -> bool:
        """Whether every split stores ``z`` and ``code_index``."""
        return self.latent_dim > 0

    def to_attrs(self) -> dict[str, Any]:
        """The root attributes as h5py stores them (JSON fields as strings)."""
        values: dict[str, Any] = {
            "format": FORMAT,
            "schema_version": self.schema_version,
            "mmgen_version": self.mmgen_version,
            "kind": self.kind,
            "modalities": list(self.modalities),
            "sources": {m: self.sources[m].to_json() for m in self.modalities},
            "num_classes": int(self.num_classes),
            "class_names": list(self.class_names),
            "latent_dim": int(self.latent_dim),
            "has_latent": self.has_latent,
            "seed": int(self.seed),
            "config": dict(self.config),
            "environment": dict(self.environment),
        }
        if self.parent is not None:
            values["parent"] = dict(self.parent)
        if self.nuisance is not None:
            values["nuisance"] = dict(self.nuisance)
        return encode_attrs(values)

    def write(self, handle: h5py.File) -> None:
        """Store the header as the root attributes of an open file."""
        for key, value in self.to_attrs().items():
            handle.attrs[key] = value


def check_seed(seed: int) -> None:
    """Raise ``UsageError`` naming ``--seed`` unless it is in ``0 … 2**63 − 1`` (``mmgen.rng``)."""
    rng.check_seed(seed)


def _check_legacy_names(modalities: tuple[str, ...]) -> None:
    for name in modalities:
        if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
            raise UsageError(f"invalid modality name {name!r}")
    if len(set(modalities)) != len(modalities):
        raise UsageError(f"modality names must be unique, got {list(modalities)}")


def _check_json(name: str, value: Any) -> None:
    """Refuse values that standard JSON cannot hold (``inf``, ``nan``, objects)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{name} holds a value standard JSON cannot store ({error})") from None


def encode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Plain values → values h5py stores (JSON fields encoded as strings, finite numbers only)."""
    return {
        key: json.dumps(value, sort_keys=True, allow_nan=False) if key in JSON_ATTRS else value
        for key, value in attrs.items()
    }


def decode_attrs(attrs: h5py.AttributeManager | Mapping[str, Any]) -> dict[str, Any]:
    """h5py root attributes → plain Python values (JSON fields decoded)."""
    result: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in JSON_ATTRS and isinstance(value, str):
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        result[key] = value
    return result


def header_from_attrs(attrs: h5py.AttributeManager, path: Path | str) -> DatasetHeader:
    """Read and validate the header of an open mmgen file (schema 1, 2 or 3).

    Raises:
        UsageError: one line naming ``path`` and what is missing or wrong.
    """
    try:
        values = decode_attrs(attrs)
    except (ValueError, TypeError) as error:
        raise UsageError(f"{path}: a root attribute is not valid JSON ({error})") from None
    if values.get("format") != FORMAT:
        raise UsageError(
            f"{path} is an HDF5 file but not an mmgen dataset (no format='mmgen' attribute); "
            "make one with mmgen generate or mmgen shuffle"
        )
    version = values.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UsageError(
            f"{path} uses schema version {version!r}; this mmgen reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))} (a newer file needs a newer mmgen)"
        )
    missing = [key for key in REQUIRED_ATTRS if key not in values]
    if missing:
        raise UsageError(
            f"{path} looks like an mmgen file but lacks the root attribute(s) "
            f"{', '.join(missing)}; it is damaged or was not written by mmgen: regenerate it"
        )
    try:
        sources = values["sources"]
        header = DatasetHeader(
            kind=values["kind"],
            modalities=tuple(values["modalities"]),
            sources={m: _source_from_json(m, sources.get(m)) for m in values["modalities"]},
            num_classes=values["num_classes"],
            class_names=tuple(str(n) for n in values["class_names"]),
            latent_dim=values["latent_dim"],
            seed=values["seed"],
            config=values["config"],
            parent=values.get("parent"),
            environment=values.get("environment", {}),
            nuisance=values.get("nuisance"),
            mmgen_version=str(values["mmgen_version"]),
            schema_version=version,
        )
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None
    except (AttributeError, TypeError, KeyError) as error:
        raise UsageError(f"{path}: a root attribute has the wrong type ({error!r})") from None
    if bool(values["has_latent"]) != header.has_latent:
        raise UsageError(
            f"{path}: has_latent is {values['has_latent']} but latent_dim is {header.latent_dim}"
        )
    return header


def _source_from_json(modality: str, entry: Any) -> ModalitySource:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise UsageError(f"the sources attribute records no source name for {modality!r}")
    known = {f.name for f in fields(ModalitySource)}
    values = {key: value for key, value in entry.items() if key in known}
    values["class_names"] = tuple(values.get("class_names", ()))
    if values.get("classes") is not None:
        if not isinstance(values["classes"], list):
            raise UsageError(f"the classes recorded for {modality!r} are not a list")
        values["classes"] = tuple(values["classes"])
    if "image_shape" in values:
        values["image_shape"] = check_image_shape(
            values["image_shape"], f"the image_shape recorded for {modality!r}"
        )
    return ModalitySource(**values)


def absolute(path: Path | str) -> str:
    """``path`` as an absolute string, so a reader can find it from anywhere."""
    return str(Path(path).resolve())
