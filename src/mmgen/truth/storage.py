"""The truth's sidecar: ``<file>.truth.h5`` beside the dataset (docs/format.md, "Ground truth").

A sidecar, not a group inside the dataset: writing into the dataset would change its bytes and
so its SHA-256, which names it everywhere (evaluate's job keys, a mixed file's ``parent``). The
sidecar records the SHA-256 of the dataset it describes; a sidecar of another version of the
file is stale and ignored. Written atomically (``mmgen.atomic``), with no timestamps.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np

from mmgen.atomic import atomic_path
from mmgen.checkpoint import file_sha256
from mmgen.errors import UsageError
from mmgen.truth.oracle import VERSION, Truth

log = logging.getLogger(__name__)

FORMAT = "mmgen-truth"
SUFFIX = ".truth.h5"


def truth_path(path: Path | str) -> Path:
    """The sidecar of dataset ``path``: ``<path>.truth.h5`` (``mnist-e.h5.truth.h5``)."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def store_truth(path: Path | str, truth: Truth) -> Path:
    """Write ``truth`` as the sidecar of dataset ``path`` (atomically); return its path."""
    out = truth_path(path)
    with atomic_path(out) as tmp, h5py.File(tmp, "w", track_order=True) as handle:
        handle.attrs["format"] = FORMAT
        handle.attrs["version"] = VERSION
        handle.attrs["dataset"] = Path(path).name
        handle.attrs["summary"] = json.dumps(truth.summary, sort_keys=True, allow_nan=False)
        for name, values in sorted(truth.per_tuple.items()):
            handle.create_dataset(
                f"per_tuple/{name}", data=np.asarray(values, np.float64), track_times=False
            )
    log.info("wrote %s", out)
    return out


def load_truth(path: Path | str, check: bool = True) -> Truth | None:
    """The stored truth of dataset ``path``, or ``None`` when there is none or it is stale.

    Args:
        path: the dataset.
        check: compare the recorded SHA-256 with the dataset's (a stale sidecar gives None).
    """
    sidecar = truth_path(path)
    if not sidecar.is_file():
        return None
    try:
        with h5py.File(sidecar, "r") as handle:
            if handle.attrs.get("format") != FORMAT:
                raise UsageError(f"{sidecar} is not an mmgen truth file; remove it")
            if int(handle.attrs["version"]) != VERSION:
                log.warning(
                    "%s has truth version %s; recompute it", sidecar, handle.attrs["version"]
                )
                return None
            summary = json.loads(handle.attrs["summary"])
            per_tuple: dict[str, np.ndarray] = {}
            handle["per_tuple"].visititems(
                lambda name, item: (
                    per_tuple.__setitem__(name, item[:]) if isinstance(item, h5py.Dataset) else None
                )
            )
    except OSError:
        raise UsageError(f"{sidecar} is not a readable HDF5 file; remove it") from None
    if check and summary.get("dataset_sha256") != file_sha256(path):
        log.warning("%s describes another version of %s: stale", sidecar, path)
        return None
    return Truth(summary=summary, per_tuple=per_tuple)
