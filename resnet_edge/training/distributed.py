"""What running under ``torchrun`` changes: which process logs and writes (rank 0), how per-process sums are
shared, and where each process computes. One process (no torchrun) is world 1, rank 0."""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from ..errors import UserError


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def log(message: str) -> None:
    """A line on stderr, from rank 0 only."""
    if is_main():
        print(message, file=sys.stderr, flush=True)


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); joins the process group when torchrun started several."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device_name == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA GPU")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return rank, world, torch.device("cuda", local_rank)
    if device_name != "cpu":
        raise UserError(f"--device must be 'cpu' or 'cuda', got {device_name!r}")
    return rank, world, torch.device("cpu")


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (as they are with one process)."""
    if not dist.is_initialized():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()
