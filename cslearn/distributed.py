"""Multi-GPU training through PyTorch's own engine: `torchrun --nproc_per_node=N -m cslearn run ...`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `run_protocol` then trains one
DistributedDataParallel replica per process (SyncBatchNorm on GPUs), each process reading its
share of every global batch, sums the evaluation confusion matrices over processes, and lets
only rank 0 write files. Without those variables everything runs in one process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment() -> Distributed:
    """Join the process group described by torchrun's variables (NCCL on GPUs, gloo on CPUs)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    info = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, rank=info.rank, world_size=world_size)
    return info


def barrier(info: Distributed) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: Distributed) -> torch.Tensor:
    """Sum a tensor over processes in place (a no-op in one process)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
