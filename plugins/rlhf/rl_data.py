"""The `prompts` dataset: prompts (and reference answers) for RL, from JSONL.

Batches are {"prompt": [str] * B, "reference": [str] * B}: the RL task tokenizes and samples them
itself. Training draws prompts in the core's resumable EpochOrder (a permutation per epoch from
trainer.seed); validation is one pass in file order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from plugins.lm.tokenizer_files import tokenizer_run_files
from plugins.rlhf.sft_data import read_fields
from toolkit.data import ShardInfo
from toolkit.data.order import OrderedTrainSource, OrderedValidationSource, ValidationOrder, training_order
from toolkit.errors import DataError


@dataclass
class PromptsConfig:
    """The `data:` section for `name: prompts`."""

    train_file: str = ""  # JSONL rows with the two fields below (the SFT data serves)
    val_file: str = ""  # "" -> no validation
    prompt_field: str = "prompt"
    reference_field: str = "reference"
    batch_size: int = 4  # prompts per rollout batch per rank (each sampled task.samples_per_prompt times)
    tokenizer: str = ""  # the policy's tokenizer: copied into the run directory (the task reads ${data.tokenizer})

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class _Prompts:
    def __init__(self, path: Path, config: PromptsConfig) -> None:
        rows = read_fields(path, (config.prompt_field, config.reference_field))
        self.prompts = [values[0] for _, values in rows]
        self.references = [values[1] for _, values in rows]
        self.tokenizer = Path(config.tokenizer) if config.tokenizer else None

    def run_files(self) -> dict[str, Path]:
        """The tokenizer goes with the run, so its policy loads for generation and evaluation."""
        return tokenizer_run_files(self.tokenizer) if self.tokenizer is not None else {}

    def batch(self, indices: np.ndarray) -> dict[str, list[str]]:
        return {"prompt": [self.prompts[i] for i in indices], "reference": [self.references[i] for i in indices]}


class PromptsTrain(OrderedTrainSource, _Prompts):
    def __init__(self, path: Path, config: PromptsConfig, shard: ShardInfo) -> None:
        _Prompts.__init__(self, path, config)
        self.order = training_order(len(self.prompts), config.batch_size, shard, str(path),
                                    hint="use more prompts, or lower data.batch_size")

    def next_batch(self) -> dict[str, list[str]]:
        return self.batch(self.order.next_indices())


class PromptsValidation(OrderedValidationSource, _Prompts):
    def __init__(self, path: Path, config: PromptsConfig, shard: ShardInfo) -> None:
        _Prompts.__init__(self, path, config)
        self.order = ValidationOrder(len(self.prompts), config.batch_size, shard)

    def validation_batch(self, indices: np.ndarray) -> dict[str, list[str]]:
        return self.batch(indices)


def build_prompts(config: PromptsConfig, split: str, shard: ShardInfo) -> Any:
    if split not in ("train", "val"):
        raise DataError(f"prompts has splits 'train' and 'val', not '{split}'")
    path_text = config.train_file if split == "train" else config.val_file
    if not path_text:
        if split == "val":
            return None
        raise DataError("data.train_file: prompts needs a JSONL file of prompts")
    source = PromptsTrain if split == "train" else PromptsValidation
    return source(Path(path_text), config, shard)
