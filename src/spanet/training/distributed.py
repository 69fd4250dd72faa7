"""Process-group setup for `torchrun` and the few collective calls the training loop needs.

`torchrun --nproc_per_node N -m spanet train ...` sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT;
without them a run is a single process and every helper here is a no-op, so the loop has one code path.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from spanet.runtime import resolve_device

__all__ = [
    "DistInfo",
    "init_distributed",
    "shutdown_distributed",
    "any_flag",
    "any_rank",
    "barrier",
    "broadcast_buffers",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; `initialized` says whether we created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str, *, timeout_minutes: float = 120.0) -> tuple[DistInfo, torch.device]:
    """Join the torchrun process group if the environment asks for one (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank=local_rank)
    if world_size <= 1:
        return DistInfo(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        # Rank 0 evaluates while the others wait at a barrier: the timeout must cover a full evaluation.
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            timeout=datetime.timedelta(minutes=timeout_minutes),
        )
    info = DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, initialized=created)
    return info, device


def shutdown_distributed(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()


def any_flag(flags: list[bool], *, info: DistInfo, device: torch.device) -> list[bool]:
    """Per flag: is it set on any rank? Lets all ranks stop at the same step (NaN loss, SIGINT on one rank)."""
    if info.world_size <= 1:
        return list(flags)
    values = torch.tensor([float(flag) for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def any_rank(flags: torch.Tensor, *, info: DistInfo) -> torch.Tensor:
    """Per flag (0./1. on the device): set on any rank? Stays on the device, so it adds no host sync of its own."""
    if info.world_size > 1:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.world_size > 1:
        dist.barrier()


def broadcast_buffers(module: torch.nn.Module, *, info: DistInfo) -> None:
    """Copy rank 0's buffers (BN running statistics) to every rank.

    DDP broadcasts them before each forward, so after the last step of an epoch every rank holds its own update;
    this makes all ranks end an epoch with the model rank 0 evaluates and saves.
    """
    if info.world_size <= 1:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)
