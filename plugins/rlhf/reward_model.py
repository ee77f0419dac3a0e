"""A learned reward: an LM with a scalar head, trained on preference pairs with the Bradley-Terry loss.

Registers (through plugins.rlhf)
    model   `reward_openelm`    OpenELM + a linear score head on the final hidden state of each
                                row's last real token; `init_from: RUN` takes the backbone's
                                architecture and weights from a trained LM run (an SFT run)
    dataset `preference_pairs`  JSONL {"prompt", "chosen", "rejected"} -> token rows of both
    task    `reward_model`      -log sigmoid(r(chosen) - r(rejected)), with pair accuracy and margin
    reward  `reward_model`      scores RL samples with a trained reward-model run

The score head starts at zero, so an untrained reward model prefers neither response (loss ln 2).
Text is laid out as in SFT: [EOS] + prompt (chat template) + response + [EOS], the score read at
that closing EOS.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plugins.lm.tokenizer import Tokenizer, load_tokenizer
from plugins.lm.tokenizer_files import run_tokenizer_file
from plugins.openelm import OpenELM, OpenELMConfig
from plugins.rlhf.chat import ChatTemplate, chat_template
from plugins.rlhf.packed import packed_hidden
from plugins.rlhf.rewards import Sample
from plugins.rlhf.rows import RowsTrain, RowsValidation
from plugins.rlhf.sft_data import load_split, read_fields
from toolkit.checkpoint import load_model, model_config
from toolkit.data import ShardInfo
from toolkit.errors import CheckpointError, DataError, RecipeError
from toolkit.task import StepOutput


@dataclass
class RewardModelConfig(OpenELMConfig):
    """The `model:` section for `name: reward_openelm`: an OpenELM's fields, or `init_from`."""

    init_from: str = ""  # an LM run: its model's architecture and weights (the other fields are then unused)


class RewardModel(nn.Module):
    """`model(input_ids [B, S], last [B]) -> scores [B]` (float32), read at position `last` of each row.

    Without `last`, scores at every position [B, S] (PPO's value head). `document_ids` [B, S] (-1 on
    left padding, 0 on the text) keeps left padding out of attention, as in plugins.rlhf.packed.
    """

    def __init__(self, backbone: OpenELM) -> None:
        super().__init__()
        self.backbone = backbone
        self.score_head = nn.Linear(backbone.config.model_dim, 1)
        nn.init.zeros_(self.score_head.weight)
        nn.init.zeros_(self.score_head.bias)

    def forward(self, input_ids: torch.Tensor, last: torch.Tensor | None = None,
                document_ids: torch.Tensor | None = None) -> torch.Tensor:
        # One document per row: right padding comes after `last`, which causal attention never reads.
        documents = torch.zeros_like(input_ids) if document_ids is None else document_ids
        hidden = packed_hidden(self.backbone, input_ids, documents)  # [B, S, D]
        if last is None:
            return self.score_head(hidden).squeeze(-1).float()  # [B, S]
        picked = hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last]  # [B, D]
        return self.score_head(picked).squeeze(-1).float()  # [B]


def build_reward_model(config: RewardModelConfig) -> RewardModel:
    if not config.init_from:
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(OpenELMConfig)}
        return RewardModel(OpenELM(OpenELMConfig(**fields)))
    device = torch.empty(0).device  # the factory's default device (meta for dry runs)
    if device.type == "meta":
        described = model_config(config.init_from)
        backbone = described.component.factory(described.config)
    else:
        backbone = load_model(config.init_from, device=device).model.train()
    if type(backbone) is not OpenELM:
        raise CheckpointError(f"model.init_from: {config.init_from} holds a {type(backbone).__name__}; "
                              "reward_openelm needs an OpenELM run")
    return RewardModel(backbone)


# --- preference pairs --------------------------------------------------------------------------


@dataclass
class PreferencePairsConfig:
    """The `data:` section for `name: preference_pairs`."""

    train_file: str = ""
    val_file: str = ""
    tokenizer: str = ""  # the backbone's SentencePiece .model
    vocab_size: int = 0  # checked against the tokenizer when > 0
    template: str = "plain"
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    seq_len: int = 256  # longest [EOS] + prompt + response + [EOS]
    batch_size: int = 8  # pairs per micro-batch per rank

    def __post_init__(self) -> None:
        if self.seq_len < 2 or self.batch_size < 1:
            raise ValueError(f"seq_len must be >= 2 and batch_size >= 1, got {self.seq_len}, {self.batch_size}")


def scored_ids(tokenizer: Tokenizer, template: ChatTemplate, prompt: str, completion: str) -> list[int]:
    """[EOS] + rendered prompt + completion + [EOS]: what a reward model scores (at the last token)."""
    return [tokenizer.eos_id, *tokenizer.encode(template.render_prompt(prompt)), *tokenizer.encode(completion),
            tokenizer.eos_id]


def right_padded(sequences: list[list[int]], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [N, width] right-padded with 0, index of each row's last token [N])."""
    ids = np.zeros((len(sequences), width), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, :len(sequence)] = sequence
    return ids, np.array([len(sequence) - 1 for sequence in sequences], dtype=np.int64)


def build_pair_rows(path: Path, tokenizer: Tokenizer, config: PreferencePairsConfig) -> dict[str, np.ndarray]:
    template = chat_template(config.template)
    chosen, rejected = [], []
    fields = (config.prompt_field, config.chosen_field, config.rejected_field)
    for number, (prompt, good, bad) in read_fields(path, fields):
        pair = [scored_ids(tokenizer, template, prompt, template.render_response(text)) for text in (good, bad)]
        longest = max(len(ids) for ids in pair)
        if longest > config.seq_len:
            raise DataError(f"{path}:{number}: a response is {longest} tokens with its prompt, more than "
                            f"data.seq_len = {config.seq_len}", hint="raise data.seq_len or shorten it")
        chosen.append(pair[0])
        rejected.append(pair[1])
    chosen_ids, chosen_last = right_padded(chosen, config.seq_len)
    rejected_ids, rejected_last = right_padded(rejected, config.seq_len)
    return {"chosen_ids": chosen_ids, "chosen_last": chosen_last, "rejected_ids": rejected_ids,
            "rejected_last": rejected_last, "valid": np.ones(len(chosen), dtype=np.int64)}


def build_preference_pairs(config: PreferencePairsConfig, split: str, shard: ShardInfo) -> Any:
    tokenizer, path = load_split(config, split, "preference_pairs")
    if path is None:
        return None
    rows = build_pair_rows(path, tokenizer, config)
    fills = {"valid": 0}  # padding pairs of a short validation batch count for nothing
    if split == "train":
        return RowsTrain(rows, fills, tokenizer, config.batch_size, shard, str(path))
    return RowsValidation(rows, fills, tokenizer, config.batch_size, shard)


# --- the task ----------------------------------------------------------------------------------


@dataclass
class RewardModelTaskConfig:
    """The `task:` section for `name: reward_model` (no options yet)."""


class RewardModelTask:
    """Bradley-Terry: the chosen response should outscore the rejected one."""

    item_unit = "pairs"

    def __init__(self, config: RewardModelTaskConfig | None = None, loss: Any = None) -> None:
        if loss is not None:
            raise RecipeError("task 'reward_model' computes its own loss; remove the recipe's 'loss:' section")
        self.config = config or RewardModelTaskConfig()

    def _step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]])  # [2B, S]
        last = torch.cat([batch["chosen_last"], batch["rejected_last"]])  # [2B]
        chosen, rejected = model(ids, last).chunk(2)  # [B] each
        valid = batch["valid"].bool()  # [B]
        margin = (chosen - rejected)[valid]  # [P]
        if margin.numel() == 0:
            return StepOutput(loss=chosen.sum() * 0.0, items=0)
        loss = -F.logsigmoid(margin).mean()
        return StepOutput(loss=loss, items=int(margin.numel()), sequence_length=ids.shape[1],
                          metrics={"pair_accuracy": (margin > 0).float().mean().detach(),
                                   "margin": margin.mean().detach()})

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        return self._step(model, batch)


def build_reward_model_task(config: RewardModelTaskConfig | None, loss: Any) -> RewardModelTask:
    return RewardModelTask(config, loss)


# --- the learned reward ------------------------------------------------------------------------


@dataclass
class LearnedRewardConfig:
    """The reward section for `name: reward_model`."""

    run: str = ""  # a trained reward_model run (or checkpoint) directory
    template: str = "plain"  # the chat template the RL prompts are rendered with
    batch_size: int = 16
    device: str = "cpu"


class LearnedReward:
    """Scores samples with a trained reward model (eval mode, no gradients)."""

    def __init__(self, config: LearnedRewardConfig) -> None:
        if not config.run:
            raise RecipeError("reward 'reward_model' needs run: a trained reward_model run directory")
        loaded = load_model(config.run, device=config.device)
        if not isinstance(loaded.model, RewardModel):
            raise CheckpointError(f"{config.run}: holds a {type(loaded.model).__name__}, not a reward model")
        self.model, self.config = loaded.model, config
        self.tokenizer = load_tokenizer(run_tokenizer_file(loaded.run_dir) or loaded.run_dir / "tokenizer.model")
        self.template = chat_template(config.template)

    @torch.no_grad()
    def score(self, samples: Sequence[Sample]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(samples), self.config.batch_size):
            group = samples[start:start + self.config.batch_size]
            sequences = [scored_ids(self.tokenizer, self.template, s.prompt, s.completion) for s in group]
            ids, last = right_padded(sequences, max(len(sequence) for sequence in sequences))
            device = torch.device(self.config.device)
            scores.extend(self.model(torch.from_numpy(ids).to(device), torch.from_numpy(last).to(device)).tolist())
        return scores


def build_learned_reward(config: LearnedRewardConfig) -> LearnedReward:
    return LearnedReward(config)
