"""The contract every dataset plugin fulfils, and the rank information it is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Protocol, runtime_checkable


@dataclass(frozen=True)
class ShardInfo:
    """Where this process sits in the job, so a dataset can take its share of each global batch.

    rank, world_size: the torch.distributed rank and world size (0 and 1 when not distributed).
    seed:             the run's seed; the order of samples derives from it alone.
    grad_accum:       micro-steps per optimizer step. A global batch (one optimizer step) holds
                      micro_batch * world_size * grad_accum items; a rank yields its
                      grad_accum micro-batches of it in turn.
    """

    rank: int = 0
    world_size: int = 1
    seed: int = 0
    grad_accum: int = 1


@runtime_checkable
class BatchSource(Protocol):
    """An iterable of ready batches for one rank, able to save and restore its position.

    Iterating yields micro-batches forever for "train" (epochs roll over deterministically) and
    one pass for "val". After `load_state_dict(state)` the next batch yielded is the one that
    followed when `state` was taken, so that resumed training is bit-identical.
    """

    def __iter__(self) -> Iterator[Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
