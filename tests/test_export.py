"""``mmgen export``, ``mmgen card`` and ``mmgen verify`` (docs/integrations.md).

Every export of a five-modality file with random images is read back by the tool it is meant
for (MultiVae's MMNISTDataset, ``datasets.load_dataset``, ``webdataset.WebDataset``, plain
PIL for MoPoE's folders) and compared value by value with the HDF5 file read by plain h5py.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import assert_one_line_error
from export_files import LATENT, SHAPES, SIZES, read_all, write_five
from mmgen.cli import app
from mmgen.export import export

runner = CliRunner()
MODALITIES = list(SHAPES)


def needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(
        bool(missing), reason=f"{', '.join(missing)} absent: pip install the extra (CI does)"
    )


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    return write_five(tmp_path_factory.mktemp("five") / "five.h5")


@pytest.fixture(scope="module")
def truth(five) -> dict[str, dict[str, np.ndarray]]:
    return read_all(five)


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


# ----- polymnist ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def polymnist(five, tmp_path_factory) -> Path:
    return export(five, "polymnist", tmp_path_factory.mktemp("p") / "poly")


def test_polymnist_png_folders_hold_every_image_and_label(polymnist, truth) -> None:
    for split, values in truth.items():
        for k, m in enumerate(MODALITIES):
            files = sorted((polymnist / split / f"m{k}").iterdir())
            assert len(files) == SIZES[split]
            for file in files:
                index, label, suffix = file.name.split(".")
                assert suffix == "png" and int(label) == values["labels"][int(index)]
                image = np.asarray(Image.open(file))
                image = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
                np.testing.assert_array_equal(image, values[f"images/{m}"][int(index)])


@needs("multivae")
def test_multivae_mmnist_dataset_loads_the_export_and_trains_a_step(polymnist, truth) -> None:
    from multivae.data.datasets import MMNISTDataset
    from multivae.models import MoPoE, MoPoEConfig
    from multivae.trainers import BaseTrainer, BaseTrainerConfig

    for split, values in truth.items():
        data = MMNISTDataset(data_path=str(polymnist), split=split)
        assert len(data) == SIZES[split]
        np.testing.assert_array_equal(data.labels.numpy(), values["labels"])
        for k, m in enumerate(MODALITIES):
            tensor = data.images_dict[f"m{k}"]
            assert tensor.dtype == torch.float32 and tensor.shape == (SIZES[split], *SHAPES[m])
            np.testing.assert_allclose(tensor.numpy(), values[f"images/{m}"] / 255.0, atol=1e-7)
        item = data[3]
        assert int(item.labels) == values["labels"][3]
    train = MMNISTDataset(data_path=str(polymnist), split="train")
    config = MoPoEConfig(
        n_modalities=5, latent_dim=2, input_dims={f"m{k}": SHAPES[m] for k, m in enumerate(SHAPES)}
    )
    model = MoPoE(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = BaseTrainerConfig(
        num_epochs=1, per_device_train_batch_size=23, output_dir=str(polymnist.parent / "runs")
    )
    BaseTrainer(model, train, training_config=settings).train()
    moved = [k for k, v in model.state_dict().items() if not torch.equal(before[k], v)]
    assert any("decoder" in k for k in moved)


def test_polymnist_tensors_carry_the_extras(polymnist, truth) -> None:
    for split, values in truth.items():
        folder = polymnist / "MMNIST" / split
        for path in ("z", "code_index", "nuisance/svhn"):
            saved = torch.load(folder / f"{path.replace('/', '.')}.pt", weights_only=True)
            np.testing.assert_array_equal(saved.numpy(), values[path])


# ----- hf ----------------------------------------------------------------------------------------
@needs("datasets", "pyarrow")
def test_hf_parquet_round_trips_every_value(five, truth, tmp_path) -> None:
    import datasets

    out = export(five, "hf", tmp_path / "hf")
    loaded = datasets.load_dataset("parquet", data_dir=str(out), cache_dir=str(tmp_path / "c"))
    assert sorted(loaded) == sorted(SIZES)
    for split, values in truth.items():
        data = loaded[split]
        assert len(data) == SIZES[split]
        assert isinstance(data.features["mnist"], datasets.Image)
        assert data.features["label"].names == [f"class-{k}" for k in range(10)]
        np.testing.assert_array_equal(np.array(data["label"]), values["labels"])
        np.testing.assert_array_equal(np.array(data["z"], dtype=np.float32), values["z"])
        assert np.array(data["z"]).shape == (SIZES[split], LATENT)
        np.testing.assert_array_equal(np.array(data["code_index"]), values["code_index"])
        np.testing.assert_array_equal(
            np.array(data["nuisance.svhn"], dtype=np.float32), values["nuisance/svhn"]
        )
        for m in MODALITIES:
            images = np.stack([np.asarray(image) for image in data[m]])
            images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
            np.testing.assert_array_equal(images, values[f"images/{m}"])


# ----- webdataset --------------------------------------------------------------------------------
@needs("webdataset")
def test_webdataset_shards_hold_one_example_per_tuple(five, truth, tmp_path) -> None:
    import webdataset as wds

    out = export(five, "webdataset", tmp_path / "wds")
    for split, values in truth.items():
        shards = sorted(str(p) for p in out.glob(f"{split}-*.tar"))
        examples = list(wds.WebDataset(shards, shardshuffle=False).decode("rgb8"))
        assert len(examples) == SIZES[split]
        for index, example in enumerate(examples):
            assert example["__key__"] == f"{index:08d}"
            assert int(example["cls"]) == values["labels"][index]
            np.testing.assert_array_equal(example["z.npy"], values["z"][index])
            np.testing.assert_array_equal(
                example["nuisance.svhn.npy"], values["nuisance/svhn"][index]
            )
            for m in MODALITIES:
                image = example[f"{m}.png"]  # (H, W, 3) uint8 with rgb8, grey repeated
                expected = values[f"images/{m}"][index]
                np.testing.assert_array_equal(image.transpose(2, 0, 1)[: len(expected)], expected)


def test_exports_are_deterministic(five, tmp_path) -> None:
    first = export(five, "webdataset", tmp_path / "a")
    second = export(five, "webdataset", tmp_path / "b")
    for name in ("train-000000.tar", "test-000000.tar", "card.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes()


# ----- card and verify ---------------------------------------------------------------------------
def test_card_records_sources_settings_balance_and_every_file(polymnist, truth, five) -> None:
    card = json.loads((polymnist / "card.json").read_text())
    assert card["sources"]["mnist"]["licence"] == "CC BY-SA 3.0"
    assert card["sources"]["fashion-mnist"]["licence"] == "MIT"
    assert card["sources"]["svhn"]["image_shape"] == [3, 32, 32]
    assert card["sources"]["kmnist"]["checkpoint_sha256"] == f"{2:064x}"
    assert card["settings"]["seed"] == 0 and card["settings"]["config"]["n_train"] == 23
    for split, values in truth.items():
        counts = np.bincount(values["labels"], minlength=10)
        assert list(card["class_balance"][split].values()) == counts.tolist()
    import hashlib

    assert card["dataset"]["sha256"] == hashlib.sha256(five.read_bytes()).hexdigest()
    listed = {p.relative_to(polymnist).as_posix() for p in polymnist.rglob("*") if p.is_file()}
    assert set(card["files"]) == listed - {"card.json", "card.md"}
    some = "MMNIST/train/m3.pt"
    assert card["files"][some] == hashlib.sha256((polymnist / some).read_bytes()).hexdigest()
    assert card["export"]["modality_names"]["m3"] == "svhn"
    assert card["truth"] is None and card["truth_note"]
    assert "CC BY-SA 3.0" in (polymnist / "card.md").read_text()


def test_verify_passes_then_names_the_first_changed_missing_or_added_file(five, tmp_path) -> None:
    out = export(five, "polymnist", tmp_path / "poly")
    result = invoke("verify", out)
    assert result.exit_code == 0, result.output
    target = out / "train" / "m1" / "0.{}.png".format(read_all(five)["train"]["labels"][0])
    data = bytearray(target.read_bytes())
    data[-20] ^= 1
    target.write_bytes(bytes(data))
    result = invoke("verify", out)
    assert result.exit_code == 1 and "train/m1/0." in result.output
    assert len(result.output.strip().splitlines()) == 1
    target.unlink()
    result = invoke("verify", out)
    assert result.exit_code == 1 and "missing" in result.output
    export(five, "polymnist", out, overwrite=True)
    (out / "extra.txt").write_text("x")
    result = invoke("verify", out)
    assert result.exit_code == 1 and "extra.txt" in result.output


def test_card_on_demand_and_verify_a_file(five, tmp_path) -> None:
    copy = tmp_path / "copy.h5"
    copy.write_bytes(five.read_bytes())
    result = invoke("card", copy)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "copy.h5.card.json").is_file() and (tmp_path / "copy.h5.card.md").is_file()
    assert invoke("verify", copy).exit_code == 0
    with open(copy, "r+b") as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    result = invoke("verify", copy)
    assert result.exit_code == 1 and "copy.h5" in result.output


# ----- CLI and errors ----------------------------------------------------------------------------
def test_export_command_reports_and_refuses_bad_input_in_one_line(five, tmp_path) -> None:
    result = invoke("export", five, "--to", "webdataset", "--out", tmp_path / "w", "--quiet")
    assert result.exit_code == 0, result.output
    assert re.search(r"34 tuples", result.output)
    assert_one_line_error(
        invoke("export", five, "--to", "webdataset", "--out", tmp_path / "w"), "already exists"
    )
    not_h5 = tmp_path / "x.h5"
    not_h5.write_text("no")
    assert_one_line_error(
        invoke("export", not_h5, "--to", "hf", "--out", tmp_path / "h"), "not an HDF5"
    )
    assert not (tmp_path / "h").exists()  # nothing half-written
    assert_one_line_error(invoke("verify", tmp_path / "nothing"), "does not exist")
    assert_one_line_error(invoke("verify", not_h5), "no card")
    result = invoke("export", five, "--to", "zip", "--out", tmp_path / "z")
    assert result.exit_code == 2


def test_a_failed_export_leaves_nothing(five, tmp_path, monkeypatch) -> None:
    from mmgen.export import FORMATS

    def failing(reader, out, progress):
        (out / "partial.png").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(FORMATS, "webdataset", (failing, "broken"))
    result = invoke("export", five, "--to", "webdataset", "--out", tmp_path / "w")
    assert result.exit_code == 2
    assert not (tmp_path / "w").exists()
    assert [p.name for p in tmp_path.iterdir()] == []
