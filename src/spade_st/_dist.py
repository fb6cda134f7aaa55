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
    """Read torchrun's environment and initialise the process group once (no-op for one process); a ``device``
    torch cannot use here is a one-line error first."""
    if device is not None:
        check_device(device)
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


def check_device(device: str) -> str:
    """A ``--device`` value torch can use here (``cpu``, ``cuda``, ``cuda:N``, ``mps``); else a one-line error."""
    import re

    from ._validation import SpadeInputError

    d = str(device).strip().lower()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", d):
        msg = (
            f"--device {device!r} is not a device: use cpu, cuda or cuda:N (or leave it out: CUDA if visible, else CPU)"
        )
        raise SpadeInputError(msg)
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"--device {device}: no CUDA GPU is visible to torch here; use --device cpu, or leave --device out"
            raise SpadeInputError(msg)
        n = torch.cuda.device_count()
        if ":" in d and int(d.split(":")[1]) >= n:
            msg = f"--device {device}: only {n} CUDA device(s) are visible (cuda:0 to cuda:{n - 1})"
            raise SpadeInputError(msg)
    if d == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        msg = "--device mps: Apple's MPS backend is not available here; use --device cpu"
        raise SpadeInputError(msg)
    return d


def default_device(info: DistInfo, device: str | None) -> str:
    """``device`` (checked), else ``cuda:<local rank>`` when CUDA is visible, else ``cpu``."""
    if device is not None:
        return check_device(device)
    if torch.cuda.is_available():
        return f"cuda:{info.local_rank}"
    return "cpu"
