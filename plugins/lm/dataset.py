"""The `text_shards` dataset: webdataset text shards -> tokenizer -> packed, rank-sharded batches.

Building it (every rank does, safely; see toolkit.data.cache): resolve the shards (a pattern or
`builtin:shakespeare`), train or load the tokenizer, tokenize the split into a cached token file,
then serve windows of seq_len + 1 tokens in the order plugins.lm.packing defines. Batches are
{"input_ids": LongTensor [B, S], "labels": LongTensor [B, S], "sample_seeds": LongTensor [B]}: a seed
per window from the run's seed and the window's place in the epoch (toolkit.data.order.item_seed),
for a model that draws random numbers per sequence (Duo's random router) the same way on any
number of ranks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugins.lm.corpus import is_builtin, resolve_builtin
from plugins.lm.packing import make_batch, window_count
from plugins.lm.shard_paths import NO_VALIDATION, sibling_val_pattern, text_shard_paths
from plugins.lm.token_cache import cached_tokens
from plugins.lm.tokenizer import Tokenizer, cached_tokenizer, load_tokenizer
from toolkit.config import InvalidField
from toolkit.data import ShardInfo
from toolkit.data.cache import cache_root
from toolkit.data.order import (
    BatchLayout,
    EpochOrder,
    OrderedTrainSource,
    OrderedValidationSource,
    TrainPosition,
    ValidationOrder,
    validation_item_seed,
)
from toolkit.errors import DataError


@dataclass
class TextShardsConfig:
    """The `data:` section for `name: text_shards`."""

    train_shards: str = "builtin:shakespeare"  # glob/brace pattern of .tar shards, a folder of them, or "builtin:<name>"
    # "" -> the val-*.tar beside train-*.tar shards (what tools/build_text_shards.py writes) or the
    # built-in corpus's; "none" -> no validation
    val_shards: str = ""
    tokenizer: str = ""  # SentencePiece .model path; "" -> train one on the train shards (cached)
    vocab_size: int = 4096
    seq_len: int = 256
    batch_size: int = 8  # micro-batch per rank (sequences)
    cache_dir: str = ""  # "" -> $TOOLKIT_CACHE or ~/.cache/toolkit

    def __post_init__(self) -> None:
        for name in ("vocab_size", "seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidField(name, f"must be >= 1, got {getattr(self, name)}")


class _PackedSource:
    """What the train and val sources share: tokens, tokenizer and the files a run keeps."""

    def __init__(self, tokens: np.ndarray, tokenizer: Tokenizer, seq_len: int, batch_size: int, shard: ShardInfo):
        if not 0 <= shard.rank < shard.world_size or shard.grad_accum < 1:
            raise DataError(f"invalid shard info {shard}: need 0 <= rank < world_size and grad_accum >= 1")
        self.tokens = tokens  # [N] memory-mapped token ids
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.shard = shard
        self.num_windows = window_count(len(tokens), seq_len)

    def run_files(self) -> dict[str, Path]:
        """Files the engine copies into the run directory (generation needs the tokenizer)."""
        return self.tokenizer.run_files()


class PackedTrainSource(OrderedTrainSource, _PackedSource):
    """Training batches forever, epoch after epoch; resumable to the exact micro-batch."""

    def __init__(self, tokens: np.ndarray, tokenizer: Tokenizer, seq_len: int, batch_size: int, shard: ShardInfo):
        super().__init__(tokens, tokenizer, seq_len, batch_size, shard)
        self.layout = BatchLayout(batch_size, shard.world_size, shard.rank, shard.grad_accum)
        self.order = EpochOrder(self.num_windows, self.layout, shard.seed)
        self.steps_per_epoch = self.order.steps_per_epoch
        if self.steps_per_epoch == 0:
            raise DataError(
                f"the training split has {len(tokens)} tokens = {self.num_windows} windows of seq_len + 1 = "
                f"{seq_len + 1}, fewer than one global batch of {self.layout.global_batch_size} "
                f"(batch_size {batch_size} x world_size {shard.world_size} x grad_accum {shard.grad_accum})",
                hint="use more data, or lower seq_len / batch_size",
            )

    @property
    def position(self) -> TrainPosition:
        return self.order.position

    def next_batch(self) -> dict[str, torch.Tensor]:
        """This rank's next micro-batch; the position moves past it before it is returned."""
        indices, seeds = self.order.next_items()
        batch = make_batch(self.tokens, indices, self.seq_len)
        batch["sample_seeds"] = torch.tensor(seeds, dtype=torch.long)  # [B]
        return batch

    def state_dict(self) -> dict[str, Any]:
        state = self.order.state_dict()
        state["num_windows"] = state.pop("num_items")
        return state


class PackedValSource(OrderedValidationSource, _PackedSource):
    """One pass over every validation window, split across ranks, padded to equal batch counts."""

    def __init__(self, tokens: np.ndarray, tokenizer: Tokenizer, seq_len: int, batch_size: int, shard: ShardInfo):
        super().__init__(tokens, tokenizer, seq_len, batch_size, shard)
        self.order = ValidationOrder(self.num_windows, batch_size, shard)

    def validation_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        # A short or empty last part is padded to batch_size rows, so every rank runs the same shapes.
        batch = make_batch(self.tokens, indices, self.seq_len, rows=self.batch_size, pad_id=self.tokenizer.eos_id)
        seeds = [validation_item_seed(self.shard.seed, int(index)) for index in indices]
        batch["sample_seeds"] = torch.tensor(seeds + [0] * (self.batch_size - len(seeds)), dtype=torch.long)  # [B]
        return batch


def _split_patterns(config: TextShardsConfig, cache_dir: Path) -> tuple[str, str]:
    """(train pattern, val pattern) with built-in corpora built and resolved to their shard files."""
    train_pattern, val_pattern = config.train_shards, config.val_shards
    if is_builtin(train_pattern):
        built = resolve_builtin(train_pattern, cache_dir)
        train_pattern = built.train_pattern
        val_pattern = val_pattern or built.val_pattern
    if is_builtin(val_pattern):
        val_pattern = resolve_builtin(val_pattern, cache_dir).val_pattern
    return train_pattern, val_pattern


def _validation_paths(val_pattern: str, train_paths: list[Path], shard: ShardInfo) -> list[Path]:
    """The validation shards: data.val_shards, else the val-*.tar beside the train shards (said once,
    on rank 0), else none, with a warning: without them every evaluation of the run is skipped."""
    if val_pattern == NO_VALIDATION:
        return []
    if val_pattern:
        return text_shard_paths(val_pattern, "data.val_shards", split="val")
    beside = sibling_val_pattern(train_paths)
    if beside:
        if shard.rank == 0:
            print(f"note: validating on {beside} (data.val_shards is empty; the val shards beside the train "
                  "shards are used)", file=sys.stderr)
        return text_shard_paths(beside, "data.val_shards", split="val")
    if shard.rank == 0:
        print("warning: this run has no validation data, so trainer.eval_every evaluates nothing: "
              "data.val_shards is empty and no val-*.tar lies beside the train shards (set data.val_shards "
              f"to a shard pattern, or to '{NO_VALIDATION}' to silence this)", file=sys.stderr)
    return []


def build_text_shards(config: TextShardsConfig, split: str, shard: ShardInfo) -> _PackedSource | None:
    """The dataset factory. Returns None for "val" when the recipe names no validation shards."""
    if split not in ("train", "val"):
        raise DataError(f"text_shards has splits 'train' and 'val', not '{split}'")
    cache_dir = cache_root(config.cache_dir)
    train_pattern, val_pattern = _split_patterns(config, cache_dir)
    train_paths = text_shard_paths(train_pattern, "data.train_shards", split="train")
    val_paths = _validation_paths(val_pattern, train_paths, shard) if split == "val" else []
    if split == "val" and not val_paths:
        return None
    if config.tokenizer:
        tokenizer_path = Path(config.tokenizer).expanduser()
        if not tokenizer_path.is_file():
            raise DataError(f"data.tokenizer: {tokenizer_path}: no such file",
                            hint="give a SentencePiece .model file (toolkit-tokenizer train makes one), or "
                                 "leave data.tokenizer empty to train one on the train shards")
    else:
        tokenizer_path = cached_tokenizer(train_paths, config.vocab_size, cache_dir)
    tokenizer = load_tokenizer(tokenizer_path, expected_vocab_size=config.vocab_size)
    paths = train_paths if split == "train" else val_paths
    tokens = cached_tokens(paths, tokenizer, cache_dir, split)
    source_class = PackedTrainSource if split == "train" else PackedValSource
    return source_class(tokens, tokenizer, config.seq_len, config.batch_size, shard)
