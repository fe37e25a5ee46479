"""``mmgen shuffle --fraction/--block-codes`` and the marginal-keeping subsets (issues 16, 17)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, make_checkpoint
from mmgen import rng
from mmgen.cli import app
from mmgen.data import h5io
from mmgen.errors import UsageError
from mmgen.generate import GenerateConfig, generate_dataset
from mmgen.shuffle import MixConfig, class_permutation, mix_modality, read_mix_config
from mmgen.subsets import closed_prefixes, marginal_keeping_rows


@pytest.fixture(scope="module")
def entangled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mixing")
    folders = [
        make_checkpoint(folder / "a", "mnist", seed=0, image_shape=(1, 8, 8)),
        make_checkpoint(folder / "b", "fashion-mnist", seed=1, image_shape=(1, 8, 8)),
    ]
    config = GenerateConfig(n_train=200, n_test=100, decode="sample")
    return generate_dataset(folders, folder / "e.h5", config, device="cpu")


def read(path: Path, split: str, name: str) -> np.ndarray:
    with h5py.File(path, "r") as handle:
        return handle[split][name][:]


def test_whole_split_blocks_are_the_former_permutation(tmp_path: Path, entangled: Path) -> None:
    out = mix_modality(entangled, tmp_path / "m.h5", MixConfig(seed=3, block_codes=0))
    assert h5io.read_attrs(out)["config"] == {"modality": "fashion-mnist", "seed": 3}
    for split in ("train", "test"):
        labels = read(entangled, split, "labels")
        former = class_permutation(labels, rng.numpy_stream(3, {"train": 0, "test": 1}[split]))
        np.testing.assert_array_equal(read(out, split, "permutation/fashion-mnist"), former)
    assert read_mix_config(h5io.read_attrs(out)["config"]) == MixConfig(
        modality="fashion-mnist", seed=3, fraction=1.0, block_codes=0
    )


def test_blocks_keep_the_marginals_of_whole_block_prefixes(tmp_path: Path, entangled) -> None:
    out = mix_modality(entangled, tmp_path / "m.h5", MixConfig(seed=1, block_codes=3))
    assert h5io.read_attrs(out)["config"]["block_codes"] == 3
    permutation = read(out, "test", "permutation/fashion-mnist")
    codes, labels = read(entangled, "test", "code_index"), read(entangled, "test", "labels")
    np.testing.assert_array_equal(codes[permutation] // 3, codes // 3)
    np.testing.assert_array_equal(labels[permutation], labels)
    assert (permutation != np.arange(100)).mean() > 0.5
    before = read(entangled, "test", "images/fashion-mnist")
    after = read(out, "test", "images/fashion-mnist")
    for rows in (30, 60, 90, 100):  # whole blocks of 3 codes × 10 classes, and the split
        assert marginal_keeping_rows([entangled, out], rows) == rows
        assert sorted(map(bytes, after[:rows])) == sorted(map(bytes, before[:rows]))
    with pytest.raises(UsageError, match="use 30, 60 tuples"):
        marginal_keeping_rows([entangled, out], 50)
    assert marginal_keeping_rows([entangled, out], 50, shrink=True) == 30
    # The former whole-split permutation keeps the marginals of the whole split only.
    whole = mix_modality(entangled, tmp_path / "w.h5", MixConfig(seed=1, block_codes=0))
    with pytest.raises(UsageError, match="use 100 tuples"):
        marginal_keeping_rows([entangled, whole], 30)
    assert marginal_keeping_rows([entangled], 30) == 30
    with pytest.raises(UsageError, match="use 20, 30 tuples"):
        marginal_keeping_rows([entangled], 25)  # not a whole number of codes


def test_closed_prefixes_against_sets() -> None:
    permutation = np.random.default_rng(0).permutation(12)
    permutation[:4] = np.random.default_rng(1).permutation(4)
    permutation[4:] = 4 + np.random.default_rng(2).permutation(8)
    expected = [set(permutation[:n]) == set(range(n)) for n in range(1, 13)]
    assert closed_prefixes(permutation).tolist() == expected
    assert expected[3] and expected[11]


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5])
def test_a_fraction_permutes_that_share_of_each_group(tmp_path, entangled, fraction) -> None:
    out = mix_modality(
        entangled, tmp_path / "f.h5", MixConfig(seed=2, fraction=fraction, block_codes=5)
    )
    config = h5io.read_attrs(out)["config"]
    assert config["fraction"] == fraction
    permutation = read(out, "train", "permutation/fashion-mnist")
    chosen = read(out, "train", "mixed/fashion-mnist").astype(bool)
    labels, codes = read(entangled, "train", "labels"), read(entangled, "train", "code_index")
    np.testing.assert_array_equal(permutation[~chosen], np.flatnonzero(~chosen))
    np.testing.assert_array_equal(np.sort(permutation[chosen]), np.flatnonzero(chosen))
    np.testing.assert_array_equal(labels[permutation], labels)
    for block in range(4):  # 20 codes / 5: each (block, class) group has 5 rows
        for label in range(10):
            group = (codes // 5 == block) & (labels == label)
            assert chosen[group].sum() == int(np.floor(fraction * 5 + 0.5))


def test_fraction_outside_the_unit_interval_is_one_line(tmp_path: Path, entangled) -> None:
    runner = CliRunner()
    for value in ("1.5", "-0.1", "nan"):
        out = tmp_path / f"x{value}.h5"
        result = runner.invoke(
            app, ["shuffle", str(entangled), "--out", str(out), "--fraction", value]
        )
        assert_one_line_error(result, "--fraction")
        assert not out.exists()
    assert not list(tmp_path.iterdir())
