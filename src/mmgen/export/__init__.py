"""``mmgen export``: an mmgen file in the formats the field's tools load as they are.

One module per format, each with ``write(reader, out, on_progress)``:

* ``polymnist`` (:mod:`mmgen.export.polymnist`): MoPoE's PNG folders and MultiVae's
  ``MMNIST/{split}/m{k}.pt`` tensors;
* ``hf`` (:mod:`mmgen.export.hf`): parquet files that ``datasets.load_dataset`` reads;
* ``webdataset`` (:mod:`mmgen.export.webdataset`): tar shards, one example per tuple.

Every export is one folder, written whole or not at all (:func:`mmgen.atomic.atomic_folder`),
with its dataset card (:mod:`mmgen.export.card`) inside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from mmgen.atomic import atomic_folder
from mmgen.errors import UsageError
from mmgen.export import card as cards
from mmgen.export import hf, polymnist, webdataset
from mmgen.export.tuples import SplitReader

logger = logging.getLogger(__name__)

Writer = Callable[[SplitReader, Path, Callable[[int], None]], None]

FORMATS: dict[str, tuple[Writer, str]] = {
    "polymnist": (
        polymnist.write,
        "{split}/m{k}/{i}.{label}.png (MoPoE) and MMNIST/{split}/m{k}.pt + labels.pt "
        "(MultiVae's MMNISTDataset)",
    ),
    "hf": (hf.write, "data/{split}-00000-of-00001.parquet (datasets.load_dataset('parquet'))"),
    "webdataset": (webdataset.write, "{split}-{shard:06d}.tar shards, one example per tuple"),
}


def export(
    path: Path | str,
    to: str,
    out: Path | str,
    overwrite: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """Export the mmgen file ``path`` as format ``to`` into the folder ``out``, card included.

    Raises:
        UsageError: an unknown format, a file that is not an mmgen file, images the format
            cannot hold, or ``out`` exists without ``overwrite``.
    """
    if to not in FORMATS:
        raise UsageError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    path, out = Path(path), Path(out)
    if out.exists() and not overwrite:
        raise UsageError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; an export is a folder")
    write, layout = FORMATS[to]
    progress = on_progress or (lambda rows: None)
    with SplitReader(path) as reader:
        header = reader.header
        with atomic_folder(out) as tmp:
            write(reader, tmp, progress)
            export_record = {"format": to, "layout": layout, "source_file": path.name}
            if to == "polymnist":
                export_record["modality_names"] = polymnist.modality_map(header.modalities)
            card = cards.make_card(path, cards.hash_folder(tmp), export_record)
            cards.write_card(card, tmp / cards.CARD_JSON, tmp / cards.CARD_MD)
    logger.info("exported %s as %s to %s", path, to, out)
    return out
