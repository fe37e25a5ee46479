"""The one trainer: keyed random streams, stages with their own optimisers, exact resuming."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from mmgen import rng
from mmgen.errors import UsageError
from mmgen.models.registry import build_model, load_model, save_model
from mmgen.train import (
    TrainConfig,
    eval_stream,
    fit,
    model_stages,
    stage_of_epoch,
    stage_optimizer,
    train_stream,
)

TINY = {"encoder_widths": (16, 8), "fusion_width": 8, "decoder_widths": (8, 16)}
CONFIG = TrainConfig(epochs=2, batch_size=8, lr=1e-2, optimizer="adam", seed=3)


def tvae(seed: int = 0):
    return build_model("tvae", ("a", "b"), seed=seed, **TINY)


def data(size: int = 24) -> dict[str, torch.Tensor]:
    generator = rng.stream(0, "test-data")
    return {m: torch.rand(size, 1, 28, 28, generator=generator) for m in ("a", "b")}


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_streams_are_keyed_by_seed_stage_and_epoch() -> None:
    cpu = torch.device("cpu")

    def draw(generator: torch.Generator) -> torch.Tensor:
        return torch.rand(4, generator=generator)

    reference = draw(train_stream(0, "joint", 1, cpu))
    assert torch.equal(reference, draw(train_stream(0, "joint", 1, cpu)))
    for other in (
        train_stream(1, "joint", 1, cpu),
        train_stream(0, "unimodal", 1, cpu),
        train_stream(0, "joint", 2, cpu),
        eval_stream(0, "joint", 1, cpu),
    ):
        assert not torch.equal(reference, draw(other))


def test_building_a_tvae_freezes_nothing_and_fit_restores_requires_grad() -> None:
    model = tvae()
    assert model.stage == "joint"
    assert all(p.requires_grad for p in model.parameters())
    fit(model, data(), None, CONFIG)
    assert all(p.requires_grad for p in model.parameters())


def test_fit_trains_each_stage_with_its_own_optimiser() -> None:
    model = tvae()
    started: list[tuple[str, torch.optim.Optimizer]] = []
    snapshots = {0: weights(model)}
    frozen: dict[int, set[str]] = {}

    def on_epoch_end(epoch: int, record: dict) -> None:
        snapshots[epoch] = weights(model)
        frozen[epoch] = {k for k, p in model.named_parameters() if not p.requires_grad}

    history = fit(
        model,
        data(),
        data(8),
        CONFIG,
        on_epoch_end=on_epoch_end,
        on_stage_start=lambda stage, optimizer: started.append((stage, optimizer)),
    )

    assert [(r["epoch"], r["stage"]) for r in history] == [
        (1, "joint"),
        (2, "joint"),
        (3, "unimodal"),
        (4, "unimodal"),
    ]
    assert {"train_loss", "test_loss"} <= set(history[0])
    assert [stage for stage, _ in started] == ["joint", "unimodal"]
    (_, joint), (_, unimodal) = started
    for stage, optimizer in started:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert held == {id(p) for p in model.stage_parameters(stage)}
    assert joint is not unimodal
    # Stage 1 moves the joint encoder and the decoders, not the uni-modal encoders.
    before, after_joint = snapshots[0], snapshots[2]
    changed = {k for k in before if not torch.equal(before[k], after_joint[k])}
    assert changed and all(k.startswith(("encoders.a+b.", "decoders.")) for k in changed)
    # Stage 2 moves exactly the uni-modal encoders.
    changed = {k for k in after_joint if not torch.equal(after_joint[k], snapshots[4][k])}
    assert changed == {k for k in before if k.startswith(("encoders.a.", "encoders.b."))}
    # Only while a stage runs are the other parameters frozen (no gradient is computed).
    assert (
        frozen[1]
        == frozen[2]
        == {k for k in before if k.startswith(("encoders.a.", "encoders.b."))}
    )
    assert frozen[3] == frozen[4] == set(before) - changed
    assert model.stage == "unimodal"


def test_a_saved_tvae_reloads_in_the_stage_it_reached(tmp_path: Path) -> None:
    model = tvae()
    fit(model, data(), None, CONFIG)
    save_model(tmp_path / "tvae", model)
    state = torch.load(tmp_path / "tvae" / "weights.pt", weights_only=True)
    assert int(state["state_dict"]["_extra_state"]) == model.stages.index("unimodal")
    assert load_model(tmp_path / "tvae").stage == "unimodal"

    fresh = tvae()
    save_model(tmp_path / "fresh", fresh)
    assert load_model(tmp_path / "fresh").stage == "joint"


def test_a_state_dict_without_a_stage_loads_in_the_last_stage() -> None:
    """Folders written before the stage was saved were written after training."""
    state = tvae().state_dict()
    del state["_extra_state"]
    model = tvae(seed=1)
    model.load_state_dict(state)
    assert model.stage == "unimodal"


@pytest.mark.parametrize("epochs_done", [1, 2, 3])
def test_resume_across_stages_equals_an_uninterrupted_run(epochs_done: int) -> None:
    """Stop after any epoch (inside a stage or at its end), restore, continue: same bits."""
    train, test = data(), data(8)
    straight = tvae()
    straight_history = fit(straight, train, test, CONFIG)

    interrupted = tvae()
    saved: dict[str, object] = {}
    current: dict[str, torch.optim.Optimizer] = {}

    def checkpoint(epoch: int, record: dict) -> None:
        if epoch == epochs_done:
            saved["model"] = copy.deepcopy(interrupted.state_dict())
            saved["optimizer"] = copy.deepcopy(current["optimizer"].state_dict())

    fit(
        interrupted,
        train,
        test,
        CONFIG,
        on_epoch_end=checkpoint,
        on_stage_start=lambda stage, optimizer: current.__setitem__("optimizer", optimizer),
    )

    resumed = tvae(seed=99)  # other weights, overwritten by the checkpoint
    resumed.load_state_dict(saved["model"])
    assert resumed.stage == stage_of_epoch(resumed, epochs_done - 1, CONFIG)
    optimizer = stage_optimizer(resumed, epochs_done, CONFIG, saved["optimizer"])
    history = fit(resumed, train, test, CONFIG, optimizer=optimizer, start_epoch=epochs_done)

    assert history == straight_history[epochs_done:]
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_fit_refuses_a_start_epoch_outside_the_run() -> None:
    model = tvae()
    assert model_stages(model) == ("joint", "unimodal")
    with pytest.raises(UsageError, match="cannot resume at epoch 5"):
        fit(model, data(), None, CONFIG, start_epoch=5)
    assert fit(model, data(), None, CONFIG, start_epoch=4) == []


def test_a_model_without_stages_has_one() -> None:
    model = torch.nn.Linear(2, 1)
    assert model_stages(model) == ("train",)
    assert stage_of_epoch(model, 7, CONFIG) == "train"


class RecordingModel(torch.nn.Module):
    """Two stages; records the order in which it sees the examples."""

    stages = ("first", "second")

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.stage = "first"
        self.seen: list[tuple[str, list[int]]] = []

    def set_stage(self, stage: str) -> None:
        self.stage = stage

    def stage_parameters(self, stage: str) -> list[torch.nn.Parameter]:
        return [self.weight]

    def loss_on(self, batch, generator):
        if self.training:
            self.seen.append((self.stage, batch["index"].tolist()))
        return {"loss": (self.weight - batch["index"].float()).pow(2).mean()}


def test_every_epoch_shuffles_with_its_own_keyed_stream() -> None:
    model = RecordingModel()
    size, config = 10, TrainConfig(epochs=2, batch_size=10, seed=5)
    fit(model, {"index": torch.arange(size)}, None, config)
    cpu = torch.device("cpu")
    expected = [
        (stage, torch.randperm(size, generator=train_stream(5, stage, epoch, cpu)).tolist())
        for stage in ("first", "second")
        for epoch in range(2)  # epochs count from 0 within each stage
    ]
    assert model.seen == expected
