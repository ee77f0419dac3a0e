"""Which items each rank reads for each micro-batch, epoch after epoch, resumable to the micro-step;
and which it reads in a validation pass.

Epoch e visits items in `permutation(seed, e)`; global batch g of the epoch (one optimizer step)
is permutation[g*G : (g+1)*G] with G = batch_size * world_size * grad_accum. Within a global
batch, micro-step m of rank r takes positions [(m * world_size + r) * B, ... + B). So the set of
items in a global batch depends only on (seed, epoch, g, G): one process with grad_accum 2 sees
exactly the items two processes with grad_accum 1 see. Items left over at the end of an epoch
(fewer than G) are skipped that epoch; the next permutation puts different items there.

`OrderedTrainSource` and `OrderedValidationSource` are the iteration and resume half of a dataset
built on these orders; a dataset adds how one batch is made from item indices.

Validation: one pass in stored order; global batch k holds items [k*B*world, ...), rank r's part at
offset r*B, so every rank yields the same number of batches (collectives stay in step) and a
rank's part of the last one may be short or empty.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def epoch_permutation(num_items: int, seed: int, epoch: int) -> np.ndarray:
    """The item order of one epoch: a function of (seed, epoch) only."""
    generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch])))
    return generator.permutation(num_items)


def item_seed(seed: int, epoch: int, place: int) -> int:
    """The seed of the item at `place` in epoch `epoch`'s order (a uint32): for randomness that must
    not depend on which rank, world size or micro-step reads the item."""
    return int(np.random.SeedSequence([seed, epoch, place]).generate_state(1)[0])


def validation_item_seed(seed: int, index: int) -> int:
    """The seed of validation item `index` (stored order), the same on every pass and world size;
    a stream apart from the training items' seeds."""
    return int(np.random.SeedSequence([seed, 2**32 - 1, index]).generate_state(1)[0])


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is cut into per-rank micro-batches."""

    batch_size: int  # micro-batch per rank
    world_size: int = 1
    rank: int = 0
    grad_accum: int = 1

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    def micro_positions(self, micro_step: int) -> slice:
        """Positions within the global batch that this rank takes at `micro_step`."""
        start = (micro_step * self.world_size + self.rank) * self.batch_size
        return slice(start, start + self.batch_size)


@dataclass
class TrainPosition:
    """Where the training stream stands: global batches consumed in `epoch`, micro-steps into the next."""

    epoch: int = 0
    step: int = 0
    micro: int = 0


class EpochOrder:
    """This rank's item indices, micro-batch after micro-batch, forever.

    `steps_per_epoch` is 0 when the items do not fill one global batch; the dataset then raises its
    own error naming its data. `state_dict` / `load_state_dict` resume at the exact micro-batch; a
    different global batch size on resume rounds the items consumed this epoch up to whole new
    global batches (a partial one is redone).
    """

    def __init__(self, num_items: int, layout: BatchLayout, seed: int) -> None:
        self.num_items = num_items
        self.layout = layout
        self.seed = seed
        self.steps_per_epoch = num_items // layout.global_batch_size
        self.position = TrainPosition()
        self._permutation_epoch = -1
        self._permutation = np.empty(0, dtype=np.int64)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._permutation_epoch:  # one permutation per epoch, not per batch
            self._permutation = epoch_permutation(self.num_items, self.seed, epoch)
            self._permutation_epoch = epoch
        return self._permutation

    def next_indices(self) -> np.ndarray:
        """Item indices of this rank's next micro-batch; the position moves past it."""
        return self.next_items()[0]

    def next_items(self) -> tuple[np.ndarray, list[int]]:
        """Item indices of this rank's next micro-batch and a seed for each item's randomness
        (augmentation); the position moves past them.

        An item's seed is a function of the run's seed, the epoch and the item's place in the
        epoch's order only: whichever rank, world size or grad_accum reads that place draws the
        same numbers, so a global batch has the same pixels on 1 rank as on 8 and across a
        resume at another world size.
        """
        position = self.position
        order = self.epoch_order(position.epoch)
        positions = self.layout.micro_positions(position.micro)
        places = range(position.step * self.layout.global_batch_size + positions.start,
                       position.step * self.layout.global_batch_size + positions.stop)
        indices = order[places.start:places.stop]
        seeds = [item_seed(self.seed, position.epoch, place) for place in places[:len(indices)]]
        position.micro += 1
        if position.micro == self.layout.grad_accum:
            position.micro = 0
            position.step += 1
            if position.step == self.steps_per_epoch:
                position.epoch, position.step = position.epoch + 1, 0
        return indices, seeds

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.position.epoch, "step": self.position.step, "micro": self.position.micro,
                "global_batch_size": self.layout.global_batch_size, "num_items": self.num_items, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, step, micro = int(state["epoch"]), int(state["step"]), int(state.get("micro", 0))
        saved_global = int(state.get("global_batch_size", self.layout.global_batch_size))
        if saved_global != self.layout.global_batch_size:
            step = math.ceil(step * saved_global / self.layout.global_batch_size)
            micro = 0
        if micro >= self.layout.grad_accum:
            step, micro = step + 1, 0
        if step >= self.steps_per_epoch:  # the data shrank since the save: start the next epoch
            epoch, step = epoch + 1, 0
        self.position = TrainPosition(epoch, step, micro)


def training_order(num_items: int, batch_size: int, shard: Any, what: str, hint: str) -> EpochOrder:
    """The EpochOrder of a dataset's training split, or a DataError when the split cannot fill one
    global batch. `shard` is the dataset's ShardInfo; `what` names the data in the message."""
    from toolkit.errors import DataError

    layout = BatchLayout(batch_size, shard.world_size, shard.rank, shard.grad_accum)
    order = EpochOrder(num_items, layout, shard.seed)
    if order.steps_per_epoch == 0:
        raise DataError(f"{what}: {num_items} training samples are fewer than one global batch of "
                        f"{layout.global_batch_size} (batch_size {batch_size} x world_size {shard.world_size} "
                        f"x grad_accum {shard.grad_accum})", hint=hint)
    return order


@contextlib.contextmanager
def seeded_torch_rng(seed: int) -> Iterator[None]:
    """torch's global generator seeded with `seed` inside the block and restored after it.

    torchvision's random transforms draw from the global generator; forking it keeps a batch's
    randomness a function of its seed and leaves everything else in the process undisturbed.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class OrderedTrainSource(abc.ABC):
    """Iteration and resume for a training source that draws its micro-batches from `self.order`."""

    order: EpochOrder

    @abc.abstractmethod
    def next_batch(self) -> Any:
        """This rank's next micro-batch; each source defines it (the rest of the class builds on it)."""

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return self.order.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order.load_state_dict(state)


class ValidationOrder:
    """This rank's item indices for each batch of one validation pass (see the module docstring)."""

    def __init__(self, num_items: int, batch_size: int, shard: Any) -> None:
        self.num_items, self.batch_size, self.shard = num_items, batch_size, shard
        self.per_global_batch = batch_size * shard.world_size
        self.num_batches = math.ceil(num_items / self.per_global_batch)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[np.ndarray]:
        for batch_index in range(self.num_batches):
            start = batch_index * self.per_global_batch + self.shard.rank * self.batch_size
            yield np.arange(start, max(start, min(start + self.batch_size, self.num_items)))


class OrderedValidationSource(abc.ABC):
    """A stateless validation source: every iteration is one fresh pass in the order of `self.order`.

    Evaluation always starts from the first batch, so there is no position to save: `state_dict`
    is empty and `load_state_dict` has nothing to restore.
    """

    order: ValidationOrder

    @abc.abstractmethod
    def validation_batch(self, indices: np.ndarray) -> Any:
        """The batch holding items `indices`; they may be fewer than a batch, or none (pad as needed)."""

    def __iter__(self) -> Iterator[Any]:
        for indices in self.order:
            yield self.validation_batch(indices)

    def __len__(self) -> int:
        return len(self.order)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
