"""Several processes, GPUs or nodes through ``torchrun``: the engine PyTorch users already have.

``torchrun --nproc-per-node N -m mmgen evaluate …`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (across nodes too, with
``--nnodes`` and a rendezvous; under Slurm, ``srun`` starts one ``torchrun`` per node). A
``World`` is what a process knows of that group: its rank, the group's size, and the collective
operations the commands need (a barrier, a broadcast from rank 0, a gather to rank 0).

The command line opens the ``session``: with more than one process it starts the default
process group, gloo on CPUs and NCCL on GPUs with one GPU per rank (``cuda:LOCAL_RANK``), and
closes it at the end. One process (no torchrun) needs no group, and every operation is then a
no-op, so the library runs the same code either way.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from mmgen.device import resolve_device
from mmgen.errors import UsageError

T = TypeVar("T")
# A rank waits at a collective while the others work (rank 0 training the classifiers, say):
# far longer than torch's default of 30 minutes.
TIMEOUT = datetime.timedelta(hours=24)
ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one command (one process: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank within its node: which GPU it uses

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the outputs and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device``."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def owns(self, index: int) -> bool:
        """Whether item ``index`` of a list shared by all ranks is this rank's (round robin)."""
        return index % self.size == self.rank

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank (any picklable value)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` in rank order on rank 0; ``None`` on the other ranks."""
        if not self.distributed:
            return [value]
        values: list[Any] | None = [None] * self.size if self.is_main else None
        dist.gather_object(value, values, dst=0)
        return values


def world_from_environment(environ: Mapping[str, str] | None = None) -> World:
    """The ``World`` that torchrun's variables describe (none set: one process).

    Raises:
        UsageError: the variables are partly set or not integers in range.
    """
    environ = os.environ if environ is None else environ
    present = [name for name in ENVIRONMENT if name in environ]
    if not present:
        return World()
    if len(present) < len(ENVIRONMENT):
        missing = sorted(set(ENVIRONMENT) - set(present))
        raise UsageError(
            f"{', '.join(present)} set but not {', '.join(missing)}; start the processes "
            "with torchrun (it sets all three) or unset them"
        )
    try:
        rank, size, local_rank = (int(environ[name]) for name in ENVIRONMENT)
    except ValueError:
        values = ", ".join(f"{name}={environ[name]!r}" for name in ENVIRONMENT)
        raise UsageError(f"torchrun's variables must be integers, got {values}") from None
    if not (size >= 1 and 0 <= rank < size and local_rank >= 0):
        raise UsageError(f"RANK={rank} does not fit WORLD_SIZE={size} (LOCAL_RANK={local_rank})")
    return World(rank=rank, size=size, local_rank=local_rank)


def backend_for(device: torch.device) -> str:
    """NCCL for GPUs, gloo for CPUs."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def session(device: str | torch.device = "auto") -> Iterator[World]:
    """The command's ``World``; with several processes, the process group for the block.

    Args:
        device: the command's ``--device``; picks the backend, and under NCCL the rank's GPU.

    Raises:
        UsageError: torchrun's variables are inconsistent, or a rank has no GPU of its own.
    """
    world = world_from_environment()
    if not world.distributed:
        yield world
        return
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK {world.local_rank} has no GPU: this node has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        torch.cuda.set_device(world.local_rank)  # NCCL's collectives run on the current GPU
    dist.init_process_group(backend_for(resolved), timeout=TIMEOUT)
    try:
        yield world
    finally:
        dist.destroy_process_group()
