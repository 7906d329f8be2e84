"""Data-parallel training under torchrun: process group, batch sharding rule, and what ranks decide together.

Each rank takes a contiguous share of every global batch of the seeded
permutation, so N processes follow the single-process optimisation: the
global batch stays ``batch_size``, and because every share is the same size,
DDP's average of the ranks' mean gradients is the global batch's mean gradient.
Each rank draws its dropout masks from its own stream, as the shares of one
batch would in a single process. Whatever could stop one rank alone (missing
data, a diverged loss) is decided collectively, so no rank is left waiting.
"""

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Dict, List, Optional, TypeVar

import torch
import torch.distributed as dist

from .errors import UserError

TIMEOUT = timedelta(minutes=2)  # a rank that died leaves the others failing, not hanging


class PeerFailed(UserError):
    """Another rank failed and says why itself; this one ends quietly with it."""


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` ranks (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

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

    Returns ``(Shard, device)``. The device is checked before the group is joined.
    """
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = rank_device(device_spec, local_rank, local_world_size, cuda_count)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return Shard(rank, world_size, local_rank), device


def rank_device(spec: str, local_rank: int, local_world_size: int, cuda_count: int) -> torch.device:
    """This rank's device for ``--device spec``: ``cpu`` (gloo), or ``cuda``/``auto`` with one GPU per
    process on this node, GPU ``local_rank``; anything else is refused with the reason."""
    if spec not in ("auto", "cpu", "cuda"):
        if spec.startswith("cuda:"):
            raise UserError(f"--device {spec}: under torchrun each process uses the GPU of its LOCAL_RANK; "
                            "pass --device cuda (or cpu)")
        raise UserError(f"--device {spec!r} is not a device under torchrun; use auto, cpu or cuda")
    if spec == "cpu" or (spec == "auto" and cuda_count == 0):
        return torch.device("cpu")
    if cuda_count == 0:
        raise UserError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
    if local_world_size > cuda_count:
        raise UserError(f"--device {spec}: {local_world_size} processes on this node but {cuda_count} GPU(s); "
                        f"one GPU per process: --nproc_per_node {cuda_count} (or --device cpu)")
    return torch.device("cuda", local_rank)


def dropout_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s dropout stream: the run's own for rank 0 (so one process is unchanged),
    a stream of its own, derived from (seed, rank), for every other rank."""
    if rank == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"torch_mnist dropout {seed} {rank}".encode()).digest()[:8], "little")


def reduce_epoch(figures: Dict[str, float], shard: Shard, device: torch.device) -> Dict[str, float]:
    """The ranks' epoch figures combined: loss and accuracy averaged (equal shares make that the
    global mean), and the earliest step at which any rank's loss was not finite (0: none). Other
    entries (this rank's step losses) stay this rank's."""
    if not shard.distributed:
        return figures
    means = torch.tensor([figures["loss"], figures["accuracy"]], dtype=torch.float64, device=device)
    dist.all_reduce(means)
    first_bad = torch.tensor([figures["non_finite_step"] or float("inf")], dtype=torch.float64, device=device)
    dist.all_reduce(first_bad, op=dist.ReduceOp.MIN)
    loss, accuracy = (means / shard.world_size).tolist()
    bad = first_bad.item()
    return {**figures, "loss": loss, "accuracy": accuracy, "non_finite_step": 0 if bad == float("inf") else int(bad)}


def gather_states(state: torch.Tensor, shard: Shard, device: torch.device) -> List[torch.Tensor]:
    """Every rank's ``state`` (a generator's bytes), in rank order, on the CPU; collective."""
    if not shard.distributed:
        return [state]
    local = state.to(device)
    gathered = [torch.empty_like(local) for _ in range(shard.world_size)]
    dist.all_gather(gathered, local)
    return [tensor.cpu() for tensor in gathered]


Result = TypeVar("Result")


def local_main_first(prepare: Callable[[], Result], shard: Shard, device: torch.device) -> Result:
    """``prepare()`` (find, download, validate the data) on each node's first rank, then on the others.

    The others read only after it succeeded: no two processes write the same files, none reads a
    half-written one. A failure on any node's first rank ends every rank, with its own one line there.
    """
    if not shard.distributed:
        return prepare()
    result = together(prepare if shard.local_rank == 0 else (lambda: None), shard, device,
                      "the data could not be prepared on another node's first process")
    return result if shard.local_rank == 0 else prepare()


def together(step: Callable[[], Result], shard: Shard, device: torch.device, what_failed: str) -> Result:
    """``step()`` on this rank, then every rank learns whether all succeeded: a failure of any kind (ours, a
    bug, MemoryError, a full disk) ends every rank at once instead of leaving the others waiting at their next
    collective until its timeout. The failing rank raises its own error; the others :class:`PeerFailed`."""
    if not shard.distributed:
        return step()
    result, error = None, None
    try:
        result = step()
    except Exception as e:  # noqa: BLE001 - re-raised below, after the others have heard of it
        error = e
    ready = torch.tensor([0.0 if error is not None else 1.0], device=device)
    dist.all_reduce(ready, op=dist.ReduceOp.MIN)  # also the barrier the others wait at
    if error is not None:
        raise error
    if ready.item() == 0:
        raise PeerFailed(f"{what_failed}; its error says why")
    return result


def shutdown(shard: Optional[Shard]) -> None:
    if shard is not None and shard.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
