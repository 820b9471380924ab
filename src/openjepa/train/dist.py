"""Process-group setup: one plain process without torchrun variables, DDP under ``torchrun``."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from openjepa.runtime import pick_device


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this node (they share its CPU cores)

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is active."""
        return self.world_size > 1


def setup_distributed(device_pref: str = "auto") -> DistInfo:
    """Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun or ``srun torchrun``).

    With none set, or a world of one, no process group is created. Otherwise NCCL on CUDA, gloo on CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_pref, local_rank)
    if world > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device, local_world_size=local_world)


def cleanup_distributed() -> None:
    """Destroys the process group if one was created."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over ranks (a no-op in a single process)."""
    if info.distributed:
        t = t.clone()
        torch_dist.all_reduce(t)
        t /= info.world_size
    return t


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``t`` over ranks (a no-op in a single process)."""
    if info.distributed:
        t = t.clone()
        torch_dist.all_reduce(t)
    return t


def all_reduce_max(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Maximum of ``t`` over ranks (a no-op in a single process)."""
    if info.distributed:
        t = t.clone()
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
    return t


def barrier(info: DistInfo) -> None:
    """Waits for every rank (a no-op in a single process)."""
    if info.distributed:
        torch_dist.barrier()
