"""Packed windows: coverage, deterministic per-epoch order, rank/accumulation layout, resume, val pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import BatchSource, ShardInfo
from toolkit.errors import DataError

from plugins.lm.dataset import PackedTrainSource, PackedValSource
from plugins.lm.packing import IGNORE_INDEX, make_batch, window_count

SEQ_LEN = 8


@dataclass
class StubTokenizer:
    """Just what the sources read from a tokenizer."""

    vocab_size: int = 1 << 20
    eos_id: int = 2
    path: Path = Path("tokenizer.model")


def arange_tokens(num_windows: int, extra: int = 3) -> np.ndarray:
    # Token t has value t, so a window's first input token tells which window it is.
    return np.arange(num_windows * SEQ_LEN + 1 + extra, dtype=np.uint32)


def train_source(tokens, batch_size=4, rank=0, world_size=1, grad_accum=1, seed=0) -> PackedTrainSource:
    shard = ShardInfo(rank, world_size, seed, grad_accum)
    return PackedTrainSource(tokens, StubTokenizer(), SEQ_LEN, batch_size, shard)


def window_ids(batch) -> list[int]:
    return [int(first) // SEQ_LEN for first in batch["input_ids"][:, 0]]


def take(source, count: int) -> list[dict[str, torch.Tensor]]:
    iterator = iter(source)
    return [next(iterator) for _ in range(count)]


def test_windows_cover_the_stream_and_labels_are_next_tokens():
    tokens = arange_tokens(10)
    assert window_count(len(tokens), SEQ_LEN) == 10
    batch = make_batch(tokens, np.arange(10), SEQ_LEN)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == (10, SEQ_LEN)
    assert torch.equal(batch["input_ids"].flatten(), torch.arange(10 * SEQ_LEN))  # every token, once
    assert torch.equal(batch["labels"], batch["input_ids"] + 1)


def test_an_epoch_visits_each_window_once_in_a_seeded_order():
    source = train_source(arange_tokens(40), batch_size=4)
    assert isinstance(source, BatchSource) and source.steps_per_epoch == 10
    first_epoch = [w for batch in take(source, 10) for w in window_ids(batch)]
    second_epoch = [w for batch in take(source, 10) for w in window_ids(batch)]
    assert sorted(first_epoch) == list(range(40)) == sorted(second_epoch)
    assert first_epoch != second_epoch and first_epoch != list(range(40))
    again = [w for batch in take(train_source(arange_tokens(40), batch_size=4), 10) for w in window_ids(batch)]
    assert again == first_epoch  # same seed, same order
    other_seed = [w for batch in take(train_source(arange_tokens(40), seed=1), 10) for w in window_ids(batch)]
    assert other_seed != first_epoch


def test_epoch_tail_smaller_than_a_global_batch_is_skipped():
    source = train_source(arange_tokens(42), batch_size=4, grad_accum=2)  # G = 8 -> 5 steps, 2 left over
    assert source.steps_per_epoch == 5
    seen = [w for batch in take(source, 10) for w in window_ids(batch)]
    assert len(set(seen)) == 40 and source.position.epoch == 1


def global_batch_sets(layouts: list[list[PackedTrainSource]], steps: int) -> list[list[frozenset]]:
    """For each layout (its ranks), the set of windows of each global batch."""
    results = []
    for ranks in layouts:
        accum = ranks[0].layout.grad_accum
        iterators = [iter(source) for source in ranks]
        per_step = []
        for _ in range(steps):
            windows = []
            for _ in range(accum):
                for iterator in iterators:
                    windows.extend(window_ids(next(iterator)))
            assert len(windows) == len(set(windows))  # ranks and micro-steps never overlap
            per_step.append(frozenset(windows))
        results.append(per_step)
    return results


def test_global_batch_is_the_same_set_for_any_world_size_and_accumulation():
    tokens = arange_tokens(64)
    layouts = [
        [train_source(tokens, batch_size=4, grad_accum=2)],  # 1 process, accumulating 2
        [train_source(tokens, batch_size=4, rank=r, world_size=2) for r in range(2)],  # 2 processes
        [train_source(tokens, batch_size=8)],  # 1 process, double batch
        [train_source(tokens, batch_size=2, rank=r, world_size=2, grad_accum=2) for r in range(2)],
    ]
    sets = global_batch_sets(layouts, steps=20)  # crosses two epoch boundaries (8 steps per epoch)
    assert sets[0] == sets[1] == sets[2] == sets[3]
    assert all(len(s) == 8 for s in sets[0])


def test_resume_continues_with_identical_batches():
    tokens = arange_tokens(40)
    original = train_source(tokens, batch_size=2, grad_accum=3)
    iterator = iter(original)
    for _ in range(23):  # mid-epoch, after whole optimizer steps and beyond an epoch boundary
        next(iterator)
    state = original.state_dict()
    expected = [next(iterator) for _ in range(12)]
    resumed = train_source(tokens, batch_size=2, grad_accum=3)
    resumed.load_state_dict(state)
    for want, got in zip(expected, take(resumed, 12)):
        assert torch.equal(want["input_ids"], got["input_ids"]) and torch.equal(want["labels"], got["labels"])
    assert resumed.state_dict() == original.state_dict()


def test_resume_with_a_different_global_batch_skips_what_was_consumed():
    tokens = arange_tokens(64)
    before = train_source(tokens, batch_size=4)  # G = 4
    consumed = {w for batch in take(before, 3) for w in window_ids(batch)}
    after = train_source(tokens, batch_size=4, world_size=2, rank=0)  # G = 8
    after.load_state_dict(before.state_dict())
    assert after.position.step == 2  # 12 windows consumed -> round up to 2 global batches of 8
    partner = train_source(tokens, batch_size=4, world_size=2, rank=1)
    partner.load_state_dict(before.state_dict())
    upcoming = {w for source in (after, partner) for batch in take(source, 4) for w in window_ids(batch)}
    assert not upcoming & consumed


def test_too_little_data_for_one_global_batch():
    with pytest.raises(DataError, match="fewer than one global batch of 16"):
        train_source(arange_tokens(10), batch_size=4, world_size=2, grad_accum=2)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_covers_every_window_once_across_ranks(world_size):
    tokens = arange_tokens(11)
    sources = [PackedValSource(tokens, StubTokenizer(), SEQ_LEN, 2, ShardInfo(rank, world_size))
               for rank in range(world_size)]
    passes = [list(source) for source in sources]
    assert len({len(batches) for batches in passes}) == 1  # equal batch counts keep ranks in step
    seen = []
    for batches in passes:
        for batch in batches:
            assert batch["input_ids"].shape == (2, SEQ_LEN)
            real = (batch["labels"] != IGNORE_INDEX).all(dim=1)
            assert ((batch["labels"] == IGNORE_INDEX).all(dim=1) | real).all()  # padding rows are all-ignored
            seen.extend(int(first) // SEQ_LEN for first in batch["input_ids"][real, 0])
    assert sorted(seen) == list(range(11))
    assert [window_ids(b) for b in passes[0]] == [window_ids(b) for b in list(sources[0])]  # every pass the same


def test_each_sequence_carries_a_seed_that_does_not_depend_on_the_layout():
    """`sample_seeds` (Duo's random routes draw from them) follow a window's place in the epoch,
    whichever rank, world size or micro-step reads it; another epoch gives the window another seed."""
    tokens = arange_tokens(16)  # 2 global batches of 8 per epoch
    layouts = [[train_source(tokens, batch_size=8)],
               [train_source(tokens, batch_size=2, rank=r, world_size=2, grad_accum=2) for r in range(2)]]
    by_layout = []
    for sources in layouts:
        seeds: dict[tuple[int, int], int] = {}  # (epoch, window) -> seed
        for step in range(4):
            for batch in (next(iter(s)) for _ in range(sources[0].layout.grad_accum) for s in sources):
                assert batch["sample_seeds"].shape == (batch["input_ids"].shape[0],)
                seeds.update({(step // 2, w): int(seed) for w, seed in zip(window_ids(batch), batch["sample_seeds"])})
        by_layout.append(seeds)
    assert by_layout[0] == by_layout[1] and len(by_layout[0]) == 32
    assert len(set(by_layout[0].values())) == 32  # no two (epoch, window) pairs share a seed
    two_ranks = validation_seeds([PackedValSource(tokens, StubTokenizer(), SEQ_LEN, 3, ShardInfo(r, 2)) for r in range(2)])
    one_rank = validation_seeds([PackedValSource(tokens, StubTokenizer(), SEQ_LEN, 5, ShardInfo(0, 1))])
    assert two_ranks == one_rank and len(one_rank) == 16 and len(set(one_rank.values())) == 16


def validation_seeds(sources) -> dict[int, int]:
    """window -> seed over one validation pass of every source (padding rows left out)."""
    seeds = {}
    for source in sources:
        for batch in source:
            real = (batch["labels"] != IGNORE_INDEX).all(dim=1).tolist()
            seeds.update({w: int(s) for w, s, keep in zip(window_ids(batch), batch["sample_seeds"], real) if keep})
    return seeds
