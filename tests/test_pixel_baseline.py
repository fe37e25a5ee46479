"""``mmgen.pixel_baseline``: the model-free latent recovery and the fusion gain."""

from __future__ import annotations

import numpy as np
import pytest

from mmgen.data.h5io import SplitData
from mmgen.pixel_baseline import fusion_gain, pixel_baseline


def split(size: int, seed: int) -> SplitData:
    """z in 2-d; modality a shows z₀ as a bar position (z₁ invisible), b shows z₁ (z₀ invisible)."""
    generator = np.random.default_rng(seed)
    z = generator.uniform(-1, 1, (size, 2)).astype(np.float32)
    cells = np.arange(16)
    a = (np.abs(cells[None, :] - (z[:, :1] + 1) * 7.5) < 1.0).astype(np.float32)
    b = (np.abs(cells[None, :] - (z[:, 1:] + 1) * 7.5) < 1.0).astype(np.float32)
    images = {"a": a.reshape(size, 1, 4, 4), "b": b.reshape(size, 1, 4, 4)}
    return SplitData(images=images, labels=np.arange(size) % 2, z=z)


def test_the_tuple_recovers_what_no_single_modality_can() -> None:
    result = pixel_baseline(split(2000, 0), split(400, 1))
    # Each modality sees one of two independent uniform coordinates: R² about 1/2.
    for name in ("a", "b"):
        assert 0.4 < result[name]["r2"] < 0.6
    assert result["a+b"]["r2"] > 0.9
    gain = result["fusion_gain"]["r2"]
    assert gain == pytest.approx(result["a+b"]["r2"] - max(result["a"]["r2"], result["b"]["r2"]))
    assert gain > 0.3


def test_fusion_gain() -> None:
    assert fusion_gain(0.9, {"a": 0.5, "b": 0.7}) == pytest.approx(0.2)
    assert fusion_gain(0.6, [0.7, 0.1]) == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        fusion_gain(0.5, [])
