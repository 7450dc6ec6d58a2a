"""torch.distributed helpers: set-up from torchrun's environment, sharding, reductions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Process", "all_reduce_sum", "setup", "teardown"]


@dataclass(frozen=True)
class Process:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, samples and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether several processes take part."""
        return self.world_size > 1


def setup(device: str = "auto") -> Process:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    NCCL is used on GPUs and gloo on CPUs. Without ``WORLD_SIZE`` (a plain ``python`` run) the
    process runs alone.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if device.startswith("cuda:"):
        target = torch.device(device)
    elif use_cuda:
        target = torch.device("cuda", local_rank)
    else:
        target = torch.device("cpu")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            from flowkit.train.config import ConfigError

            raise ConfigError(
                f"device {device!r} asks for CUDA, which is not available here; use 'cpu' or 'auto'"
            )
        torch.cuda.set_device(target)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if target.type == "cuda" else "gloo")
    return Process(rank=rank, world_size=world_size, local_rank=local_rank, device=target)


def teardown(process: Process) -> None:
    """Leave the process group (if this run joined one)."""
    if process.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, process: Process) -> torch.Tensor:
    """Sum ``value`` over all processes (identity when running alone)."""
    if process.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value
