"""One generic training loop for every model in mmgen.

The loop has nothing to do with any particular model: a model only needs a method
``loss_on(batch, generator) -> dict[str, Tensor]`` whose ``"loss"`` entry is minimised; every
other entry is averaged and logged under its name.

The data sets are small (MNIST: 60,000 × 784 floats = 188 MB), so they live in memory as
tensors on the training device: a batch is one ``index_select`` per tensor, with no per-sample
Python work and no DataLoader. Randomness is keyed by position: epoch ``e`` draws its shuffle
and its reparameterisation noise from a generator seeded with ``(seed, e)``, so a run resumed
from a checkpoint after epoch ``e`` continues with exactly the draws of an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmgen.config import require_positive
from mmgen.errors import UsageError

log = logging.getLogger(__name__)

# RMSprop with Keras' defaults (ρ = 0.9, ε = 1e-7), as the authors' code trained the CVAEs;
# with PyTorch's own defaults (α = 0.99) the 2-d posterior stayed collapsed for longer.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rmsprop": functools.partial(torch.optim.RMSprop, alpha=0.9, eps=1e-7),
    "adam": torch.optim.Adam,
}

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the released MNIST-E CVAEs, METHOD.md §1)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "rmsprop"  # a key of OPTIMIZERS; the multi-modal VAEs use "adam"
    seed: int = 0  # keys every random draw of the run: init, shuffles, noise
    eval_batch_size: int = 1000  # test-set batches; no effect on results beyond float rounding

    def __post_init__(self) -> None:
        require_positive("epochs", self.epochs)
        require_positive("batch_size", self.batch_size)
        require_positive("lr", self.lr)
        require_positive("eval_batch_size", self.eval_batch_size)
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of epoch ``epoch`` of a run seeded ``seed`` (keyed by position)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def make_optimizer(
    parameters: Iterable[nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer:
    """The optimiser named by ``config.optimizer`` at learning rate ``config.lr``."""
    return OPTIMIZERS[config.optimizer](parameters, lr=config.lr)


def batches(data: Batch, batch_size: int, order: Tensor | None = None) -> Iterable[Batch]:
    """Slice a dict of equal-length tensors into batches, in ``order`` when given."""
    size = len(next(iter(data.values())))
    for start in range(0, size, batch_size):
        if order is None:
            yield {k: v[start : start + batch_size] for k, v in data.items()}
        else:
            index = order[start : start + batch_size]
            yield {k: v.index_select(0, index) for k, v in data.items()}


def num_batches(data: Batch, batch_size: int) -> int:
    return math.ceil(len(next(iter(data.values()))) / batch_size)


def train_epoch(
    model: nn.Module,
    data: Batch,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    generator: torch.Generator,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, float]:
    """One pass over ``data`` in a seeded random order; returns the mean of every loss term."""
    model.train()
    size = len(next(iter(data.values())))
    order = torch.randperm(size, generator=generator, device=generator.device)
    totals: dict[str, Tensor] = {}
    for batch in batches(data, batch_size, order):
        terms = model.loss_on(batch, generator)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        weight = len(next(iter(batch.values())))
        for name, value in terms.items():
            # Accumulate on the device: no host synchronisation per step.
            totals[name] = totals.get(name, 0.0) + value.detach() * weight
        if on_step is not None:
            on_step({"batch": weight})
    return {name: float(total) / size for name, total in totals.items()}


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, data: Batch, batch_size: int, generator: torch.Generator
) -> dict[str, float]:
    """Mean of every loss term over ``data`` in eval mode (noise from ``generator``)."""
    model.eval()
    size = len(next(iter(data.values())))
    totals: dict[str, Tensor] = {}
    for batch in batches(data, batch_size):
        weight = len(next(iter(batch.values())))
        for name, value in model.loss_on(batch, generator).items():
            totals[name] = totals.get(name, 0.0) + value * weight
    return {name: float(total) / size for name, total in totals.items()}


def fit(
    model: nn.Module,
    train: Batch,
    test: Batch | None,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` from ``start_epoch`` to ``config.epochs``; returns one record per epoch.

    Args:
        model: anything with ``loss_on(batch, generator)``; already on the data's device.
        train: named tensors of equal length on the training device.
        test: the same for the held-out split, evaluated after every epoch (or ``None``).
        config: optimisation settings.
        optimizer: resume with this optimiser state; a fresh one is made when ``None``.
        start_epoch: epochs already done (resuming).
        on_step: called after every step with ``{"batch": batch size}`` (progress bars).
        on_epoch_end: called with ``(epochs done, record)`` (checkpointing, logging).
    """
    device = next(iter(train.values())).device
    if optimizer is None:
        optimizer = make_optimizer(model.parameters(), config)
    history = []
    for epoch in range(start_epoch, config.epochs):
        generator = epoch_generator(config.seed, epoch, device)
        record = {"epoch": epoch + 1}
        for name, value in train_epoch(
            model, train, optimizer, config.batch_size, generator, on_step
        ).items():
            record[f"train_{name}"] = value
        if test is not None:
            eval_generator = epoch_generator(config.seed, -1 - epoch, device)
            for name, value in evaluate_loss(
                model, test, config.eval_batch_size, eval_generator
            ).items():
                record[f"test_{name}"] = value
        log.info("epoch %d: %s", epoch + 1, record)
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    return history
