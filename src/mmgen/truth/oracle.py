"""The ground truth of a generated file's test split (issue 16; docs/truth.md).

For every test tuple, from the file's own generating CVAEs (checked against the SHA-256 the file
records): the true ``log p(x | c)`` and ``log p(x) = log Σ_c π_c p(x | c)`` of the file's own
density, each modality's marginal, the conditional and unconditional mutual information of
every pair of modalities and the total correlation, with their means over the tuples and 95 %
intervals, and the numerical error of the computation.

The file's own density (docs/truth.md §3):
    entangled:          p_E(x | c) = ∫ p_T(z) Π_m p(x_m | z, c) dz
    mixed (modality k): p_ME(x | c) = p_E(x_{−k} | c) · p(x_k | c)
    partly mixed (f):   p_f = (1 − f)·p_E + f·p_ME
    mixed (modalities K, each permuted by its own stream, f = 1):
                        p_ME(x | c) = p_E(x_{−K} | c) · Π_{k ∈ K} p(x_k | c)
and the same rule for the density of any subset S of modalities (a subset without K, or one
modality alone, has the entangled marginal). π_c = 1/C: both label policies of ``generate``
draw classes uniformly (grid labels: exactly the file's frequencies).

PolyMNIST-E files (``mmgen polymnist``, ``--decode sample``) are scored on each image's
recovered digit, their densities shifted by the log probability of the crops that make it
(``mmgen.truth.composite``).

Decoded-means files (``--decode mean``) have no finite density (each image is a deterministic
function of (z, c)): their truth is the entropy floor ``Σ_pixels H(x)`` per modality and the
statement that the likelihood gap has no finite target.

Over 450 lines on purpose: loading the generating process, the densities of every file kind
(entangled, mixed, partly mixed, means) and their summaries are one computation over shared
decoded blocks; ``integrate`` (the kernel), ``prior``, ``storage`` and ``calibration`` are
already apart.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmgen.checkpoint import file_sha256, load_cvae
from mmgen.data import h5io
from mmgen.data.header import DatasetHeader
from mmgen.device import resolve_device
from mmgen.errors import UsageError
from mmgen.metrics import subset_name
from mmgen.shuffle import read_mix_config
from mmgen.truth import composite, prior
from mmgen.truth.integrate import Decoder, Integrals, Scoring, integrate_many
from mmgen.truth.stats import mean_interval

log = logging.getLogger(__name__)

VERSION = 1  # of the truth record (docs/format.md, "Ground truth")
DEFAULT_POINTS = 128  # grid cells per axis (d ≤ 2); the error check doubles them
DEFAULT_SAMPLES = 20_000  # importance draws (d > 2)
METHODS = ("auto", "quadrature", "importance")
NO_TARGET = (
    "decoded means: every image is a deterministic function of (z, c), so no finite density "
    "exists and the E − ME likelihood gap has no finite target; shown instead: the entropy "
    "floor Σ_pixels H(x), which no Bernoulli (BCE) log-likelihood of these images can exceed "
    "in magnitude (log-likelihood ≤ −floor)"
)


OBSERVATION = (
    "PolyMNIST-E composites: every image's digit recovered from it and its stored crop, "
    "identifiable from the image alone (checked: every crop position that makes the image "
    "gives the same digit), so P(x_m | z, c) = p(d_m | z, c) · M(x_m) with M the probability "
    "of the crops that make x_m; densities include log M, mutual information and total "
    "correlation are the digits' (docs/polymnist.md)"
)


@dataclass(frozen=True)
class Settings:
    """How the truth is computed (recorded with it)."""

    method: str = "auto"  # auto: quadrature for d ≤ 2, importance sampling beyond
    points: int = DEFAULT_POINTS  # quadrature cells per axis (the check uses 2·points)
    samples: int = DEFAULT_SAMPLES  # importance draws from p_T
    seed: int = 0  # keys the importance draws
    check: bool = True  # quadrature: also the grid of `points` cells, for the numerical error

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(
                f"unknown --method {self.method!r}; choose one of {', '.join(METHODS)}"
            )

    def resolved(self, latent_dim: int) -> str:
        if self.method != "auto":
            return self.method
        return "quadrature" if latent_dim <= 2 else "importance"


@dataclass(frozen=True)
class Truth:
    """A file's truth: the summary (JSON-ready, docs/truth.md) and per-tuple arrays."""

    summary: dict[str, Any]
    per_tuple: dict[str, np.ndarray]  # name → (N,) float64


@dataclass(frozen=True)
class Process:
    """What generated a file: its decoders, prior and, for a mixed file, the mixing."""

    decoders: list[Decoder]
    latent_dim: int
    num_classes: int
    truncation: str
    radius: float
    decode: str  # "sample" or "mean"
    mixed: tuple[int, ...]  # indices of the permuted modalities; () for an entangled file
    fraction: float  # f of the mixture (0 for an entangled file)


def load_process(
    path: Path | str, device: str | torch.device = "cpu"
) -> tuple[DatasetHeader, Process]:
    """Read a file's header and load its generating CVAEs, each checked against its SHA-256.

    Raises:
        UsageError: a naive file (no generating process), a CVAE folder missing, or a CVAE
            whose weights differ from the ones the file records.
    """
    header = h5io.read_header(path)
    if header.kind == "naive":
        raise UsageError(
            f"{path} is a naive pairing of real images: it has no generating process, so no "
            "ground truth (mmgen truth needs a file from mmgen generate or mmgen shuffle)"
        )
    generation = _generation(path, header)
    decoders: list[Decoder] = []
    loaded: dict[tuple[str, str], Decoder] = {}  # one object per CVAE: decoded once (PolyMNIST-E)
    for modality in header.modalities:
        source = header.sources[modality]
        folder = Path(source.checkpoint)
        if not source.checkpoint or not folder.is_dir():
            raise UsageError(
                f"{path}: the CVAE of modality {modality!r} is not at {source.checkpoint or '?'} "
                "(where the file records it); the truth needs the generating decoders"
            )
        key = (str(folder.resolve()), source.checkpoint_sha256)
        if key in loaded:
            decoders.append(loaded[key])
            continue
        cvae = load_cvae(folder, device)
        if cvae.sha256 != source.checkpoint_sha256:
            raise UsageError(
                f"{path}: the CVAE at {folder} is not the one that generated modality "
                f"{modality!r} (weights.pt SHA-256 {cvae.sha256[:12]}…, the file records "
                f"{source.checkpoint_sha256[:12]}…)"
            )
        loaded[key] = cvae.model.eval().decode_logits
        decoders.append(loaded[key])
    mixed: tuple[int, ...] = ()
    fraction = 0.0
    if header.kind == "mixed":
        mix = read_mix_config(header.config)
        mixed = tuple(header.modalities.index(m) for m in mix.modality.split(","))
        fraction = mix.fraction
        if len(mixed) > 1 and fraction < 1.0:
            raise UsageError(
                f"{path} permutes {mix.modality} in a fraction f = {fraction:g} of the tuples, "
                "each modality choosing its own; its density mixes every pattern of permuted "
                "modalities and has no truth here (one permuted modality, or f = 1, has)"
            )
    process = Process(
        decoders=decoders,
        latent_dim=header.latent_dim,
        num_classes=header.num_classes,
        truncation=str(generation.get("truncation", "radial")),
        radius=float(generation.get("radius", 2.0)),
        decode=str(generation.get("decode", "mean")),
        mixed=mixed,
        fraction=fraction,
    )
    return header, process


def subsets_needed(modalities: int, mixed: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The joint, every single modality, every pair and, in a mixed file, what each of them
    keeps without the permuted modalities ``mixed``."""
    everything = tuple(range(modalities))
    reported = {everything, *((m,) for m in everything), *itertools.combinations(everything, 2)}
    wanted = set(reported)
    for subset in reported:
        rest = _unpermuted(subset, mixed)
        if rest and len(subset) > 1 and rest != subset:
            wanted.add(rest)
    return sorted(wanted, key=lambda s: (len(s), s))


def _unpermuted(subset: tuple[int, ...], mixed: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(m for m in subset if m not in mixed)


def file_log_density(
    log_mean: Mapping[tuple[int, ...], Tensor],
    subset: tuple[int, ...],
    mixed: tuple[int, ...],
    fraction: float,
) -> Tensor:
    """``(N, C)`` log density of ``subset`` under the file's own density (module docstring).

    ``log p_f(x_S | c) = log[(1 − f)·p_E(x_S | c) + f·p_E(x_{S−K} | c)·Π_{k∈S∩K} p(x_k | c)]``
    (several permuted modalities K only with f = 1); a subset without K, or one modality
    alone, has the entangled density.
    """
    entangled = log_mean[subset]
    rest = _unpermuted(subset, mixed)
    if fraction == 0.0 or rest == subset or len(subset) == 1:
        return entangled
    product = sum(log_mean[(k,)] for k in subset if k in mixed)
    if rest:
        product = product + log_mean[rest]
    if fraction == 1.0:
        return product
    return torch.logaddexp(math.log1p(-fraction) + entangled, math.log(fraction) + product)


def tuple_values(
    integrals: Integrals,
    labels: Tensor,
    names: Sequence[str],
    mixed: tuple[int, ...],
    fraction: float,
    log_mass: Sequence[Tensor] | None = None,
) -> dict[str, Tensor]:
    """Per-tuple ``(N,)`` float64 truths from the integrals (keys: docs/format.md).

    ``log_mass``: per modality, the ``(N,)`` log probability of the crops that make each
    composite (``mmgen.truth.composite``), added to every density of a subset holding it; the
    mutual information and total correlation do not change.
    """
    count = len(names)
    num_classes = next(iter(integrals.log_mean.values())).shape[1]
    log_prior = -math.log(num_classes)
    rows = torch.arange(len(labels), device=labels.device)

    def mass(subset: tuple[int, ...]) -> Tensor | float:
        return sum(log_mass[m] for m in subset) if log_mass is not None else 0.0

    def conditional(subset: tuple[int, ...]) -> Tensor:
        density = file_log_density(integrals.log_mean, subset, mixed, fraction)
        return density[rows, labels] + mass(subset)

    def unconditional(subset: tuple[int, ...]) -> Tensor:
        density = file_log_density(integrals.log_mean, subset, mixed, fraction)
        return torch.logsumexp(log_prior + density, 1) + mass(subset)

    everything = tuple(range(count))
    values = {
        "log_p": unconditional(everything),
        "log_p_given_class": conditional(everything),
    }
    for m, name in enumerate(names):
        values[f"marginal/{name}"] = unconditional((m,))
        values[f"marginal_given_class/{name}"] = conditional((m,))
    for a, b in itertools.combinations(range(count), 2):
        key = subset_name((names[a], names[b]))
        values[f"mutual_information/{key}"] = (
            conditional((a, b)) - conditional((a,)) - conditional((b,))
        )
        values[f"mutual_information_unconditional/{key}"] = (
            unconditional((a, b)) - unconditional((a,)) - unconditional((b,))
        )
    values["total_correlation"] = values["log_p_given_class"] - sum(
        values[f"marginal_given_class/{name}"] for name in names
    )
    return values


def importance_errors(
    integrals: Integrals, labels: Tensor, samples: int, names: Sequence[str]
) -> dict[str, Tensor]:
    """Per-tuple delta-method standard errors of ``log p̂`` (own class) per subset, ``(N,)``.

    ``se(log p̂) ≈ √((K Σ w² / (Σ w)² − 1) / K)`` for the K draws' likelihoods w.
    """
    rows = torch.arange(len(labels), device=labels.device)
    errors = {}
    for subset, log_mean in integrals.log_mean.items():
        ratio = samples * torch.exp(
            integrals.log_mean_square[subset][rows, labels] - 2 * log_mean[rows, labels]
        )
        errors[subset] = torch.sqrt((ratio - 1).clamp(min=0) / samples)
    return errors


def _decoder_codes(
    process: Process, method: str, settings: Settings, points: int
) -> Callable[[], Iterable[tuple[Tensor, Tensor]]]:
    if method == "quadrature":
        return lambda: prior.grid_codes(
            process.latent_dim, process.truncation, process.radius, points
        )
    return lambda: prior.importance_codes(
        process.latent_dim, process.truncation, process.radius, settings.samples, settings.seed
    )


def compute_values(
    process: Process,
    images: Sequence[Tensor],
    labels: Tensor,
    names: Sequence[str],
    settings: Settings = Settings(),
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]:
    """Per-tuple truths, their per-tuple numerical errors and what was computed.

    Quadrature: the values on the grid of ``2·points`` cells per axis; the error of each
    per-tuple value is its change from the grid of ``points``. Importance sampling: the values
    of ``samples`` draws; errors are delta-method standard errors (summed over the terms of a
    difference).
    """
    return compute_values_many([process], [images], [labels], names, settings)[0]


def compute_values_many(
    processes: Sequence[Process],
    images: Sequence[Sequence[Tensor]],
    labels: Sequence[Tensor],
    names: Sequence[str],
    settings: Settings = Settings(),
    log_masses: Sequence[Sequence[Tensor] | None] | None = None,
) -> list[tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Any]]]:
    """``compute_values`` for several files generated by the same decoders, prior and classes
    (``processes[0]``'s; each process keeps its own mixing): every grid or importance block of
    codes is decoded once for all files (``integrate_many``), each file's values are those of
    its own run. ``log_masses``: per file, its composites' crop masses (``tuple_values``) or
    None."""
    first = processes[0]
    method = settings.resolved(first.latent_dim)
    subsets = [subsets_needed(len(names), process.mixed) for process in processes]
    scorings = [
        Scoring(images=file_images, subsets=file_subsets, squares=method == "importance")
        for file_images, file_subsets in zip(images, subsets, strict=True)
    ]

    def run(points: int) -> list[Integrals]:
        codes = _decoder_codes(first, method, settings, points)
        return integrate_many(first.decoders, scorings, first.num_classes, codes)

    mass = prior.prior_mass(first.latent_dim, first.truncation, first.radius)
    if method == "quadrature":
        grid_mass = prior.grid_mass(
            first.latent_dim, first.truncation, first.radius, 2 * settings.points
        )
        coarse = run(settings.points) if settings.check else None
        fine = run(2 * settings.points)
    else:
        fine = run(0)
    results = []
    for index, process in enumerate(processes):
        record: dict[str, Any] = {"method": method}
        record["prior"] = {"truncation": first.truncation, "radius": first.radius, "mass": mass}
        file_labels = labels[index]
        masses = log_masses[index] if log_masses is not None else None
        values = tuple_values(
            fine[index], file_labels, names, process.mixed, process.fraction, masses
        )
        if method == "quadrature" and coarse is None:  # unchecked: no numerical error
            errors = {}
            record["points"] = 2 * settings.points
            record["check_points"] = None
            record["prior"]["grid_mass"] = grid_mass
        elif method == "quadrature":
            previous = tuple_values(
                coarse[index], file_labels, names, process.mixed, process.fraction, masses
            )
            errors = {key: (values[key] - previous[key]).abs() for key in values}
            record["points"] = 2 * settings.points
            record["check_points"] = settings.points
            record["prior"]["grid_mass"] = grid_mass
            record["previous_means"] = {k: float(v.mean()) for k, v in previous.items()}
        else:
            errors = _importance_errors(fine[index], file_labels, settings.samples, names)
            record["samples"] = settings.samples
            record["seed"] = settings.seed
        results.append((values, errors, record))
    return results


def _importance_errors(
    integrals: Integrals, labels: Tensor, samples: int, names: Sequence[str]
) -> dict[str, Tensor]:
    """Per-tuple standard errors of every reported value (terms of a difference added)."""
    se = importance_errors(integrals, labels, samples, names)
    everything = tuple(range(len(names)))
    errors = {"log_p": se[everything], "log_p_given_class": se[everything]}
    for m, name in enumerate(names):
        errors[f"marginal/{name}"] = errors[f"marginal_given_class/{name}"] = se[(m,)]
    for a, b in itertools.combinations(range(len(names)), 2):
        key = subset_name((names[a], names[b]))
        total = se[(a, b)] + se[(a,)] + se[(b,)]
        errors[f"mutual_information/{key}"] = total
        errors[f"mutual_information_unconditional/{key}"] = total
    errors["total_correlation"] = se[everything] + sum(se[(m,)] for m in range(len(names)))
    return errors


def summarize(
    values: Mapping[str, Tensor],
    errors: Mapping[str, Tensor],
    record: Mapping[str, Any],
    names: Sequence[str],
) -> dict[str, Any]:
    """The JSON summary (docs/truth.md §5): means over tuples, intervals, numerical errors."""

    def figure(key: str) -> dict[str, Any]:
        array = values[key].cpu().numpy()
        if record["method"] == "quadrature" and "previous_means" not in record:
            error = None  # unchecked (Settings.check False): no numerical error
        elif "previous_means" in record:  # quadrature: the change of the mean on the 2× grid
            error = abs(float(array.mean()) - record["previous_means"][key])
        else:  # importance: the mean per-tuple standard error (an upper bound for the mean's)
            error = float(errors[key].mean())
        return mean_interval(array, error)

    summary: dict[str, Any] = {
        "finite": True,
        "log_likelihood": figure("log_p"),
        "conditional_log_likelihood": figure("log_p_given_class"),
        "marginals": {
            name: {
                "conditional": figure(f"marginal_given_class/{name}"),
                "unconditional": figure(f"marginal/{name}"),
            }
            for name in names
        },
        "mutual_information": {},
        "total_correlation": figure("total_correlation"),
    }
    for a, b in itertools.combinations(names, 2):
        key = subset_name((a, b))
        summary["mutual_information"][key] = {
            "modalities": [a, b],
            **figure(f"mutual_information/{key}"),
            "unconditional": figure(f"mutual_information_unconditional/{key}"),
        }
    if record["method"] == "quadrature" and record["check_points"] is None:
        how = (
            f"not checked (--no-check): the values of the {record['points']}-point grid per "
            "axis without the coarser grid's comparison; every numerical_error is null"
        )
    elif record["method"] == "quadrature":
        how = (
            f"change from the {record['check_points']}-point grid to the {record['points']}-point "
            "grid per axis"
        )
    else:
        how = f"delta-method standard error of {record['samples']} importance draws"
    summary["numerical_error"] = {
        "max_per_tuple_log_likelihood": float(errors["log_p"].max()) if errors else None,
        "how": how,
    }
    summary["computation"] = {k: v for k, v in record.items() if k != "previous_means"}
    return summary


def entropy_floor(images: Tensor) -> Tensor:
    """``Σ_pixels H_b(x)`` per image, ``(N,)`` float64: ``−x log x − (1 − x) log(1 − x)``."""
    x = images.double().flatten(1)
    return -(torch.xlogy(x, x) + torch.xlogy(1 - x, 1 - x)).sum(1)


def compute_truth(
    path: Path | str,
    settings: Settings = Settings(),
    device: str = "cpu",
    split: str = "test",
) -> Truth:
    """The truth of ``path``'s ``split`` (module docstring).

    Args:
        path: an entangled or (partly) mixed file whose CVAEs are where it records them.
        settings: method, grid points, importance draws and seed.
        device: ``auto``, ``cpu`` or ``cuda``.
        split: ``"test"`` (what the evaluators measure) or ``"train"``.

    Raises:
        UsageError: a naive file, missing or different CVAEs, an unusable method.
    """
    return compute_truths([path], settings, device, split)[0]


def compute_truths(
    paths: Sequence[Path | str],
    settings: Settings = Settings(),
    device: str = "cpu",
    split: str = "test",
) -> list[Truth]:
    """The truths of several files generated by the same CVAEs, prior and classes (a study's
    E, ME and partly mixed twins), decoding the shared codes once for all of them.

    Each file's truth equals ``compute_truth`` of that file alone (the same operations on the
    same decoded blocks). Cost: ``C·G`` decodes per modality for all the files together (G the
    codes of both grids), plus ``N·C·G·P`` multiply-adds per modality for each file's N tuples.

    Raises:
        UsageError: no file, or files whose generating CVAEs (SHA-256), modalities, latent
            size, classes or truncation differ (one line naming the first that differs); any
            error of ``compute_truth``.
    """
    if not paths:
        raise UsageError("mmgen truth needs at least one file")
    check_together(paths)
    torch_device = resolve_device(device)
    loaded = [load_process(path, torch_device) for path in paths]
    truths: list[Truth | None] = [None] * len(paths)
    sampled = []
    for index, (path, (header, process)) in enumerate(zip(paths, loaded, strict=True)):
        data = h5io.read_split(path, split)
        base = _base_record(path, header, process, data, split)
        if process.decode != "sample":
            truths[index] = _entropy_truth(base, data, list(header.modalities))
        else:
            sampled.append((index, path, process, data, base))
    if sampled:
        names = list(loaded[0][0].modalities)
        observed = [
            _observed(path, loaded[index][0], data, names, split, base, torch_device)
            for index, path, _, data, base in sampled
        ]
        images = [file_images for file_images, _ in observed]
        masses = [file_masses for _, file_masses in observed]
        labels = [torch.from_numpy(data.labels).to(torch_device) for _, _, _, data, _ in sampled]
        for _, path, _, data, base in sampled:
            log.info(
                "truth of %s (%s, %d tuples) on %s", path, base["density"], len(data), torch_device
            )
        processes = [process for _, _, process, _, _ in sampled]
        results = compute_values_many(processes, images, labels, names, settings, masses)
        for (index, _, _, _, base), (values, errors, record) in zip(sampled, results, strict=True):
            summary = {**base, **summarize(values, errors, record, names)}
            per_tuple = {key: value.cpu().numpy() for key, value in values.items()}
            truths[index] = Truth(summary=summary, per_tuple=per_tuple)
    return [truth for truth in truths if truth is not None]


def _observed(
    path: Path | str,
    header: DatasetHeader,
    data: Any,
    names: Sequence[str],
    split: str,
    base: dict[str, Any],
    device: torch.device,
) -> tuple[list[Tensor], list[Tensor] | None]:
    """What the CVAEs' Bernoulli likelihood scores, ``(N, P)`` per modality, and the crop log
    masses: the images themselves, or a PolyMNIST-E file's recovered digits and their crops'
    masses (``mmgen.truth.composite``; recorded in ``base["observation"]``)."""
    if not header.has_nuisance:
        images = [torch.from_numpy(data.images_float(m)).flatten(1).to(device) for m in names]
        return images, None
    seen = composite.observe_split(path, header, split, data)
    base["observation"] = {
        "model": OBSERVATION,
        "crop_log_mass": {m: mean_interval(seen[m].log_mass) for m in names},
        "max_consistent_crops": {m: int(seen[m].positions.max()) for m in names},
    }
    images = [torch.from_numpy(seen[m].digits).to(device) for m in names]
    masses = [torch.from_numpy(seen[m].log_mass).to(device) for m in names]
    return images, masses


def _generation(path: Path | str, header: DatasetHeader) -> Mapping[str, Any]:
    """The ``generate`` config behind a file (a mixed file's: its parent's)."""
    generation = (
        header.config if header.kind == "entangled" else (header.parent or {}).get("config")
    )
    if not isinstance(generation, Mapping):
        raise UsageError(f"{path}: a mixed file without its parent's generate config")
    return generation


def check_together(paths: Sequence[Path | str]) -> None:
    """Refuse files that were not generated alike (so cannot share one decoding of the codes).

    Raises:
        UsageError: one line naming the first file and property that differ (the CVAEs'
            SHA-256, modalities, latent size, classes, truncation).
    """
    signatures = [_signature(path) for path in paths]
    for path, signature in zip(paths[1:], signatures[1:], strict=True):
        if signature != signatures[0]:
            differs = next(key for key in signature if signature[key] != signatures[0][key])
            raise UsageError(
                f"{path} was not generated like {paths[0]} ({differs}: "
                f"{signature[differs]} vs {signatures[0][differs]}); compute their truths "
                "separately (one mmgen truth per set of CVAEs and truncation)"
            )


def _signature(path: Path | str) -> dict[str, Any]:
    """What files must share to be computed together: CVAEs, modalities, prior, classes."""
    header = h5io.read_header(path)
    if header.kind == "naive":
        return {"kind": "naive"}  # load_process says why it has no truth
    generation = _generation(path, header)
    return {
        "CVAE SHA-256": [header.sources[m].checkpoint_sha256[:12] for m in header.modalities],
        "modalities": list(header.modalities),
        "latent size": header.latent_dim,
        "classes": header.num_classes,
        "truncation": (
            f"{generation.get('truncation', 'radial')} r = {float(generation.get('radius', 2.0)):g}"
        ),
    }


def _base_record(
    path: Path | str, header: DatasetHeader, process: Process, data: Any, split: str
) -> dict[str, Any]:
    names = list(header.modalities)
    return {
        "version": VERSION,
        "dataset_sha256": file_sha256(path),
        "kind": header.kind,
        "decode": process.decode,
        "split": split,
        "tuples": len(data),
        "modalities": names,
        "latent_dim": process.latent_dim,
        "num_classes": process.num_classes,
        "density": _density_name(names, process),
    }


def _entropy_truth(base: dict[str, Any], data: Any, names: Sequence[str]) -> Truth:
    """A decoded-means file's truth: its entropy floor and the statement of no target."""
    floors = {m: entropy_floor(torch.from_numpy(data.images_float(m))) for m in names}
    per_tuple = {f"entropy_floor/{m}": v.numpy() for m, v in floors.items()}
    per_tuple["entropy_floor_total"] = sum(per_tuple.values())
    summary = {
        **base,
        "finite": False,
        "statement": NO_TARGET,
        "entropy_floor": {
            **{m: mean_interval(per_tuple[f"entropy_floor/{m}"]) for m in names},
            "total": mean_interval(per_tuple["entropy_floor_total"]),
        },
        "mutual_information": None,
    }
    return Truth(summary=summary, per_tuple=per_tuple)


def _density_name(names: Sequence[str], process: Process) -> str:
    if not process.mixed:
        return "entangled: p_E(x|c)"
    k = ",".join(names[m] for m in process.mixed)
    if process.fraction == 1.0:
        factors = "·".join(f"p({names[m]}|c)" for m in process.mixed)
        rest = k if len(process.mixed) == 1 else f"{{{k}}}"
        return f"mixed ({k} permuted): p_E(x_-{rest}|c)·{factors}"
    return f"partly mixed ({k}, f = {process.fraction:g}): (1 − f)·p_E + f·p_ME"
