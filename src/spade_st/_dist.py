"""Sharding work across ranks under ``torchrun`` (torch.distributed, gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun sets it (``RANK``; 0 for a plain process), before or without a process group.

    Returns
    -------
    int
        ``torch.distributed.get_rank()`` once a group is initialised, else ``$RANK``, else 0.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    """True on rank 0 (and in a plain process): the one rank that prints a command's summary."""
    return env_rank() == 0


def rank0_print(*args, **kwargs) -> None:
    """``print`` on rank 0 only, so a command under ``torchrun --nproc_per_node N`` prints its summary once.

    Parameters
    ----------
    *args, **kwargs
        ``print``'s (``file=sys.stderr``, ``flush=True``, ...).
    """
    if is_main():
        print(*args, **kwargs)


def init_distributed(device: str | None = None) -> DistInfo:
    """Read torchrun's environment and initialise the process group once (no-op for one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_nccl:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_nccl else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def shard(items: list, info: DistInfo) -> list:
    """The items of this rank (round-robin, so every item goes to exactly one rank)."""
    return items[info.rank :: info.world_size]


def barrier(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        dist.barrier()


def default_device(info: DistInfo, device: str | None) -> str:
    if device is not None:
        return device
    if torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return "cpu"
