"""``mmgen.plots``: figures without global side effects, written as real PNGs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from mmgen import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SRC = Path(__file__).resolve().parents[1] / "src"

# Imports every module that draws, builds the command line, draws one figure, and reports the
# backend and whether pyplot (global figure state) was ever imported.
IMPORT_CHECK = """
import json, sys, tempfile
import numpy as np
import matplotlib
before = matplotlib.get_backend()
import mmgen.plots, mmgen.evaluate, mmgen.cvae_training, mmgen.inspect
from mmgen.cli import app
path = tempfile.mkdtemp() + "/f.png"
mmgen.plots.latent_scatter(np.zeros((4, 2)), np.arange(4) % 2, ["a", "b"], path, "t")
print(json.dumps({"before": before, "after": matplotlib.get_backend(),
                  "pyplot": "matplotlib.pyplot" in sys.modules}))
"""


def read_png(path: Path) -> np.ndarray:
    """The RGB pixels ``(H, W, 3)`` in [0, 1] of a PNG, after checking its signature."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)[..., :3]


def has_colour(pixels: np.ndarray, colour: str, tolerance: float = 0.02) -> bool:
    return bool((np.abs(pixels - np.array(to_rgb(colour))).max(axis=-1) < tolerance).any())


def test_importing_mmgen_keeps_the_backend_and_pyplot_untouched() -> None:
    # pdf: a backend the user could have chosen that is not the Agg the old code forced.
    env = {**os.environ, "MPLBACKEND": "pdf", "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["before"] == state["after"] == "pdf"
    assert state["pyplot"] is False


def test_scatter_by_class_draws_each_class_at_its_points() -> None:
    points = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0], [8.0, 9.0]])
    labels = np.array([1, 0, 1, 2, 0])
    axis = Figure().subplots()
    plots.scatter_by_class(axis, points, labels, ["zero", "one", "two"])
    collections = axis.collections
    assert [c.get_label() for c in collections] == ["zero", "one", "two"]
    for index, collection in enumerate(collections):
        np.testing.assert_array_equal(collection.get_offsets(), points[labels == index])
        np.testing.assert_allclose(
            collection.get_facecolor()[0, :3], plots.CLASS_COLOURS(index)[:3]
        )


def test_scatter_by_class_puts_a_one_dimensional_latent_on_a_line() -> None:
    axis = Figure().subplots()
    plots.scatter_by_class(axis, np.array([[1.5], [-2.0]]), np.array([0, 0]), ["only"])
    np.testing.assert_array_equal(axis.collections[0].get_offsets(), [[1.5, 0.0], [-2.0, 0.0]])


def test_latent_scatter_writes_the_colours_of_the_classes_present(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    means = rng.normal(size=(300, 2))
    labels = np.zeros(300, dtype=np.int64)  # class 0 only: its colour, never class 1's
    path = plots.latent_scatter(means, labels, ["0", "1"], tmp_path / "latent.png", "test")
    assert path.stat().st_size > 5_000
    pixels = read_png(path)
    blue, orange = plots.CLASS_COLOURS(0), plots.CLASS_COLOURS(1)
    # The scatter's alpha blends class 0's colour with white: look for a dark-enough blue mass.
    data_pixels = pixels[(pixels.sum(axis=-1) < 2.5)]
    assert len(data_pixels) > 500
    blueish = (data_pixels[:, 2] > data_pixels[:, 0] + 0.2).sum()
    orangeish = (data_pixels[:, 0] > data_pixels[:, 2] + 0.2).sum()
    # The legend draws both classes' markers; the points are class 0's alone.
    assert blueish > 20 * max(orangeish, 1), (blue, orange, blueish, orangeish)


def test_image_grid_shows_the_images(tmp_path: Path) -> None:
    rows = np.zeros((2, 3, 28, 28), dtype=np.float32)
    rows[1] = 1.0  # second row white, first row black
    path = plots.image_grid(rows, ["black", "white"], tmp_path / "grid.png", "grid")
    pixels = read_png(path)
    assert path.stat().st_size > 2_000
    grey = pixels.mean(axis=-1)
    assert (grey < 0.05).sum() > 1_000 and (grey > 0.95).sum() > 1_000


def test_same_figure_gives_the_same_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    means, labels = rng.normal(size=(100, 2)), rng.integers(0, 3, 100)
    first = plots.latent_scatter(means, labels, list("abc"), tmp_path / "1.png", "t")
    second = plots.latent_scatter(means, labels, list("abc"), tmp_path / "2.png", "t")
    assert first.read_bytes() == second.read_bytes()


def test_latent_grid_has_a_panel_per_encoder_and_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    panels = {
        "mnist-e": {"a+b": rng.normal(size=(50, 2)), "a": rng.normal(size=(50, 2))},
        "mnist-me": {"a+b": rng.normal(size=(50, 2))},  # no "a": a "no encoder" panel
    }
    labels = {name: np.arange(50) % 10 for name in panels}
    wide = plots.latent_grid(panels, labels, [str(c) for c in range(10)], tmp_path / "g.png", "t")
    narrow = plots.latent_grid(
        {"mnist-e": {"a+b": panels["mnist-e"]["a+b"]}},
        labels,
        [str(c) for c in range(10)],
        tmp_path / "n.png",
        "t",
    )
    wide_shape, narrow_shape = read_png(wide).shape, read_png(narrow).shape
    assert wide_shape[0] > 1.6 * narrow_shape[0]  # two encoder rows against one
    assert wide_shape[1] > 1.5 * narrow_shape[1]  # two dataset columns against one


@pytest.mark.parametrize(
    "history",
    [
        [{"epoch": 1, "train_loss": 3.0, "test_loss": 4.0}, {"epoch": 2, "train_loss": 2.0}],
        [{"stage": "joint", "train_loss": 3.0, "done": True}, {"train_loss": 2.5}],
        [],
    ],
    ids=["cvae", "no-epoch-and-non-numeric", "empty"],
)
def test_training_curves_accepts_every_history(tmp_path: Path, history) -> None:
    path = plots.training_curves(history, tmp_path / "curves.png", "curves")
    assert path.stat().st_size > 2_000
    read_png(path)


def test_training_curves_draws_one_panel_per_series_name(tmp_path: Path, monkeypatch) -> None:
    figures: list[Figure] = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure) or path)
    history = [
        {"epoch": 1, "train_loss": 3.0, "test_loss": 4.0, "test_kl": 1.0},
        {"epoch": 3, "train_loss": 2.0, "test_loss": 3.5, "test_kl": 0.5},
    ]
    plots.training_curves(history, tmp_path / "c.png", "t")
    kl, loss = figures[0].axes
    assert [kl.get_title(), loss.get_title()] == ["kl", "loss"]
    assert [line.get_label() for line in loss.lines] == ["train", "test"]
    np.testing.assert_array_equal(loss.lines[1].get_xdata(), [1, 3])
    np.testing.assert_array_equal(loss.lines[1].get_ydata(), [4.0, 3.5])


def test_tuple_row_and_stack_rows_lay_out_images_with_grey_gaps() -> None:
    a, b = np.zeros((28, 28)), np.ones((28, 28))
    row = plots.tuple_row([[a, b], [b, a]])
    # tuple 1: a | b, tuple gap, tuple 2: b | a; RGB, grey images on every channel
    assert row.shape == (28, 4 * 28 + 2 * plots.MODALITY_GAP + plots.TUPLE_GAP, 3)
    assert (row[0, 0] == 0.0).all() and (row[0, 28] == plots.GAP_GREY).all()
    assert (row[0, 29] == 1.0).all()
    second_tuple = 2 * 28 + plots.MODALITY_GAP + plots.TUPLE_GAP
    assert (row[0, second_tuple - 1] == plots.GAP_GREY).all() and (row[0, second_tuple] == 1).all()
    stacked = plots.stack_rows([row, a])
    assert stacked.shape == (28 + plots.ROW_GAP + 28, row.shape[1], 3)
    assert (stacked[28 : 28 + plots.ROW_GAP] == plots.GAP_GREY).all()
    assert (stacked[-1, 28:] == plots.GAP_GREY).all()  # the short row is padded


def test_colour_tiles_and_smaller_images_scaled_up_by_nearest_neighbour() -> None:
    colour = np.zeros((3, 32, 32), np.float32)
    colour[0] = 1.0  # pure red
    small = np.arange(64, dtype=np.float32).reshape(1, 8, 8) / 64  # 8×8 grey ramp
    row = plots.tuple_row([[colour, small]])
    assert row.shape == (32, 32 + plots.MODALITY_GAP + 32, 3)  # 8×8 scaled ×4 to the tallest
    np.testing.assert_array_equal(row[5, 7], [1.0, 0.0, 0.0])  # red stays red
    tile = row[:, 32 + plots.MODALITY_GAP :]
    for y, x in ((0, 0), (3, 3), (4, 0), (31, 31), (17, 9)):
        np.testing.assert_array_equal(tile[y, x], [small[0, y // 4, x // 4]] * 3)
    # a non-integer factor: 8 → 28 rows, each source row repeated 3 or 4 times, none skipped
    scaled = plots.as_tile(small, 28)
    assert scaled.shape == (28, 28, 3)
    assert sorted(set(scaled[:, 0, 0].tolist())) == sorted(small[0, :, 0].tolist())


def test_dataset_figure_with_and_without_sweep(tmp_path: Path) -> None:
    images = [np.full((28, 28), c / 10) for c in range(3)]
    rows = [plots.tuple_row([[image, image]] * 2) for image in images]
    plain = plots.dataset_figure(rows, ["0", "1", "2"], "tuples", tmp_path / "plain.png")
    sweep = plots.dataset_figure(
        rows,
        ["0", "1", "2"],
        "tuples",
        tmp_path / "sweep.png",
        sweep_rows=[np.zeros((5, 28, 28)), np.ones((5, 28, 28))],
        sweep_labels=["a", "b"],
        sweep_title="sweep",
    )
    assert read_png(sweep).shape[0] > read_png(plain).shape[0]
    assert plain.stat().st_size > 2_000
    # A modality of 8×8 sweeps at the height of the 28×28 one, as in the tuple grid.
    assert plots.tuple_row([[np.zeros((8, 8))]], 28).shape == (28, 28, 3)
    mixed = plots.dataset_figure(
        rows,
        ["0", "1", "2"],
        "tuples",
        tmp_path / "mixed.png",
        sweep_rows=[np.zeros((5, 28, 28)), np.ones((5, 8, 8))],
        sweep_labels=["a", "b"],
        sweep_title="sweep",
    )
    assert read_png(mixed).shape == read_png(sweep).shape
