"""The figures a study reports: the verdict families of ``mmgen.verdict`` per model and twin.

A figure is named by its family label (``"log p(M)"``, ``"posterior KL"``…) and, within it, a
key (``""`` for a single value, ``"mnist|fashion-mnist"`` for a conditional, …), exactly as
``evaluate``'s verdict rows name them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmgen.verdict import FAMILIES, Family, family_values

# The calibration against the ground truth (mmgen.study.calibration, docs/truth.md §6): a
# model's E − twin gap of log p(M) as a fraction of the true gap. The recipe's default primary.
RECOVERED = "recovered fraction"
# What a recipe may declare as its primary figure.
PRIMARY_FIGURES: tuple[str, ...] = (RECOVERED, *(family.label for family in FAMILIES))
FAMILY_BY_LABEL: dict[str, Family] = {family.label: family for family in FAMILIES}
# Models that share another's joint network (JMVAE-zero is JMVAE with zero-filled encoders):
# counted once in the report's counts, under the network's name.
SHARED_NETWORK: dict[str, str] = {"jmvae-zero": "jmvae"}


def network(model: str) -> str:
    """The joint network ``model`` trains (itself, unless it shares another's)."""
    return SHARED_NETWORK.get(model, model)


def figure_values(figures: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """Every verdict figure of one job: ``(family label, key)`` → value."""
    values = {}
    for family in FAMILIES:
        for key, value in family_values(figures, family).items():
            values[family.label, key] = value
    return values
