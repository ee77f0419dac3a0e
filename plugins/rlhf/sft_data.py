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

from plugins.lm.packing import IGNORE_INDEX
from plugins.lm.tokenizer import Tokenizer, load_tokenizer
from plugins.rlhf.chat import ChatTemplate, chat_template
from plugins.rlhf.packed import PADDING_DOCUMENT
from plugins.rlhf.rows import RowsTrain, RowsValidation
from toolkit.data import ShardInfo
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


def read_fields(path: Path, fields: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """(line number, the string values of `fields`) of every non-empty line; one clear error per bad line."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error})".splitlines()[0]) from error
    found = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(row, dict) or not all(isinstance(row.get(field), str) for field in fields):
            raise DataError(f"{path}:{number}: expected an object with string fields "
                            + ", ".join(f"'{field}'" for field in fields))
        found.append((number, [row[field] for field in fields]))
    if not found:
        raise DataError(f"{path}: holds no rows")
    return found


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
    for number, (prompt, response) in read_fields(path, (config.prompt_field, config.response_field)):
        example = tokenize_example(tokenizer, template, prompt, response)
        if len(example.input_ids) > config.seq_len:
            raise DataError(f"{path}:{number}: the example is {len(example.input_ids) + 1} tokens, more than "
                            f"data.seq_len + 1 = {config.seq_len + 1}", hint="raise data.seq_len or shorten it")
        examples.append(example)
    return pack_rows(examples, config.seq_len, config.packing, tokenizer.eos_id)


FILLS = {"input_ids": 0, "labels": IGNORE_INDEX, "document_ids": PADDING_DOCUMENT}  # padding rows


def load_split(config: Any, split: str, what: str) -> tuple[Tokenizer, Path | None]:
    """The tokenizer and the split's file of a JSONL dataset config (`train_file`, `val_file`,
    `tokenizer`, `vocab_size`); the file is None for "val" when the recipe names none."""
    if split not in ("train", "val"):
        raise DataError(f"{what} has splits 'train' and 'val', not '{split}'")
    if not config.tokenizer:
        raise DataError(f"data.tokenizer: {what} needs the base model's tokenizer file",
                        hint="e.g. data.tokenizer=runs/base/tokenizer.model")
    tokenizer = load_tokenizer(config.tokenizer, expected_vocab_size=config.vocab_size or None)
    path_text = config.train_file if split == "train" else config.val_file
    if split == "val" and not path_text:
        return tokenizer, None
    if not path_text:
        raise DataError(f"data.train_file: {what} needs a JSONL file")
    return tokenizer, Path(path_text)


def build_prompt_response(config: PromptResponseConfig, split: str, shard: ShardInfo) -> Any:
    """The dataset factory; None for "val" when the recipe names no validation file."""
    tokenizer, path = load_split(config, split, "prompt_response")
    if path is None:
        return None
    rows = build_rows(path, tokenizer, config)
    if split == "train":
        return RowsTrain(rows, FILLS, tokenizer, config.batch_size, shard, str(path))
    return RowsValidation(rows, FILLS, tokenizer, config.batch_size, shard)
