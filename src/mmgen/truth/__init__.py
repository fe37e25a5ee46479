"""The ground truth of a generated dataset (issue 16; docs/truth.md).

Public API (what ``evaluate`` and the reports call):

* ``compute_truth(path, settings, device, split) → Truth``: compute (no writing).
* ``ensure_truth(path, settings, device) → Truth``: the stored truth when current, else compute
  and store it (``<path>.truth.h5``).
* ``load_truth(path) → Truth | None``: the stored truth, ``None`` when absent or stale.
* ``excess(truth, model_log_likelihood)``, ``true_gap(entangled, other)``,
  ``recovered_fraction(model_gap, gap)``: calibration of a model (docs/truth.md §6).
"""

from __future__ import annotations

from pathlib import Path

from mmgen.truth.calibration import excess, recovered_fraction, true_gap
from mmgen.truth.oracle import Settings, Truth, compute_truth
from mmgen.truth.storage import load_truth, store_truth, truth_path

__all__ = [
    "Settings",
    "Truth",
    "compute_truth",
    "ensure_truth",
    "excess",
    "load_truth",
    "recovered_fraction",
    "store_truth",
    "true_gap",
    "truth_path",
]


def ensure_truth(
    path: Path | str, settings: Settings | None = None, device: str = "cpu", recompute: bool = False
) -> Truth:
    """The truth of ``path``'s test split: the stored one when current and computed with the same
    settings, else computed and stored beside ``path``."""
    settings = settings or Settings()
    stored = None if recompute else load_truth(path)
    if stored is not None and _same_settings(stored, settings):
        return stored
    truth = compute_truth(path, settings, device)
    store_truth(path, truth)
    return truth


def _same_settings(truth: Truth, settings: Settings) -> bool:
    computation = truth.summary.get("computation")
    if computation is None:  # a decoded-means file: no settings matter
        return True
    if settings.method not in ("auto", computation["method"]):
        return False
    if computation["method"] == "quadrature":
        return computation["check_points"] == settings.points
    return computation["samples"] == settings.samples and computation["seed"] == settings.seed
