"""The `prompt_response` dataset: prompt/response pairs from JSONL, tokenized, packed, resumable.

Each example is [EOS] + prompt tokens + response tokens + [EOS] (EOS opens a document, as in
pretraining and in `toolkit-generate`). Prompt and response are tokenized apart, as a generator
sees the prompt alone. Labels are the next token where that token belongs to the response (its
closing EOS included) and -100 elsewhere, so the loss covers response tokens only.

With `packing: true` consecutive examples share a row (greedily, in file order) and the batch
carries `document_ids` [B, S] (0, 1, ... per example, -1 for padding): the SFT task then runs the
document-masked forward (plugins.rlhf.packed), so no example attends to another. Without packing
each row holds one example, right-padded. Rows are built once; the training order is the core's
resumable EpochOrder over rows (its permutation comes from trainer.seed), validation one pass.

Batches: {"input_ids": [B, S], "labels": [B, S], "document_ids": [B, S]} (int64).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plugins.lm.packing import IGNORE_INDEX
from plugins.lm.tokenizer import Tokenizer, load_tokenizer
from plugins.rlhf.chat import ChatTemplate, chat_template
from plugins.rlhf.packed import PADDING_DOCUMENT
from toolkit.data import ShardInfo
from toolkit.data.order import OrderedTrainSource, OrderedValidationSource, ValidationOrder, training_order
from toolkit.errors import DataError


@dataclass
class PromptResponseConfig:
    """The `data:` section for `name: prompt_response`."""

    train_file: str = ""  # JSONL, one {"prompt": ..., "response": ...} object per line
    val_file: str = ""  # "" -> no validation
    tokenizer: str = ""  # the base model's SentencePiece .model (fine-tuning keeps its vocabulary)
    vocab_size: int = 0  # checked against the tokenizer when > 0
    template: str = "plain"  # a chat template of plugins.rlhf.chat
    prompt_field: str = "prompt"
    response_field: str = "response"
    seq_len: int = 256
    batch_size: int = 8  # rows per micro-batch per rank
    packing: bool = True  # several examples per row, attention kept within each

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Example:
    """One tokenized example, already shifted: inputs and their next-token labels (same length)."""

    input_ids: list[int]
    labels: list[int]


def read_pairs(path: Path, prompt_field: str, response_field: str) -> list[tuple[int, str, str]]:
    """(line number, prompt, response) of every non-empty line; one clear error per bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error})".splitlines()[0]) from error
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(row, dict) or not isinstance(row.get(prompt_field), str) or not isinstance(
                row.get(response_field), str):
            raise DataError(f"{path}:{number}: expected an object with string fields "
                            f"'{prompt_field}' and '{response_field}'")
        pairs.append((number, row[prompt_field], row[response_field]))
    if not pairs:
        raise DataError(f"{path}: holds no prompt/response pairs")
    return pairs


def tokenize_example(tokenizer: Tokenizer, template: ChatTemplate, prompt: str, response: str) -> Example:
    prompt_ids = [tokenizer.eos_id, *tokenizer.encode(template.render_prompt(prompt))]
    response_ids = [*tokenizer.encode(template.render_response(response)), tokenizer.eos_id]
    tokens = prompt_ids + response_ids
    # labels[i] is tokens[i + 1] when that token is part of the response, else ignored.
    labels = [tokens[i + 1] if i + 1 >= len(prompt_ids) else IGNORE_INDEX for i in range(len(tokens) - 1)]
    return Example(tokens[:-1], labels)


def pack_rows(examples: list[Example], seq_len: int, packing: bool, pad_id: int) -> dict[str, np.ndarray]:
    """Rows [N, S] of input ids, labels and document ids; greedy in order when packing."""
    rows: list[list[Example]] = []
    used = seq_len  # forces a new row for the first example
    for example in examples:
        if not packing or used + len(example.input_ids) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append(example)
        used += len(example.input_ids)
    input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int64)
    labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int64)
    documents = np.full((len(rows), seq_len), PADDING_DOCUMENT, dtype=np.int64)
    for row, members in enumerate(rows):
        start = 0
        for document, example in enumerate(members):
            end = start + len(example.input_ids)
            input_ids[row, start:end] = example.input_ids
            labels[row, start:end] = example.labels
            documents[row, start:end] = document
            start = end
    return {"input_ids": input_ids, "labels": labels, "document_ids": documents}


def build_rows(path: Path, tokenizer: Tokenizer, config: PromptResponseConfig) -> dict[str, np.ndarray]:
    template = chat_template(config.template)
    examples = []
    for number, prompt, response in read_pairs(path, config.prompt_field, config.response_field):
        example = tokenize_example(tokenizer, template, prompt, response)
        if len(example.input_ids) > config.seq_len:
            raise DataError(f"{path}:{number}: the example is {len(example.input_ids) + 1} tokens, more than "
                            f"data.seq_len + 1 = {config.seq_len + 1}", hint="raise data.seq_len or shorten it")
        examples.append(example)
    return pack_rows(examples, config.seq_len, config.packing, tokenizer.eos_id)


def take_rows(rows: dict[str, np.ndarray], indices: np.ndarray, batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """The rows at `indices` as tensors, padded to `batch_size` rows (padding rows have no labels)."""
    count = len(indices) if batch_size is None else batch_size
    batch = {}
    for key, fill in (("input_ids", 0), ("labels", IGNORE_INDEX), ("document_ids", PADDING_DOCUMENT)):
        block = np.full((count, rows[key].shape[1]), fill, dtype=np.int64)
        block[:len(indices)] = rows[key][indices]
        batch[key] = torch.from_numpy(block)
    return batch


class _Rows:
    def __init__(self, rows: dict[str, np.ndarray], tokenizer: Tokenizer, batch_size: int) -> None:
        self.rows = rows
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.num_rows = rows["input_ids"].shape[0]

    def run_files(self) -> dict[str, Path]:
        """The tokenizer goes with the run: generation and evaluation read it there."""
        return {"tokenizer.model": self.tokenizer.path}


class PromptResponseTrain(OrderedTrainSource, _Rows):
    def __init__(self, rows: dict[str, np.ndarray], tokenizer: Tokenizer, batch_size: int, shard: ShardInfo,
                 path: Path) -> None:
        super().__init__(rows, tokenizer, batch_size)
        self.order = training_order(self.num_rows, batch_size, shard, str(path),
                                    hint="use more pairs, or lower data.batch_size")

    def next_batch(self) -> dict[str, torch.Tensor]:
        return take_rows(self.rows, self.order.next_indices())


class PromptResponseValidation(OrderedValidationSource, _Rows):
    def __init__(self, rows: dict[str, np.ndarray], tokenizer: Tokenizer, batch_size: int, shard: ShardInfo) -> None:
        super().__init__(rows, tokenizer, batch_size)
        self.order = ValidationOrder(self.num_rows, batch_size, shard)

    def validation_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        # Every rank runs the same shapes: a short last batch is padded to batch_size rows.
        return take_rows(self.rows, indices, self.batch_size)


def build_prompt_response(config: PromptResponseConfig, split: str, shard: ShardInfo) -> Any:
    """The dataset factory; None for "val" when the recipe names no validation file."""
    if split not in ("train", "val"):
        raise DataError(f"prompt_response has splits 'train' and 'val', not '{split}'")
    if not config.tokenizer:
        raise DataError("data.tokenizer: prompt_response needs the base model's tokenizer file",
                        hint="e.g. data.tokenizer=runs/base/tokenizer.model")
    tokenizer = load_tokenizer(config.tokenizer, expected_vocab_size=config.vocab_size or None)
    path_text = config.train_file if split == "train" else config.val_file
    if split == "val" and not path_text:
        return None
    if not path_text:
        raise DataError("data.train_file: prompt_response needs a JSONL file of prompt/response pairs")
    path = Path(path_text)
    rows = build_rows(path, tokenizer, config)
    if split == "train":
        return PromptResponseTrain(rows, tokenizer, config.batch_size, shard, path)
    return PromptResponseValidation(rows, tokenizer, config.batch_size, shard)
