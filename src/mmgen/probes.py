"""Latent recovery: how well a posterior mean predicts the true code a tuple was decoded from.

docs/method.md ("Latent recovery"). MNIST-E stores, per tuple, the code ``z`` every modality was
decoded from (Korthals et al., §3), so a multi-modal VAE trained on it can be asked whether its
posterior mean ``μ = E[z | S]`` of an encoder ``S`` determines that code. One global linear map
``μ → z`` cannot see this: with ``d = 2`` the same two latent dimensions also separate ten
classes, each class in its own region and orientation, so one affine map scores near 0 even when
every class's ``μ`` is a perfect copy of ``z``. The probes therefore work **within a class**,
fitted on the train split's posterior means and scored on the test split:

* ``class_affine``: per class ``c``, least squares ``ẑ = W_c μ + b_c`` with a tiny ridge;
* ``class_knn``: per class, the mean code of the ``k`` nearest training means (Euclidean in
  ``μ``), the non-linear analogue; ``k`` is chosen from :data:`K_GRID` by leave-one-out error on
  the train split, one ``k`` for all classes.

Both are scored by ``R² = 1 − Σ_i ‖z_i − ẑ_i‖² / Σ_i ‖z_i − z̄‖²`` over the test tuples, summed
over the latent dimensions (``z̄`` the test mean): 1 when the code is recovered exactly, about 0
(or below) when ``μ`` carries no information about it beyond the class.

Targets (:func:`read_codes`): the stored ``z``, and in a mixed file (MNIST-ME) also
``z[m]`` for the permuted modality ``m``: the code its own tuple was decoded from. ``mmgen
shuffle`` copies ``z`` unchanged and writes ``images/m[i] = parent images/m[permutation[i]]``,
so ``z[m][i] = z[permutation/m[i]]`` (``docs/format.md``). The uni-modal encoder of ``m`` should
recover ``z[m]`` and not ``z``.

Everything is deterministic (no random folds) and pure torch; distances are computed in chunks
of at most :data:`CHUNK_ENTRIES` pairs, so memory stays flat at 60,000 × 10,000 points.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from mmgen.data.h5io import open_dataset
from mmgen.errors import UsageError

__all__ = [
    "CHUNK_ENTRIES",
    "K_GRID",
    "LOO_QUERIES",
    "PROBES",
    "RIDGE",
    "choose_k",
    "class_affine",
    "class_knn",
    "code_key",
    "code_modality",
    "latent_recovery",
    "r_squared",
    "read_codes",
]

# Candidate neighbour counts of the kNN probe; the leave-one-out error on train picks one.
K_GRID = (1, 2, 4, 8, 16, 32, 64, 128)
# Training points per class whose leave-one-out error chooses k (see choose_k).
LOO_QUERIES = 1000
# Ridge of the per-class least squares, relative to the mean eigenvalue of the class's input
# scatter: it only matters when the scatter is singular (a collapsed latent dimension, a class
# with fewer than d + 1 training points), where it picks the smallest-norm map instead of failing.
RIDGE = 1e-6
CHUNK_ENTRIES = 2**22  # query × point distances held at once (32 MB in float64)
# A probe: (train μ, train labels, train z, test μ, test labels) → (test ẑ, details such as k).
Probe = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], tuple[Tensor, dict[str, int]]]
_CODE_KEY = re.compile(r"z\[(.+)\]")


def code_key(modality: str) -> str:
    """The report key of the code of ``modality``'s own tuples in a mixed file: ``z[<m>]``."""
    return f"z[{modality}]"


def code_modality(key: str) -> str | None:
    """The modality of a :func:`code_key` (``z[fashion]`` → ``fashion``); ``None`` for ``z``."""
    match = _CODE_KEY.fullmatch(key)
    return match.group(1) if match else None


def r_squared(truth: Tensor, predicted: Tensor) -> float:
    """``R² = 1 − Σ_i ‖z_i − ẑ_i‖² / Σ_i ‖z_i − z̄‖²`` (docs/method.md), pooled over dimensions.

    Args:
        truth: ``(N, d)`` true codes ``z``.
        predicted: ``(N, d)`` predictions ``ẑ``.

    Returns:
        R², or NaN when ``truth`` is constant (R² is undefined: a test split of one code, as a
        tiny ``--n-test`` with grid labels gives; reports show it as n/a).

    Raises:
        ValueError: the shapes differ.
    """
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {tuple(truth.shape)} and prediction {tuple(predicted.shape)}")
    truth, predicted = truth.double(), predicted.double()
    total = (truth - truth.mean(0)).pow(2).sum()
    if total == 0:
        return math.nan
    return float(1.0 - (truth - predicted).pow(2).sum() / total)


def _check_rows(
    train_means: Tensor,
    train_labels: Tensor,
    train_codes: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
) -> None:
    """Raise ``ValueError`` unless each split's means, labels (and codes) have equal rows."""
    for split, arrays in (
        ("train", (train_means, train_labels, train_codes)),
        ("test", (test_means, test_labels)),
    ):
        rows = [len(a) for a in arrays]
        if len(set(rows)) > 1:
            raise ValueError(f"{split} means, labels and codes differ in rows: {rows}")
    if len(train_means) == 0:
        raise ValueError("a probe needs at least one training point")


def _per_class(
    predict: Callable[[Tensor, Tensor, Tensor], Tensor],
    train_means: Tensor,
    train_labels: Tensor,
    train_codes: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
) -> Tensor:
    """Apply ``predict(train μ, train z, test μ)`` of one class to every class of the test set.

    A class absent from training gets the training mean of ``z``: the prediction of a probe
    that knows nothing.
    """
    train_means, train_codes, test_means = (
        t.double() for t in (train_means, train_codes, test_means)
    )
    train_labels = train_labels.to(train_means.device)
    test_labels = test_labels.to(train_means.device)
    predicted = train_codes.mean(0).expand(len(test_means), -1).clone()  # (N_test, d)
    for label in torch.unique(test_labels).tolist():
        members = train_labels == label
        if members.any():
            targets = test_labels == label
            predicted[targets] = predict(
                train_means[members], train_codes[members], test_means[targets]
            )
    return predicted


def _affine(train_means: Tensor, train_codes: Tensor, test_means: Tensor) -> Tensor:
    """Ridge least squares ``ẑ = z̄ + (μ − μ̄) W`` on one class (the intercept not penalised)."""
    centre, code_centre = train_means.mean(0), train_codes.mean(0)
    inputs = train_means - centre  # (n, D)
    scatter = inputs.T @ inputs  # (D, D)
    dim = scatter.shape[0]
    # Relative to the mean eigenvalue, so the ridge does not depend on the scale of μ; the
    # absolute floor keeps a constant input (scatter 0) solvable, giving W = 0.
    penalty = RIDGE * float(scatter.trace()) / dim + 1e-12
    eye = torch.eye(dim, dtype=scatter.dtype, device=scatter.device)
    weights = torch.linalg.solve(scatter + penalty * eye, inputs.T @ (train_codes - code_centre))
    return code_centre + (test_means - centre) @ weights


def class_affine(
    train_means: Tensor,
    train_labels: Tensor,
    train_codes: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
) -> tuple[Tensor, dict[str, int]]:
    """The per-class affine probe: one least-squares map ``μ → z`` per class.

    Args:
        train_means: ``(N, D)`` posterior means of the training tuples.
        train_labels: ``(N,)`` their classes.
        train_codes: ``(N, d)`` their true codes.
        test_means: ``(M, D)`` posterior means of the test tuples.
        test_labels: ``(M,)`` their classes (the map of that class is applied).

    Returns:
        ``(M, d)`` float64 predictions and an empty details dict.
    """
    _check_rows(train_means, train_labels, train_codes, test_means, test_labels)
    predicted = _per_class(_affine, train_means, train_labels, train_codes, test_means, test_labels)
    return predicted, {}


def _nearest(
    queries: Tensor, points: Tensor, count: int, self_index: Tensor | None = None
) -> Iterator[tuple[int, Tensor]]:
    """``(first row, (rows, count) indices)`` of each query chunk's nearest ``points``, nearest
    first. ``self_index[i]`` (when given) is query ``i``'s own row in ``points``: a point is
    not its own neighbour. Distances are float32: only their order matters."""
    points = points.float()
    rows = max(1, CHUNK_ENTRIES // len(points))
    for start in range(0, len(queries), rows):
        distances = torch.cdist(queries[start : start + rows].float(), points)  # (rows, n)
        if self_index is not None:
            own = self_index[start : start + rows]
            distances[torch.arange(len(own), device=distances.device), own] = torch.inf
        yield start, distances.topk(count, dim=1, largest=False).indices


def choose_k(
    train_means: Tensor,
    train_labels: Tensor,
    train_codes: Tensor,
    grid: tuple[int, ...] = K_GRID,
    queries_per_class: int = LOO_QUERIES,
) -> int:
    """The ``k`` of ``grid`` with the smallest leave-one-out error of the per-class kNN on train.

    Training points are predicted from the ``k`` nearest *other* training points of their
    class (all of them when the class has fewer), and the squared errors are summed over all
    classes; ties go to the smaller ``k``. At most ``queries_per_class`` evenly spaced points
    of each class are predicted (against every point of the class): the error of eight
    candidates is estimated well from a thousand points, at a sixth of the cost of all 6,000.
    Classes with a single point have no neighbour and are left out.
    """
    train_means, train_codes = train_means.double(), train_codes.double()
    train_labels = train_labels.to(train_means.device)
    errors = torch.zeros(len(grid), dtype=torch.float64, device=train_means.device)
    for label in torch.unique(train_labels).tolist():
        members = train_labels == label
        means, codes = train_means[members], train_codes[members]
        available = min(max(grid), len(means) - 1)
        if available < 1:
            continue
        counts = torch.tensor([min(k, available) for k in grid], device=means.device)
        step = -(-len(means) // queries_per_class)  # ceil: evenly spaced, deterministic
        own = torch.arange(0, len(means), step, device=means.device)
        for start, neighbours in _nearest(means[own], means, available, self_index=own):
            # Running sums over the neighbours, nearest first: the k-NN mean for every k at once.
            sums = codes[neighbours].cumsum(1)  # (rows, available, d)
            predicted = sums[:, counts - 1] / counts[None, :, None]  # (rows, len(grid), d)
            truth = codes[own[start : start + len(neighbours)], None]
            errors += (predicted - truth).pow(2).sum((0, 2))
    return grid[int(errors.argmin())]


def _knn(train_means: Tensor, train_codes: Tensor, test_means: Tensor, k: int) -> Tensor:
    """The mean code of the ``k`` nearest training means of one class (all when fewer)."""
    count = min(k, len(train_means))
    predicted = test_means.new_empty(len(test_means), train_codes.shape[1])  # (M, d)
    for start, neighbours in _nearest(test_means, train_means, count):
        predicted[start : start + len(neighbours)] = train_codes[neighbours].mean(1)
    return predicted


def class_knn(
    train_means: Tensor,
    train_labels: Tensor,
    train_codes: Tensor,
    test_means: Tensor,
    test_labels: Tensor,
) -> tuple[Tensor, dict[str, int]]:
    """The per-class k-nearest-neighbour probe, ``k`` chosen on train (:func:`choose_k`).

    Arguments as :func:`class_affine`.

    Returns:
        ``(M, d)`` float64 predictions and ``{"k": chosen k}``.
    """
    _check_rows(train_means, train_labels, train_codes, test_means, test_labels)
    k = choose_k(train_means, train_labels, train_codes)

    def predict(means: Tensor, codes: Tensor, queries: Tensor) -> Tensor:
        return _knn(means, codes, queries, k)

    predicted = _per_class(predict, train_means, train_labels, train_codes, test_means, test_labels)
    return predicted, {"k": k}


PROBES: dict[str, Probe] = {"class_affine": class_affine, "class_knn": class_knn}


def latent_recovery(
    train_means: Mapping[str, Tensor],
    train_labels: Tensor,
    test_means: Mapping[str, Tensor],
    test_labels: Tensor,
    codes: Mapping[str, tuple[Tensor, Tensor]],
    probes: Mapping[str, Probe] = PROBES,
) -> dict[str, dict[str, dict[str, dict[str, float | int]]]]:
    """Held-out R² of every probe, per encoder and target code.

    Args:
        train_means: encoder name (e.g. ``mnist+fashion``) → ``(N, D)`` training posterior means.
        train_labels: ``(N,)`` training classes.
        test_means: encoder name → ``(M, D)`` test posterior means.
        test_labels: ``(M,)`` test classes.
        codes: target name (``z``, ``z[<m>]``, see :func:`read_codes`) → ``(train (N, d),
            test (M, d))`` true codes.
        probes: probe name → probe (default :data:`PROBES`).

    Returns:
        ``encoder → target → probe → {"r2": …, **details}`` (the kNN adds its ``k``).
    """
    result: dict[str, dict[str, dict[str, dict[str, float | int]]]] = {}
    for encoder, train_mean in train_means.items():
        device = train_mean.device
        result[encoder] = {}
        for target, (train_codes, test_codes) in codes.items():
            train_codes, test_codes = train_codes.to(device), test_codes.to(device)
            result[encoder][target] = {}
            for name, probe in probes.items():
                predicted, details = probe(
                    train_mean, train_labels, train_codes, test_means[encoder], test_labels
                )
                result[encoder][target][name] = {
                    "r2": r_squared(test_codes, predicted),
                    **details,
                }
    return result


def read_codes(
    path: Path | str, train_rows: int, test_rows: int
) -> dict[str, tuple[Tensor, Tensor]] | None:
    """The true codes of the first rows of each split: ``z`` and, in a mixed file, ``z[m]``.

    ``z[m][i] = z[permutation/m[i]]`` is the code that the permuted modality ``m`` of tuple
    ``i`` was decoded from (module docstring). The permutation points anywhere in the split, so
    the whole split's ``z`` is read even when only its first rows are evaluated.

    Args:
        path: an mmgen HDF5 file.
        train_rows: how many leading training tuples are evaluated.
        test_rows: how many leading test tuples are evaluated.

    Returns:
        Target name → ``(train (train_rows, d), test (test_rows, d))`` float32 codes, or
        ``None`` when the file stores no ``z`` (a naive pairing).

    Raises:
        UsageError: a stored permutation points outside its split (a damaged file).
    """
    rows = {"train": train_rows, "test": test_rows}
    per_split: dict[str, dict[str, Tensor]] = {}
    with open_dataset(path) as handle:
        for split, count in rows.items():
            group = handle[split]
            if "z" not in group:
                return None
            z = torch.from_numpy(group["z"][:])  # (N, d), the whole split
            per_split[split] = {"z": z[:count]}
            for modality in group.get("permutation", {}):
                permutation = torch.from_numpy(group["permutation"][modality][:count])
                if len(permutation) and (permutation.min() < 0 or permutation.max() >= len(z)):
                    raise UsageError(
                        f"{path}: {split}/permutation/{modality} points outside the split's "
                        f"{len(z)} tuples; regenerate the file with mmgen shuffle"
                    )
                per_split[split][code_key(modality)] = z[permutation]
    return {key: (per_split["train"][key], per_split["test"][key]) for key in per_split["train"]}
