"""Data-parallel training under torchrun: process group, batch sharding rule, metric reduction.

Each rank takes a contiguous share of every global batch of the seeded
permutation, so N processes follow the single-process optimisation: the
global batch stays ``batch_size``, and because every share is the same size,
DDP's average of the ranks' mean gradients is the global batch's mean gradient.
"""

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Dict, Optional

import torch
import torch.distributed as dist

from .errors import UserError

TIMEOUT = timedelta(minutes=2)  # a rank that died leaves the others failing, not hanging


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` ranks (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def of(self, batch_indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of one global batch's indices."""
        if self.world_size == 1:
            return batch_indices
        return batch_indices.tensor_split(self.world_size)[self.rank]


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def check_divisible(num_samples: int, batch_size: int, world_size: int) -> None:
    """Every rank's share of every batch (the last, ragged one too) must be the same size."""
    last = num_samples % batch_size or batch_size
    if batch_size % world_size or last % world_size:
        raise UserError(f"--batch-size {batch_size} over {num_samples} samples gives batches of {batch_size} "
                        f"and {last}; both must divide by the {world_size} processes "
                        f"(e.g. --nproc_per_node {_divisor_hint(batch_size, last)})")


def _divisor_hint(batch_size: int, last: int) -> str:
    return " or ".join(str(n) for n in (2, 4, 8) if batch_size % n == 0 and last % n == 0) or "1"


def init(device_spec: str) -> tuple:
    """Join torchrun's process group: gloo on the CPU, nccl with one GPU per rank (LOCAL_RANK).

    Returns ``(Shard, device)``.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_spec.startswith("cuda") or (device_spec == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise UserError(f"--device {device_spec}: CUDA is not available on this machine; use --device cpu")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return Shard(rank, world_size), device


def reduce_means(metrics: Dict[str, float], shard: Shard, device: torch.device) -> Dict[str, float]:
    """Average per-rank epoch means over ranks (equal shares make that the global mean)."""
    if shard.world_size == 1:
        return metrics
    values = torch.tensor(list(metrics.values()), dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return dict(zip(metrics, (values / shard.world_size).tolist()))


def shutdown(shard: Optional[Shard]) -> None:
    if shard is not None and shard.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
