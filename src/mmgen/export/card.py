"""The dataset card: what a file or an export is, where it came from, and the hash of each file.

A paper can cite a recipe and a hash instead of a link that will die: ``card.json`` records the
sources and their licences, the SHA-256 of every CVAE that decoded a modality, every setting
and seed of the command that wrote the file (its header), the class balance of every split,
the truth summary and quality gates where they are known, the mmgen version and environment,
and the SHA-256 of every file the card describes. ``card.md`` says the same for people.
:func:`verify` re-hashes the files against the card.

Beside an export the card is ``DIR/card.json`` (+ ``DIR/card.md``) and covers every other file
of ``DIR``; for a single file ``F`` it is ``F.card.json`` (+ ``F.card.md``) and covers ``F``.
The card is deterministic: no time stamp, keys sorted, so the same file gives the same card.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmgen import __version__
from mmgen.atomic import atomic_path
from mmgen.checkpoint import HISTORY_FILE, WEIGHTS_FILE, file_sha256
from mmgen.data.h5io import SPLITS, open_dataset
from mmgen.data.header import DatasetHeader, decode_attrs, header_from_attrs
from mmgen.data.shapes import describe
from mmgen.device import environment
from mmgen.errors import UsageError
from mmgen.truth.storage import load_truth, truth_path

logger = logging.getLogger(__name__)

CARD_VERSION = 1
CARD_JSON = "card.json"
CARD_MD = "card.md"
CARD_FILES = (CARD_JSON, CARD_MD)
UNKNOWN = "unknown"

# The licence each source's publisher states, and where. ``unknown`` where none is stated:
# check the source's terms before redistributing an export built from it.
LICENCES: dict[str, tuple[str, str]] = {
    # MNIST's page states none; its copyright holders' terms as the Keras/TensorFlow docs give them
    "mnist": (
        "CC BY-SA 3.0",
        "https://www.tensorflow.org/api_docs/python/tf/keras/datasets/mnist/load_data",
    ),
    "fashion-mnist": ("MIT", "https://github.com/zalandoresearch/fashion-mnist"),
    "kmnist": ("CC BY-SA 4.0", "https://github.com/rois-codh/kmnist"),
    "svhn": ("non-commercial use only", "http://ufldl.stanford.edu/housenumbers/"),
    "digits": (
        "CC BY 4.0",
        "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    ),
}


# PolyMNIST-E backgrounds (docs/polymnist.md): scikit-learn's two photos, whose licence and
# authors its package states in sklearn/datasets/images/README.txt. Any other background
# (skimage:NAME, a user file or folder) is ``unknown``: its owner's terms apply.
SKLEARN_README = "sklearn/datasets/images/README.txt (shipped with scikit-learn)"
BACKGROUND_LICENCES: dict[str, tuple[str, str]] = {
    "sklearn:china.jpg": ("CC BY 2.0, by danielbuechele (Flickr)", SKLEARN_README),
    "sklearn:flower.jpg": ("CC BY 2.0, by vultilion (Flickr)", SKLEARN_README),
}


def licence(source_name: str) -> dict[str, str]:
    """``{"licence", "stated_at"}`` for a source spec; ``unknown`` when mmgen knows none."""
    name, url = LICENCES.get(source_name, (UNKNOWN, ""))
    return {"licence": name, "stated_at": url}


def background_licences(attrs: Mapping[str, Any]) -> dict[str, dict[str, str]] | None:
    """Per modality of a PolyMNIST-E file, its background spec and licence; ``None`` without
    backgrounds (the header's ``nuisance`` attribute, docs/format.md)."""
    nuisance = attrs.get("nuisance")
    if not isinstance(nuisance, Mapping) or "backgrounds" not in nuisance:
        return None
    out = {}
    for modality, record in nuisance["backgrounds"].items():
        spec = str(record.get("spec", ""))
        jpg = spec.startswith("sklearn:") and not spec.endswith(".jpg")
        name, url = BACKGROUND_LICENCES.get(spec + ".jpg" if jpg else spec, (UNKNOWN, ""))
        out[modality] = {"spec": spec, "licence": name, "stated_at": url}
    return out


def class_balance(handle: Any, header: DatasetHeader) -> dict[str, dict[str, int]]:
    """Split → class name → number of tuples."""
    balance: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        counts = np.bincount(handle[split]["labels"][:], minlength=header.num_classes)
        balance[split] = {name: int(n) for name, n in zip(header.class_names, counts, strict=True)}
    return balance


def truth_summary(path: Path, attrs: Mapping[str, Any]) -> tuple[Any, str]:
    """The file's stored ground-truth summary (``mmgen truth``'s sidecar, docs/truth.md), or
    ``None`` with the reason: a card reads the truth, it never computes it."""
    if attrs.get("kind") == "naive":
        return None, "none: a naive pairing of real images has no known generating process"
    stored = load_truth(path)
    if stored is None:
        return None, f"no current truth stored beside the file (run: mmgen truth {path.name})"
    return json.loads(json.dumps(stored.summary)), f"from {truth_path(path).name}"


def quality_gates(header: DatasetHeader) -> tuple[dict[str, Any] | None, str]:
    """Per modality, the CVAE's last training record (test KL, ...) when its folder is here."""
    gates: dict[str, Any] = {}
    for modality in header.modalities:
        source = header.sources[modality]
        folder = Path(source.checkpoint) if source.checkpoint else None
        if folder is None or not (folder / WEIGHTS_FILE).is_file():
            continue
        if file_sha256(folder / WEIGHTS_FILE) != source.checkpoint_sha256:
            gates[modality] = {"note": f"{folder} now holds other weights than the file's"}
            continue
        record: dict[str, Any] = {"checkpoint": str(folder)}
        history = folder / HISTORY_FILE
        if history.is_file():
            epochs = json.loads(history.read_text()).get("epochs") or [{}]
            record["last_epoch"] = epochs[-1]
        model = folder / "model.json"
        if model.is_file():
            run = json.loads(model.read_text()).get("run", {})
            for key in ("collapsed", "posterior_collapse", "kl_threshold"):
                if key in run:
                    record[key] = run[key]
        gates[modality] = record
    if not gates:
        return None, "unavailable: no CVAE checkpoint of the file is on this machine"
    return gates, "the CVAEs' training records (checkpoint folders found on this machine)"


def describe_file(path: Path) -> dict[str, Any]:
    """Every part of a card that comes from the mmgen file itself."""
    with open_dataset(path) as handle:
        header = header_from_attrs(handle.attrs, path)
        attrs = decode_attrs(handle.attrs)
        sizes = {split: int(handle[split]["labels"].shape[0]) for split in SPLITS}
        balance = class_balance(handle, header)
    truth, truth_note = truth_summary(path, attrs)
    gates, gates_note = quality_gates(header)
    sources = {}
    for modality in header.modalities:
        record = header.sources[modality].to_json()
        record["image_shape"] = list(header.image_shapes[modality])
        sources[modality] = {**record, **licence(record["name"])}
    return {
        "dataset": {
            "file": path.name,
            "sha256": file_sha256(path),
            "kind": header.kind,
            "schema_version": header.schema_version,
            "written_by_mmgen": header.mmgen_version,
            "modalities": list(header.modalities),
            "num_classes": header.num_classes,
            "class_names": list(header.class_names),
            "latent_dim": header.latent_dim,
            "sizes": sizes,
        },
        "sources": sources,
        "backgrounds": background_licences(attrs),
        "settings": {"seed": header.seed, "config": dict(header.config), "parent": header.parent},
        "environment": dict(header.environment),
        "class_balance": balance,
        "truth": truth,
        "truth_note": truth_note,
        "quality_gates": gates,
        "quality_gates_note": gates_note,
    }


def make_card(
    path: Path, files: Mapping[str, str], export: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The card of the mmgen file ``path``, covering ``files`` (relative path → SHA-256)."""
    card = describe_file(path)
    card["card_version"] = CARD_VERSION
    card["export"] = dict(export) if export is not None else None
    card["card_written_by"] = {"mmgen": __version__, "environment": environment("cpu")}
    card["files"] = dict(sorted(files.items()))
    return card


def list_files(folder: Path) -> list[str]:
    """Relative POSIX paths of every file under ``folder`` except the card's own, sorted."""
    names = (item.relative_to(folder).as_posix() for item in folder.rglob("*") if item.is_file())
    return sorted(name for name in names if name not in CARD_FILES)


def hash_folder(folder: Path) -> dict[str, str]:
    """Relative POSIX path → SHA-256 of every file under ``folder`` except the card's own."""
    return {name: file_sha256(folder / name) for name in list_files(folder)}


def to_markdown(card: Mapping[str, Any]) -> str:
    """The card for people: the same facts as ``card.json``, as a page."""
    data = card["dataset"]
    lines = [
        f"# Dataset card: {data['file']}",
        "",
        f"An mmgen **{data['kind']}** dataset (schema {data['schema_version']}, written by mmgen "
        f"{data['written_by_mmgen']}): {len(data['modalities'])} modalities, "
        f"{data['num_classes']} classes, "
        + ", ".join(f"{n:,} {split} tuples" for split, n in data["sizes"].items())
        + f". SHA-256 of the file: `{data['sha256']}`.",
        "",
    ]
    if card.get("export"):
        export = card["export"]
        lines += [f"Exported as `{export['format']}`: {export.get('layout', '')}", ""]
    lines += [
        "## Sources and licences",
        "",
        "| modality | source | shape | licence | CVAE SHA-256 |",
    ]
    lines += ["|---|---|---|---|---|"]
    for modality, source in card["sources"].items():
        lines.append(
            f"| {modality} | {source['name']} | {describe(source['image_shape'])} | "
            f"{source['licence']} | {source.get('checkpoint_sha256', '') or '—'} |"
        )
    if card.get("backgrounds"):
        lines += ["", "| modality | background | licence | stated at |", "|---|---|---|---|"]
        lines += [
            f"| {m} | `{b['spec']}` | {b['licence']} | {b['stated_at'] or '—'} |"
            for m, b in card["backgrounds"].items()
        ]
    settings = card["settings"]
    lines += [
        "",
        "`unknown`: mmgen knows no licence for the source; check its terms before sharing.",
        "",
        "## Settings",
        "",
        f"Seed {settings['seed']}. Config: `{json.dumps(settings['config'], sort_keys=True)}`",
        "",
        "## Class balance",
        "",
        "| split | " + " | ".join(data["class_names"]) + " |",
        "|---" * (len(data["class_names"]) + 1) + "|",
    ]
    for split, counts in card["class_balance"].items():
        lines.append(f"| {split} | " + " | ".join(str(n) for n in counts.values()) + " |")
    lines += ["", "## Truth", "", card["truth_note"], ""]
    if card["truth"] is not None:
        lines += ["```json", json.dumps(card["truth"], indent=2, sort_keys=True), "```", ""]
    lines += ["## Quality gates", "", card["quality_gates_note"], ""]
    if card["quality_gates"] is not None:
        lines += ["```json", json.dumps(card["quality_gates"], indent=2, sort_keys=True), "```"]
    lines += ["", "## Files (SHA-256)", "", "Check them with `mmgen verify PATH`.", ""]
    lines += [f"- `{name}` `{digest}`" for name, digest in card["files"].items()]
    return "\n".join(lines) + "\n"


def card_paths(target: Path) -> tuple[Path, Path]:
    """Where the card of ``target`` lives: inside an export folder, beside a single file."""
    if target.is_dir():
        return target / CARD_JSON, target / CARD_MD
    return target.with_name(target.name + ".card.json"), target.with_name(target.name + ".card.md")


def write_card(card: Mapping[str, Any], json_path: Path, md_path: Path) -> None:
    """Write both forms of ``card`` (each file whole or not at all)."""
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    with atomic_path(md_path) as tmp:
        tmp.write_text(to_markdown(card))


def card_for_file(path: Path | str) -> Path:
    """Write ``F.card.json`` and ``F.card.md`` beside the mmgen file ``F``; return the first."""
    path = Path(path)
    card = make_card(path, {})  # describe_file hashes the file itself
    card["files"] = {path.name: card["dataset"]["sha256"]}
    json_path, md_path = card_paths(path)
    write_card(card, json_path, md_path)
    return json_path


def verify(target: Path | str) -> tuple[bool, str]:
    """Re-hash ``target`` (an export folder or a carded file) against its card.

    Returns:
        ``(True, summary)`` when every file matches, else ``(False, the first mismatch)``.

    Raises:
        UsageError: ``target`` has no card, or its card is not a card.
    """
    target = Path(target)
    if not target.exists():
        raise UsageError(f"{target} does not exist")
    json_path, _ = card_paths(target)
    if not json_path.is_file():
        raise UsageError(
            f"{target} has no card ({json_path} is missing); make one with mmgen card FILE "
            "or mmgen export"
        )
    try:
        files = json.loads(json_path.read_text())["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("no files")
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{json_path} is not an mmgen card (no files and hashes)") from None
    base = target if target.is_dir() else target.parent
    for name, digest in sorted(files.items()):
        item = base / name
        if not item.is_file():
            return False, f"{item}: missing (the card lists it)"
        if file_sha256(item) != digest:
            return False, f"{item}: SHA-256 differs from the card's {digest[:12]}…"
    if target.is_dir():
        extra = sorted(set(list_files(target)) - set(files))
        if extra:
            return False, f"{target / extra[0]}: not in the card (an added file)"
    return True, f"{len(files)} file(s) match {json_path}"
