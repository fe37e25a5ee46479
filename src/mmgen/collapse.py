"""Posterior collapse of a CVAE: when its code carries (almost) nothing beyond the class.

The test KL that ``train-cvae`` reports is ``E_x KL(q(z | x, c) ‖ N(0, I))``, summed over the d
latent dimensions, in nats. It bounds the information the code holds about the image given the
class from above: ``I_q(x; z | c) ≤ E_x KL(q(z | x, c) ‖ p(z))`` (Hoffman & Johnson, *ELBO
surgery*, 2016; Alemi et al., *Fixing a broken ELBO*, 2018, the "rate"). Below
``COLLAPSE_KL_NATS`` = 0.5 nats the code tells apart fewer than e^0.5 ≈ 1.6 images of a class:
decoding any z gives (nearly) the same image, and a dataset ``generate`` writes with such a
decoder is class-only, not entangled (issue #19: three CVAEs on three classes reached 0.01–0.09
nats). Healthy MNIST CVAEs at d = 2 carry several nats (docs/checkpoints.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

COLLAPSE_KL_NATS = 0.5  # total test KL (nats, summed over dimensions) below which z is unused


def last_test_kl(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The test KL of the last epoch that has one, or ``None`` (no epoch evaluated)."""
    for record in reversed(history):
        if "test_kl" in record:
            return float(record["test_kl"])
    return None


def collapse_record(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the checkpoint's run record says about collapse: ``{"collapsed", "test_kl",
    "threshold_nats"}`` (``collapsed`` is ``None`` before any epoch was evaluated)."""
    kl = last_test_kl(history)
    return {
        "collapsed": None if kl is None else kl < COLLAPSE_KL_NATS,
        "test_kl": kl,
        "threshold_nats": COLLAPSE_KL_NATS,
    }


def is_collapsed(metadata: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a checkpoint's posterior collapsed: its run record's flag, or for checkpoints
    written before the flag existed, its history's last test KL against the threshold."""
    recorded = metadata.get("collapse")
    if isinstance(recorded, Mapping) and recorded.get("collapsed") is not None:
        return bool(recorded["collapsed"])
    return bool(collapse_record(history)["collapsed"])


def warning(kl: float) -> str:
    """The one-line warning ``train-cvae`` prints and logs."""
    return (
        f"posterior collapse: test KL {kl:.3f} nats < {COLLAPSE_KL_NATS} (the code carries "
        "almost nothing beyond the class; a dataset generated from it is class-only). Train "
        "longer, lower --beta or check the data; mmgen generate refuses it without "
        "--allow-collapsed"
    )
