"""``mmgen.data.streaming``: the lazy dataset gives MultimodalDataset's items, with flat memory.

The file spans three HDF5 chunks (2,600 tuples, 1,024 rows a chunk), so chunk boundaries,
the partial last chunk and the cache's eviction are all exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mmgen.data.h5io import CHUNK_ROWS, MultimodalDataset, create_dataset, standard_fields
from mmgen.data.header import DatasetHeader, ModalitySource
from mmgen.data.streaming import ChunkShuffleSampler, StreamingDataset, streaming_loader

N = 2600
SHAPES = {"a": (1, 8, 8), "b": (3, 4, 4)}


@pytest.fixture(scope="module")
def three_chunks(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stream") / "s.h5"
    header = DatasetHeader(
        kind="entangled",
        modalities=tuple(SHAPES),
        sources={m: ModalitySource(name=m, image_shape=s) for m, s in SHAPES.items()},
        num_classes=10,
        class_names=tuple(str(k) for k in range(10)),
        latent_dim=2,
        seed=0,
        config={},
    )
    generator = np.random.default_rng(1)
    sizes = {"train": N, "test": 10}
    with create_dataset(path, header, sizes, standard_fields(SHAPES, "uint8", 2)) as writer:
        for split, size in sizes.items():
            images = {
                m: generator.integers(0, 256, (size, *s), np.uint8) for m, s in SHAPES.items()
            }
            writer.append(
                split,
                {
                    "images/a": images["a"][:, 0],
                    "images/b": images["b"],
                    "labels": generator.integers(0, 10, size),
                    "z": generator.normal(size=(size, 2)).astype(np.float32),
                    "code_index": np.arange(size),
                },
            )
    return path


def gather(loader) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {"a": [], "b": [], "label": [], "z": []}
    for batch in loader:
        for m in SHAPES:
            parts[m].append(batch["images"][m].numpy())
        parts["label"].append(batch["label"].numpy())
        parts["z"].append(batch["z"].numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def test_items_equal_the_in_memory_datasets(three_chunks) -> None:
    memory = MultimodalDataset(three_chunks, "train")
    stream = StreamingDataset(three_chunks, "train", cache_chunks=2)
    assert len(stream) == len(memory) == N and stream.num_chunks == 3
    for index in [0, 1, CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS + 5, N - 1, -1, 17, 5]:
        got, want = stream[index], memory[index]
        for m in SHAPES:
            assert got["images"][m].dtype == torch.float32
            assert torch.equal(got["images"][m], want["images"][m])
        assert int(got["label"]) == int(want["label"]) and torch.equal(got["z"], want["z"])
        assert len(stream._cache) <= 2  # memory bounded by the cache, not by N
    with pytest.raises(IndexError):
        stream[N]
    # A batch needing a held chunk that is least recently used and one that is not held: the
    # held one must not be evicted to make room.
    stream = StreamingDataset(three_chunks, "train", cache_chunks=2)
    stream[0], stream[CHUNK_ROWS]
    pair = stream[[1, 2 * CHUNK_ROWS + 1]]
    assert torch.equal(pair["label"], memory.labels[[1, 2 * CHUNK_ROWS + 1]])
    for m in SHAPES:
        assert torch.equal(pair["images"][m], memory.images[m][[1, 2 * CHUNK_ROWS + 1]])
    picks = [N - 1, 3, CHUNK_ROWS + 2, 3, 0]  # across chunks, repeated, out of order
    batch = stream[picks]
    assert torch.equal(batch["label"], memory.labels[picks])
    assert torch.equal(batch["z"], memory.z[picks])
    for m in SHAPES:
        assert torch.equal(batch["images"][m], memory.images[m][picks])


def test_sampler_is_a_seeded_chunk_local_permutation() -> None:
    class Fake:
        chunk_rows = 100

        def __init__(self, size: int = 1050) -> None:
            self.size = size

        def __len__(self) -> int:
            return self.size

    sampler = ChunkShuffleSampler(Fake(), seed=3, window=2)
    first = list(sampler)
    assert sorted(first) == list(range(1050)) and first != sorted(first)
    assert list(ChunkShuffleSampler(Fake(), seed=3, window=2)) == first
    sampler.set_epoch(1)
    assert list(sampler) != first
    whole = list(ChunkShuffleSampler(Fake(1000), seed=3, window=2))
    windows = [whole[start : start + 200] for start in range(0, 1000, 200)]
    for window in windows:  # each window of 200 rows touches exactly 2 chunks, interleaved
        chunks = [i // 100 for i in window]
        assert len(set(chunks)) == 2
        assert sum(a != b for a, b in zip(chunks, chunks[1:], strict=False)) > 20
        for chunk in set(chunks):  # and the rows of a chunk come in a shuffled order
            rows = [i for i in window if i // 100 == chunk]
            assert rows != sorted(rows)
    # the chunks are permuted too: not windows {0, 1}, {2, 3}, ... in file order
    assert [sorted({i // 100 for i in w}) for w in windows] != [[k, k + 1] for k in range(0, 10, 2)]


def test_a_forked_process_opens_its_own_handle(three_chunks) -> None:
    import multiprocessing
    import os

    stream = StreamingDataset(three_chunks, "train")
    parent_item = stream[1500]
    queue = multiprocessing.get_context("fork").SimpleQueue()

    def child() -> None:
        item = stream[1500]
        queue.put((stream._pid == os.getpid(), int(item["label"])))

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(60)
    assert queue.get() == (True, int(parent_item["label"]))
    assert stream._pid == os.getpid()  # the parent's handle is still its own


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_dataloader_workers_read_the_same_tuples(three_chunks, context) -> None:
    memory = MultimodalDataset(three_chunks, "train")
    stream = StreamingDataset(three_chunks, "train")
    stream[0]  # the parent holds an open handle that a forked worker must not use
    sampler = ChunkShuffleSampler(stream, seed=0)
    order = np.array(list(sampler))
    per_item = DataLoader(
        stream, batch_size=256, sampler=sampler, num_workers=2, multiprocessing_context=context
    )
    batched = streaming_loader(stream, 256, seed=0, num_workers=2, multiprocessing_context=context)
    got = gather(per_item)
    whole = gather(batched)
    for key in got:
        assert np.array_equal(got[key], whole[key])
    assert np.array_equal(got["label"], memory.labels.numpy()[order])
    assert np.array_equal(got["z"], memory.z.numpy()[order])
    for m in SHAPES:
        assert np.array_equal(got[m], memory.images[m].numpy()[order])


def test_documented_streaming_lines_run(tmp_path, monkeypatch) -> None:
    from test_integrations import code_blocks, write_mmgen_file

    monkeypatch.chdir(tmp_path)
    write_mmgen_file(tmp_path / "mnist-e.h5", "entangled")
    (block,) = code_blocks("Large files")
    scope: dict = {}
    exec(block, scope)
    assert scope["labels"].shape[0] > 0 and set(scope["images"]) == {"mnist", "fashion"}


def loader_order(stream: StreamingDataset, loader) -> np.ndarray:
    """The tuple order a loader gave, recovered from z (each row's z is distinct)."""
    z = MultimodalDataset(stream.path, "train").z.numpy()
    lookup = {row.tobytes(): index for index, row in enumerate(z)}
    return np.array([lookup[row.tobytes()] for row in gather(loader)["z"]])


@pytest.mark.parametrize("batch_size", [1, 100, 256, 2600])
def test_every_tuple_once_in_the_seeds_order_whatever_the_batch_size(
    three_chunks, batch_size
) -> None:
    memory = MultimodalDataset(three_chunks, "train")
    stream = StreamingDataset(three_chunks, "train", cache_chunks=2)
    sampler = ChunkShuffleSampler(stream, seed=5, window=1)
    loader = streaming_loader(stream, batch_size, seed=5, window=1)
    got = gather(loader)
    order = np.array(list(sampler))
    assert sorted(order.tolist()) == list(range(N))  # every tuple once
    assert np.array_equal(loader_order(stream, loader), order)  # the sampler's order, whole
    assert np.array_equal(got["label"], memory.labels.numpy()[order])
    for m in SHAPES:
        assert np.array_equal(got[m], memory.images[m].numpy()[order])
    assert len(stream._cache) <= 2 and stream.rows_held <= 2 * stream.chunk_rows


def test_another_seed_or_epoch_gives_another_order(three_chunks) -> None:
    stream = StreamingDataset(three_chunks, "train")
    first = loader_order(stream, streaming_loader(stream, 256, seed=0))
    assert np.array_equal(first, loader_order(stream, streaming_loader(stream, 64, seed=0)))
    other_seed = loader_order(stream, streaming_loader(stream, 256, seed=1))
    loader = streaming_loader(stream, 256, seed=0)
    loader.sampler.sampler.set_epoch(1)
    other_epoch = loader_order(stream, loader)
    for other in (other_seed, other_epoch):
        assert sorted(other.tolist()) == list(range(N))
        assert not np.array_equal(other, first)
    assert not np.array_equal(first, np.arange(N))


def test_each_chunk_is_read_once_per_epoch_and_rows_held_are_bounded(
    three_chunks, monkeypatch
) -> None:
    """Batches of 100 straddle the 1-chunk windows; the default cache (two windows) holds both."""
    from mmgen.data import streaming

    reads: list[tuple[str, int]] = []
    real = streaming.read_into

    def counting(dataset, start, out, path):
        reads.append((dataset.name, start))
        return real(dataset, start, out, path)

    monkeypatch.setattr(streaming, "read_into", counting)
    stream = StreamingDataset(three_chunks, "train", cache_chunks=2)
    for epoch in range(2):
        loader = streaming_loader(stream, 100, seed=0, window=1)
        loader.sampler.sampler.set_epoch(epoch)
        reads.clear()
        assert sum(len(batch["label"]) for batch in loader) == N
        datasets = len(SHAPES) + 2  # images, labels, z
        assert len(reads) == len(set(reads))  # no chunk of any dataset read twice
        if epoch == 0:  # a cold cache reads every chunk (later epochs reuse what is held)
            assert len(reads) == stream.num_chunks * datasets
        assert stream.rows_held == 2 * stream.chunk_rows  # two slots, whatever N
    stream.close()
    assert stream.rows_held == 0


def test_a_damaged_chunk_is_one_clear_error(three_chunks, tmp_path) -> None:
    import h5py

    from mmgen.errors import UsageError

    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(three_chunks.read_bytes())
    with h5py.File(damaged, "r") as handle:
        offset = handle["train/images/b"].id.get_chunk_info(1).byte_offset
    with open(damaged, "r+b") as raw:
        raw.seek(offset)
        raw.write(b"\xff" * 64)
    stream = StreamingDataset(damaged, "train")
    stream[[0, 1]]  # chunk 0 is intact
    with pytest.raises(UsageError, match=r"damaged.h5: cannot read /train/images/b .*damaged"):
        stream[CHUNK_ROWS]
