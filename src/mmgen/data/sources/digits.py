"""``digits``: the 8×8 handwritten digits that scikit-learn ships inside its package.

1,797 grey images of 8×8 pixels (UCI's "Optical Recognition of Handwritten Digits", test part),
ten classes "0".."9", read by ``sklearn.datasets.load_digits`` from the file in sklearn's package
(no download). Levels 0..16 become ``round(255·x/16)``. The set has no official split, so mmgen
fixes one: within each class, in order 0..9, ``mmgen.rng.numpy_stream(0, "digits-split")``
permutes the class's examples and the first ``round(20 % of them)`` go to the test split (359
test / 1,438 train images); each split keeps the file's order. The rule is recorded in the
identity as ``split_rule``. Needs the extra ``mmgen-entangled[digits]`` (scikit-learn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmgen import rng

from .base import Source, SplitArrays, digit_names, file_sha256
from .places import Place

DATA_FILE = "digits.csv.gz"  # inside sklearn/datasets/data/
TEST_FRACTION = 0.2
SPLIT_RULE = (
    "per class 0..9: numpy_stream(0, 'digits-split').permutation of the class's examples, "
    "the first round(0.2 n) are test; file order kept"
)


@dataclass(frozen=True, kw_only=True)
class DigitsSource(Source):
    """scikit-learn's bundled digits (spec ``digits``)."""

    def search_places(self, data_dir: str | Path | None = None) -> list[Place]:
        """scikit-learn's own data folder (``data_dir`` and the cache do not apply)."""
        self.require_extras()
        import sklearn.datasets

        return [("scikit-learn", Path(sklearn.datasets.__file__).parent / "data")]

    def missing_files(self, folder: Path) -> list[str]:
        """The data file, when scikit-learn's package lacks it."""
        return [] if (folder / DATA_FILE).is_file() else [DATA_FILE]

    def how_to_supply(self) -> str:
        """Reinstall scikit-learn."""
        return "reinstall scikit-learn: pip install --force-reinstall 'mmgen-entangled[digits]'"

    def read(self, folder: Path, split: str) -> SplitArrays:
        """Read the whole set and keep ``split`` by the fixed rule."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        levels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
        labels = bunch.target.astype(np.int64)
        test = split_test_mask(labels)
        keep = test if split == "test" else ~test
        return SplitArrays(
            np.ascontiguousarray(levels[keep][:, None]),  # (N, 1, 8, 8)
            labels[keep],
            digit_names(),
            {DATA_FILE: file_sha256(folder / DATA_FILE)},
            {"split_rule": SPLIT_RULE},
        )


def split_test_mask(labels: np.ndarray) -> np.ndarray:
    """``True`` for the test examples: a seeded, stratified 20 % of each class (module doc)."""
    generator = rng.numpy_stream(0, "digits-split")
    test = np.zeros(len(labels), dtype=bool)
    for label in range(int(labels.max(initial=-1)) + 1):
        members = generator.permutation(np.flatnonzero(labels == label))
        test[members[: round(TEST_FRACTION * len(members))]] = True
    return test
