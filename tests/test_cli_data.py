"""``mmgen generate | shuffle | pair | inspect`` end to end through typer's CliRunner."""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, make_checkpoint
from mmgen.cli import app
from mmgen.data import h5io

runner = CliRunner()
SMALL = ("--n-train", "100", "--n-test", "50", "--device", "cpu", "--quiet")


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def cvaes(tmp_path: Path) -> list[Path]:
    return [
        make_checkpoint(tmp_path / "cvae-mnist", "mnist", seed=0),
        make_checkpoint(tmp_path / "cvae-fashion", "fashion-mnist", seed=1),
    ]


def generate(cvaes: list[Path], out: Path, *extra: object):
    flags = [item for folder in cvaes for item in ("--cvae", folder)]
    return invoke("generate", *flags, "--out", out, *SMALL, *extra)


def test_generate_shuffle_inspect_end_to_end(tmp_path: Path, cvaes: list[Path]) -> None:
    entangled = tmp_path / "mnist-e.h5"
    result = generate(cvaes, entangled, "--truncation", "box", "--radius", "1.5")
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output
    config = h5io.read_attrs(entangled)["config"]
    assert config["truncation"] == "box" and config["radius"] == 1.5
    mixed = tmp_path / "mnist-me.h5"
    result = invoke("shuffle", entangled, "--out", mixed, "--seed", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert h5io.read_attrs(mixed)["kind"] == "mixed"
    result = invoke("inspect", mixed, "--out", tmp_path / "mixed.png")
    assert result.exit_code == 0, result.output
    assert "mixed dataset" in result.output and "train: 100 tuples" in result.output
    assert (tmp_path / "mixed.png").stat().st_size > 1000
    png = tmp_path / "decoded.png"
    result = invoke("inspect", entangled, "--out", png, *[a for c in cvaes for a in ("--cvae", c)])
    assert result.exit_code == 0, result.output
    assert png.stat().st_size > 1000


def test_generate_options_reach_the_file(tmp_path: Path, cvaes: list[Path]) -> None:
    out = tmp_path / "e.h5"
    result = generate(
        cvaes,
        out,
        "--labels",
        "independent",
        "--decode",
        "sample",
        "--dtype",
        "float32",
        "--modality",
        "digits",
        "--modality",
        "clothes",
        "--seed",
        "4",
        "--batch-size",
        "16",
    )
    assert result.exit_code == 0, result.output
    attrs = h5io.read_attrs(out)
    assert attrs["modalities"] == ["digits", "clothes"] and attrs["seed"] == 4
    assert attrs["config"]["labels"] == "independent"
    with h5py.File(out, "r") as handle:
        images = handle["test/images/clothes"][:]
    assert images.dtype == np.float32 and set(np.unique(images).tolist()) <= {0.0, 1.0}


def test_pair_command(tmp_path: Path, fake_data_root: Path) -> None:
    out = tmp_path / "m-mnist.h5"
    result = invoke(
        "pair", "--source", "mnist", "--source", "fashion-mnist", "--out", out,
        "--data-dir", fake_data_root, "--limit", "40", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert h5io.read_attrs(out)["kind"] == "naive"
    with h5py.File(out, "r") as handle:  # the line reports what the file holds
        sizes = [len(handle[split]["labels"]) for split in ("train", "test")]
    assert f"{sizes[0]:,} train, {sizes[1]:,} test tuples" in result.output
    result = invoke("inspect", out, "--out", tmp_path / "naive.png")
    assert result.exit_code == 0, result.output
    assert "latent size: none" in result.output


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (("--n-train", "0"), ("n_train", "> 0")),
        (("--n-test", "-10"), ("n_test", "> 0")),
        (("--radius", "0"), ("radius", "> 0")),
        (("--n-train", "105"), ("--n-train 105 is not a multiple of the 10 classes",)),
        (("--batch-size", "0"), ("batch_size",)),
        (("--modality", "z", "--modality", "b"), ("invalid modality name 'z'",)),
        (("--modality", "a+b", "--modality", "b"), ("invalid modality name 'a+b'",)),
        (("--n-train", str(10**20)), (f"--n-train {10**20} is too large",)),
        (("--seed", str(10**20)), (f"--seed {10**20} is out of range",)),
        (("--radius", "inf"), ("--radius must be a finite",)),
    ],
)
def test_bad_numbers_are_one_line_errors(
    tmp_path: Path, cvaes: list[Path], extra: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    out = tmp_path / "e.h5"
    assert_one_line_error(generate(cvaes, out, *extra), *fragments)
    assert list(tmp_path.glob("*.h5")) == [] and list(tmp_path.glob(".e.h5*")) == []


@pytest.mark.parametrize(("latent_dim", "num_classes"), [(4, 10), (2, 7)])
def test_mismatched_checkpoints_are_one_line_errors(
    tmp_path: Path, cvaes: list[Path], latent_dim: int, num_classes: int
) -> None:
    odd = make_checkpoint(tmp_path / "odd", "mnist", latent_dim, num_classes)
    result = generate([cvaes[0], odd], tmp_path / "e.h5")
    assert_one_line_error(result, "disagree", str(odd))
    assert_one_line_error(generate(cvaes[:1], tmp_path / "e.h5"), "at least two")


def test_existing_output_and_foreign_files_are_one_line_errors(
    tmp_path: Path, cvaes: list[Path]
) -> None:
    out = tmp_path / "e.h5"
    out.write_bytes(b"old")
    assert_one_line_error(generate(cvaes, out), "already exists", "--overwrite")
    assert out.read_bytes() == b"old"
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["data"] = np.arange(3)
    assert_one_line_error(invoke("inspect", foreign), "not an mmgen dataset")
    assert_one_line_error(
        invoke("shuffle", foreign, "--out", tmp_path / "m.h5"), "not an mmgen dataset"
    )
    assert_one_line_error(invoke("inspect", out), "not an HDF5 file")
    missing = generate([cvaes[0], tmp_path / "nowhere"], tmp_path / "x.h5")
    assert missing.exit_code == 2 and "nowhere" in missing.output


def test_a_full_disk_is_one_line_and_leaves_nothing(
    tmp_path: Path, cvaes: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write fails as on a full disk (the tmpfs reproduction of issue 12 exited 139)."""
    real_open = open

    class FullDisk:
        def __init__(self, raw) -> None:
            self.raw = raw

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.raw, name)

    entangled = tmp_path / "e.h5"
    assert generate(cvaes, entangled).exit_code == 0
    monkeypatch.setattr(h5io, "open", lambda *a, **k: FullDisk(real_open(*a, **k)), raising=False)
    out = tmp_path / "out"
    for result in (
        generate(cvaes, out / "e.h5"),
        invoke("shuffle", entangled, "--out", out / "m.h5", "--quiet"),
    ):
        assert_one_line_error(result, "could not write", "No space left on device")
    assert list(out.iterdir()) == []


def test_inspect_checks_the_checkpoints_and_the_file(tmp_path: Path, cvaes: list[Path]) -> None:
    entangled = tmp_path / "e.h5"
    assert generate(cvaes, entangled).exit_code == 0
    png = tmp_path / "x.png"
    swapped = invoke("inspect", entangled, "--out", png, "--cvae", cvaes[1], "--cvae", cvaes[0])
    assert_one_line_error(swapped, "is not the CVAE that decoded modality 'mnist'",
                          "it decoded modality 'fashion-mnist'")  # fmt: skip
    wide = make_checkpoint(tmp_path / "wide", "mnist", latent_dim=3)
    mismatched = invoke("inspect", entangled, "--out", png, "--cvae", wide, "--cvae", cvaes[1])
    assert_one_line_error(mismatched, "do not fit the file's latent_dim 2", "wide has 3")
    assert not png.exists()
    assert_one_line_error(invoke("shuffle", entangled, "--out", entangled), "is the input file")
    # A file that looks like mmgen's but lacks `kind`, or whose train split is damaged.
    no_kind = tmp_path / "no-kind.h5"
    no_kind.write_bytes(entangled.read_bytes())
    with h5py.File(no_kind, "r+") as handle:
        del handle.attrs["kind"]
    assert_one_line_error(invoke("inspect", no_kind), "lacks the root attribute(s) kind")
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(entangled.read_bytes())
    with h5py.File(damaged, "r") as handle:
        offset = handle["train/images/mnist"].id.get_chunk_info(0).byte_offset
    with open(damaged, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xff" * 64)
    assert_one_line_error(invoke("inspect", damaged), "cannot read /train/images/mnist")
