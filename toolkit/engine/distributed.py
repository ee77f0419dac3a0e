"""torch.distributed set-up under torchrun and the few collectives the engine uses. No process launcher here:
multi-process and multi-node runs are started with `torchrun`, which sets RANK, WORLD_SIZE etc."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from toolkit.config import DistConfig


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(config: DistConfig) -> DistContext:
    """Join the process group torchrun prepared (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device_name = config.device
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device(device_name)
    if world_size > 1 and not dist.is_initialized():
        backend = config.backend
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return DistContext(rank, world_size, local_rank, device)


def teardown(synchronize: bool = False) -> None:
    """Leave the process group. `synchronize` (after a run every rank finished): wait for every rank
    first, so that no rank tears its connections down while a peer still has traffic on them (once
    in many test-suite runs a two-rank run's rank 0 died at exit, SIGABRT, "terminate called
    without an active exception"). Not after a failure: a rank that failed alone would then
    wait for the others until the collective timeout."""
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def gather_objects(value):
    """Every rank's `value`, as a list indexed by rank (a one-item list when not distributed)."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def all_gather_rows(rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's `rows` ([n_rank, ...], n_rank may differ and may be 0) concatenated in rank
    order, and where this rank's rows start. Every rank must call it, with the same trailing shape.

    `dist.all_gather` needs equal shapes, so the counts are gathered first, each part is padded to
    the longest and trimmed afterwards. Not differentiable (validation, metrics)."""
    if not dist.is_initialized():
        return rows, 0
    count = torch.tensor([rows.shape[0]], dtype=torch.long, device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(size.item()) for size in counts]
    offset = sum(sizes[:dist.get_rank()])
    longest = max(sizes)
    if longest == 0:  # every rank sees the same sizes, so every rank skips the second collective
        return rows, offset
    padded = rows.new_zeros((longest, *rows.shape[1:]))  # [longest, ...]
    padded[:rows.shape[0]] = rows
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), offset


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (one all-reduce; also a barrier)."""
    if not dist.is_initialized():
        return flag
    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
