"""docs/format.md matches the files: every documented key is read from a real generated file,
and a key the file holds that the page does not document fails the test."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from conftest import make_checkpoint
from mmgen.cli import app
from mmgen.data.h5io import read_attrs

DOC = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
runner = CliRunner()


def section(heading: str) -> str:
    return DOC.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_keys(heading: str) -> dict[str, str]:
    """First-column names of the tables of a section → the rest of the row."""
    rows = re.findall(r"^\| `([^`]+)` \|(.*)$", section(heading), flags=re.MULTILINE)
    return dict(rows)


def names(text: str) -> set[str]:
    return set(re.findall(r"`([a-z_0-9]+)`", text))


ROOT = table_keys("Root attributes")
DATASETS = table_keys("Per-split datasets")
ENVIRONMENT = names(ROOT["environment"].split("`mmgen.device.environment`):", 1)[1].split(".")[0])
SOURCE_KEYS = names(ROOT["sources"]) & {
    "name", "class_names", "files", "image_shape", "checkpoint", "checkpoint_sha256", "root",
}  # fmt: skip
GENERATE_TEXT = re.search(r"`GenerateConfig` fields:(.*?)\n\n", DOC, re.S).group(1)
GENERATE_FIELDS = names(re.sub(r"\([^)]*\)", "", GENERATE_TEXT))  # values are in parentheses


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("format")
    cvaes = [
        make_checkpoint(folder / "cvae-mnist", "mnist", seed=0),
        make_checkpoint(folder / "cvae-fashion", "fashion-mnist", seed=1),
    ]
    entangled, mixed = folder / "e.h5", folder / "m.h5"
    flags = [item for cvae in cvaes for item in ("--cvae", str(cvae))]
    small = ["--n-train", "20", "--n-test", "10", "--device", "cpu", "--quiet"]
    result = runner.invoke(app, ["generate", *flags, "--out", str(entangled), *small])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["shuffle", str(entangled), "--out", str(mixed), "--quiet"])
    assert result.exit_code == 0, result.output
    return {"entangled": entangled, "mixed": mixed}


@pytest.mark.parametrize("kind", ["entangled", "mixed"])
def test_root_attributes_are_exactly_the_documented_ones(files, kind) -> None:
    attrs = read_attrs(files[kind])
    optional = {"nuisance"}  # PolyMNIST-style files only (tests/test_polymnist.py)
    documented = set(ROOT) - optional - ({"parent"} if kind == "entangled" else set())
    assert set(attrs) == documented, "format.md's root attributes differ from the file's"
    assert set(attrs["environment"]) == ENVIRONMENT, "format.md's environment keys"
    for record in attrs["sources"].values():
        assert set(record) <= SOURCE_KEYS, f"undocumented source keys {set(record) - SOURCE_KEYS}"
        assert {"name", "class_names", "files", "checkpoint", "checkpoint_sha256"} <= set(record)
    if kind == "entangled":
        assert set(attrs["config"]) == GENERATE_FIELDS, "format.md's GenerateConfig fields"
    else:
        assert set(attrs["parent"]) == names(ROOT["parent"]) - {"mmgen"} | {"mmgen_version"}


@pytest.mark.parametrize("kind", ["entangled", "mixed"])
def test_per_split_datasets_are_documented(files, kind) -> None:
    with h5py.File(files[kind], "r") as handle:
        modalities = list(handle["train"]["images"])
        for split in ("train", "test"):
            found: set[str] = set()
            handle[split].visititems(
                lambda name, item, found=found: found.add(name)
                if isinstance(item, h5py.Dataset)
                else None
            )
            generic = {re.sub(rf"/({'|'.join(modalities)})$", "/<m>", p) for p in found}
            assert generic <= set(DATASETS), f"undocumented datasets {generic - set(DATASETS)}"
            expected = {"images/<m>", "labels", "z", "code_index"}
            expected |= {"permutation/<m>"} if kind == "mixed" else set()
            assert generic == expected
            assert handle[split].attrs["size"] == len(handle[split]["labels"])


def test_the_reading_snippet_runs_on_a_real_file(files, monkeypatch) -> None:
    (snippet,) = re.findall(r"```python\n(.*?)```", section("Reading without mmgen"), re.S)
    monkeypatch.chdir(files["entangled"].parent)
    files["entangled"].rename(files["entangled"].with_name("mnist-e.h5"))
    try:
        scope: dict = {}
        exec(snippet, scope)
        assert set(scope["x"]) == {"mnist", "fashion-mnist"}
        assert scope["x"]["mnist"].shape == (20, 1, 28, 28) and scope["z"].shape == (20, 2)
    finally:
        files["entangled"].with_name("mnist-e.h5").rename(files["entangled"])
