"""The small shared helpers of ``mmgen.shared`` against independent computations."""

from __future__ import annotations

import hashlib

import torch

from mmgen.shared import SPLIT_KEYS, file_sha256, safe_name, to_levels, to_unit


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path) -> None:
    data = bytes(range(256)) * 5000  # over one read block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_safe_name() -> None:
    assert safe_name("idx:/a/b", "source") == "idx-a-b"
    assert safe_name("mnist[3,1,7]") == "mnist-3-1-7"
    assert safe_name("::", "source") == "source"


def test_levels_round_trip_and_split_keys() -> None:
    levels = torch.arange(256, dtype=torch.uint8)
    unit = to_unit(levels)
    assert unit.dtype == torch.float32 and float(unit[255]) == 1.0 and float(unit[0]) == 0.0
    assert torch.equal(to_levels(unit), levels)
    assert torch.equal(to_unit(unit), unit)  # floats pass as they are
    assert SPLIT_KEYS == {"train": 0, "test": 1}  # part of every stored file's random key
