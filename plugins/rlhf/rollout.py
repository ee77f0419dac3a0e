"""Rollouts: prompts sampled K times from the policy with the KV-cache generator, and the per-token
log-probabilities of the sampled responses under any model of the same vocabulary.

Prompts are [EOS] + the chat template's prompt, LEFT padded to one width W so every row's response
starts at column W. A response runs to its first EOS (included); what the generator appends after
it is masked out. Scoring runs the document-masked forward (plugins.rlhf.packed) with the left
padding as a document of its own, so padding is never attended and positions start at 0 on each
prompt's first token, exactly as in the cached generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from plugins.lm.sampling import generate, max_context_length
from plugins.lm.tokenizer import Tokenizer
from plugins.rlhf.chat import ChatTemplate
from plugins.rlhf.packed import PADDING_DOCUMENT, packed_logits, require_packing_support
from toolkit.errors import DataError


@dataclass
class Rollout:
    sequences: torch.Tensor  # [N, W + T]: left-padded prompts, then the responses
    documents: torch.Tensor  # [N, W + T]: -1 on left padding, 0 on the text
    response_mask: torch.Tensor  # [N, T]: 1 on response tokens up to and including the first EOS
    prompt_width: int  # W
    completions: list[str]  # each response decoded, without its EOS

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_width:]  # [N, T]

    @property
    def last_index(self) -> torch.Tensor:
        """Each response's last token [N] (where a sequence-level score is credited)."""
        return (self.response_mask.sum(dim=1) - 1).clamp_min(0)

    def rows(self, index: torch.Tensor) -> "Rollout":
        return Rollout(self.sequences[index], self.documents[index], self.response_mask[index], self.prompt_width,
                       [self.completions[i] for i in index.tolist()])


def encode_prompts(tokenizer: Tokenizer, template: ChatTemplate, prompts: list[str]) -> list[list[int]]:
    return [[tokenizer.eos_id, *tokenizer.encode(template.render_prompt(prompt))] for prompt in prompts]


def sample(policy: nn.Module, tokenizer: Tokenizer, prompt_ids: list[list[int]], max_new_tokens: int,
           temperature: float, top_k: int = 0) -> Rollout:
    """One response per row of `prompt_ids` (repeat rows for K samples), drawn from torch's RNG."""
    width = max(len(ids) for ids in prompt_ids)
    limit = max_context_length(policy)
    if limit is not None and width + max_new_tokens > limit:
        longest = max(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        raise DataError(f"prompt {longest} is {len(prompt_ids[longest])} tokens; with task.max_new_tokens="
                        f"{max_new_tokens} it exceeds the policy's context of {limit} tokens",
                        hint="shorten the prompts or lower task.max_new_tokens")
    device = next(policy.parameters()).device
    ids = torch.full((len(prompt_ids), width), tokenizer.eos_id, dtype=torch.long)
    attention = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for row, prompt in enumerate(prompt_ids):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention[row, width - len(prompt):] = 1
    padded = not bool(attention.bool().all())
    sequences = generate(policy, ids.to(device), max_new_tokens, temperature=temperature, top_k=top_k or None,
                         eos_id=tokenizer.eos_id, attention_mask=attention.to(device) if padded else None)
    responses = sequences[:, width:]  # [N, T]
    is_eos = (responses == tokenizer.eos_id).long()
    response_mask = ((is_eos.cumsum(dim=1) - is_eos) == 0).long()  # up to and including the first EOS
    documents = torch.cat([torch.where(attention.bool(), 0, PADDING_DOCUMENT).to(device),
                           torch.zeros_like(responses)], dim=1)
    completions = []
    for row in responses.tolist():
        if tokenizer.eos_id in row:
            row = row[:row.index(tokenizer.eos_id)]
        completions.append(tokenizer.decode(row))
    return Rollout(sequences, documents, response_mask, width, completions)


def response_logprobs(model: nn.Module, rollout: Rollout) -> torch.Tensor:
    """log p(response token | everything before it) under `model`, [N, T] (float32)."""
    logits = packed_logits(require_packing_support(model), rollout.sequences, rollout.documents)  # [N, W+T, V]
    predicting = logits[:, rollout.prompt_width - 1:-1]  # [N, T, V]: the logits that chose each response token
    return F.log_softmax(predicting, dim=-1).gather(-1, rollout.responses.unsqueeze(-1)).squeeze(-1)
