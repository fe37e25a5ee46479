"""One generic training loop for every model in mmgen.

The loop has nothing to do with any particular model: a model only needs a method
``loss_on(batch, generator) -> dict[str, Tensor]`` whose ``"loss"`` entry is minimised; every
other entry is averaged and logged under its name.

**Stages.** A model may declare training stages (``Staged``): ``stages``, the names in order,
``set_stage(stage)`` to select the loss of a stage, and ``stage_parameters(stage)``, the
parameters that stage trains. ``fit`` runs every stage in order, ``config.epochs`` epochs each,
with its own optimiser over that stage's parameters (the others are frozen for the stage and
unfrozen after). tVAE trains its joint part, then its uni-modal encoders (docs/method.md); a model
without ``stages`` has the single stage ``"train"``. Epochs are numbered across stages, so a
run's ``epochs_done`` says which stage it reached.

The data sets are small (MNIST: 60,000 × 784 floats = 188 MB), so they live in memory as
tensors on the training device: a batch is one ``index_select`` per tensor, with no per-sample
Python work and no DataLoader. Randomness is keyed by position (``mmgen.rng``): epoch ``e`` of
stage ``s`` draws its shuffle and its reparameterisation noise from the stream
``(seed, "train", s, e)`` and its test-set noise from ``(seed, "eval", s, e)``, on the data's
device, so a run resumed after any epoch continues with exactly the draws of an uninterrupted
run.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mmgen import rng
from mmgen.config import require_finite, require_positive
from mmgen.errors import UsageError

log = logging.getLogger(__name__)

# RMSprop with Keras' defaults (ρ = 0.9, ε = 1e-7), as the authors' code trained the CVAEs;
# with PyTorch's own defaults (α = 0.99) the 2-d posterior stayed collapsed for longer.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "rmsprop": functools.partial(torch.optim.RMSprop, alpha=0.9, eps=1e-7),
    "adam": torch.optim.Adam,
}
SINGLE_STAGE = ("train",)  # the stages of a model that declares none

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the released MNIST-E CVAEs, docs/method.md)."""

    epochs: int = 100  # per stage: a two-stage model (tVAE) trains 2 · epochs in all
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "rmsprop"  # a key of OPTIMIZERS; the multi-modal VAEs use "adam"
    seed: int = 0  # keys every random draw of the run: init, shuffles, noise
    eval_batch_size: int = 1000  # test-set batches; no effect on results beyond float rounding

    def __post_init__(self) -> None:
        require_positive("epochs", self.epochs)
        require_positive("batch_size", self.batch_size)
        require_positive("lr", self.lr)
        require_finite("lr", self.lr)
        require_positive("eval_batch_size", self.eval_batch_size)
        rng.check_seed(self.seed)
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}"
            )


@runtime_checkable
class Staged(Protocol):
    """A model trained in several stages (see the module docstring)."""

    stages: tuple[str, ...]

    def set_stage(self, stage: str) -> None: ...

    def stage_parameters(self, stage: str) -> Iterable[nn.Parameter]: ...


def model_stages(model: nn.Module) -> tuple[str, ...]:
    """The training stages of ``model`` in order (``SINGLE_STAGE`` unless it is ``Staged``)."""
    return tuple(model.stages) if isinstance(model, Staged) else SINGLE_STAGE


def stage_parameters(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """The parameters ``stage`` trains: the model's choice, or all of them."""
    if isinstance(model, Staged):
        return list(model.stage_parameters(stage))
    return list(model.parameters())


def stage_of_epoch(model: nn.Module, epochs_done: int, config: TrainConfig) -> str:
    """The stage in which a run that has done ``epochs_done`` epochs continues (or ended)."""
    stages = model_stages(model)
    return stages[min(epochs_done // config.epochs, len(stages) - 1)]


def train_stream(seed: int, stage: str, epoch: int, device: torch.device) -> torch.Generator:
    """Shuffle and noise of epoch ``epoch`` (0-based, within ``stage``) of a run."""
    return rng.stream(seed, "train", stage, epoch, device=device)


def eval_stream(seed: int, stage: str, epoch: int, device: torch.device) -> torch.Generator:
    """Noise of the test-set evaluation after epoch ``epoch`` of ``stage``."""
    return rng.stream(seed, "eval", stage, epoch, device=device)


def make_optimizer(
    parameters: Iterable[nn.Parameter], config: TrainConfig
) -> torch.optim.Optimizer:
    """The optimiser named by ``config.optimizer`` at learning rate ``config.lr``."""
    return OPTIMIZERS[config.optimizer](parameters, lr=config.lr)


def stage_optimizer(
    model: nn.Module,
    epochs_done: int,
    config: TrainConfig,
    state: dict | None = None,
) -> torch.optim.Optimizer:
    """The optimiser ``fit`` trains epoch ``epochs_done + 1`` with: pass it with
    ``start_epoch=epochs_done`` to resume a run.

    Args:
        model: the model, its weights (and stage) restored.
        epochs_done: epochs the interrupted run completed, over all stages.
        config: the run's settings.
        state: the optimiser state saved after epoch ``epochs_done`` (``on_stage_start``
            hands a checkpointing caller the optimiser in use). Ignored when that epoch ended
            a stage: the next stage starts a fresh optimiser over other parameters.
    """
    stage = stage_of_epoch(model, epochs_done, config)
    optimizer = make_optimizer(stage_parameters(model, stage), config)
    if state is not None and epochs_done % config.epochs != 0:
        optimizer.load_state_dict(state)
    return optimizer


@contextlib.contextmanager
def training_only(model: nn.Module, parameters: Iterable[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter of ``model`` but ``parameters`` inside the block, then restore.

    Frozen weights get no gradient, so a stage that must not move the decoders (tVAE's
    uni-modal stage) neither trains nor pays for them.
    """
    chosen = {id(p) for p in parameters}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, requires_grad in saved:
            p.requires_grad_(requires_grad and id(p) in chosen)
        yield
    finally:
        for p, requires_grad in saved:
            p.requires_grad_(requires_grad)


def batches(data: Batch, batch_size: int, order: Tensor | None = None) -> Iterable[Batch]:
    """Slice a dict of equal-length tensors into batches, in ``order`` when given."""
    size = len(next(iter(data.values())))
    for start in range(0, size, batch_size):
        if order is None:
            yield {k: v[start : start + batch_size] for k, v in data.items()}
        else:
            index = order[start : start + batch_size]
            yield {k: v.index_select(0, index) for k, v in data.items()}


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


def check_finite_losses(record: Mapping[str, float | str], config: TrainConfig) -> None:
    """Stop a run whose losses turned NaN or infinite (before its epoch is saved or reported).

    Raises:
        UsageError: naming the epoch, the loss term and the settings to change.
    """
    for name, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(
                f"training diverged: {name} is {value} in epoch {record['epoch']} (learning "
                f"rate {config.lr:g}); nothing of this epoch was saved: lower --lr or --beta"
            )


def fit(
    model: nn.Module,
    train: Batch,
    test: Batch | None,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    on_step: Callable[[dict[str, float]], None] | None = None,
    on_epoch_end: Callable[[int, dict[str, float | str]], None] | None = None,
    on_stage_start: Callable[[str, torch.optim.Optimizer], None] | None = None,
) -> list[dict[str, float | str]]:
    """Train every stage of ``model`` from epoch ``start_epoch`` on; one record per epoch.

    Stage ``k`` (0-based) runs the epochs ``k·E + 1 … (k+1)·E`` with ``E = config.epochs``.

    Args:
        model: anything with ``loss_on(batch, generator)``, optionally ``Staged``; already on
            the data's device.
        train: named tensors of equal length on the training device.
        test: the same for the held-out split, evaluated after every epoch (or ``None``).
        config: optimisation settings; ``epochs`` counts per stage.
        optimizer: the optimiser of the stage ``start_epoch`` falls in, e.g. with a saved state
            loaded (``stage_optimizer`` builds it); later stages get fresh ones. ``None``: a
            fresh one for every stage.
        start_epoch: epochs already done, over all stages (resuming).
        on_step: called after every step with ``{"batch": batch size}`` (progress bars).
        on_epoch_end: called with ``(epochs done, record)`` (checkpointing, logging).
        on_stage_start: called with ``(stage, its optimiser)`` before a stage's first epoch
            of this call, so that a checkpoint can save the optimiser in use.

    Returns:
        Records ``{"epoch", "stage", "train_<term>", "test_<term>"}`` of the epochs run.

    Raises:
        UsageError: ``start_epoch`` is outside ``0 … len(stages) · epochs``.
    """
    stages = model_stages(model)
    total = len(stages) * config.epochs
    if not 0 <= start_epoch <= total:
        raise UsageError(
            f"cannot resume at epoch {start_epoch}: the run has {total} epochs "
            f"({len(stages)} stage(s) × {config.epochs})"
        )
    device = next(iter(train.values())).device
    history: list[dict[str, float | str]] = []
    for index, stage in enumerate(stages):
        first, last = index * config.epochs, (index + 1) * config.epochs
        if start_epoch >= last:
            continue
        if isinstance(model, Staged):
            model.set_stage(stage)
        parameters = stage_parameters(model, stage)
        if optimizer is None:
            optimizer = make_optimizer(parameters, config)
        if on_stage_start is not None:
            on_stage_start(stage, optimizer)
        log.info("stage %s: %d trainable tensors", stage, len(parameters))
        with training_only(model, parameters):
            for epoch in range(max(start_epoch, first), last):
                within = epoch - first
                record: dict[str, float | str] = {"epoch": epoch + 1, "stage": stage}
                generator = train_stream(config.seed, stage, within, device)
                for name, value in train_epoch(
                    model, train, optimizer, config.batch_size, generator, on_step
                ).items():
                    record[f"train_{name}"] = value
                if test is not None:
                    generator = eval_stream(config.seed, stage, within, device)
                    for name, value in evaluate_loss(
                        model, test, config.eval_batch_size, generator
                    ).items():
                        record[f"test_{name}"] = value
                log.info("epoch %d: %s", epoch + 1, record)
                check_finite_losses(record, config)
                history.append(record)
                if on_epoch_end is not None:
                    on_epoch_end(epoch + 1, record)
        optimizer = None  # the next stage trains other parameters: a fresh optimiser
    return history
