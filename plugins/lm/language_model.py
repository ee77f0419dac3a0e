"""`LanguageModel`: a toolkit causal LM loaded for inference with its tokenizer, and how evaluators query it.

`score_tokens` gives the summed next-token NLL of token windows (perplexity); `loglikelihood`
scores continuations of contexts; `generate_until` decodes greedily until a stop string or EOS.
Text is given to the model after an end-of-text token, as a document starts in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from plugins.lm import sampling
from plugins.lm.context_overflow import CountsContextOverflow
from plugins.lm.sampling import generate, max_context_length

GENERATION_CHUNK = 16  # new tokens between stop-string checks


@dataclass
class LanguageModel(CountsContextOverflow):
    model: nn.Module
    tokenizer: Any  # plugins.lm.tokenizer.Tokenizer (encode, decode, eos_id)
    device: torch.device
    identity: str = ""  # exactly what was loaded (the checkpoint directory); keys the sample cache
    overflow_consequence = "the model read only the last context-length tokens of each"

    @property
    def context_length(self) -> int:
        return max_context_length(self.model) or 2048

    @torch.no_grad()
    def score_tokens(self, windows: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of NLL of tokens 1.., count) for each window, each scored within itself."""
        results: list[tuple[float, int] | None] = [None] * len(windows)
        by_length: dict[int, list[int]] = {}
        for index, window in enumerate(windows):
            by_length.setdefault(len(window), []).append(index)
        for length, indices in by_length.items():  # equal lengths batch without padding
            ids = torch.tensor([windows[i] for i in indices], dtype=torch.long, device=self.device)  # [B, T]
            logits = self.model(ids[:, :-1]).float()  # [B, T-1, V]
            nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").sum(dim=1)  # [B]
            for index, value in zip(indices, nll.tolist()):
                results[index] = (value, length - 1)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding would produce it) per request."""
        results = []
        for context, continuation in requests:
            context_ids = [self.tokenizer.eos_id, *self.tokenizer.encode(context)]
            continuation_ids = self.tokenizer.encode(continuation)
            if not continuation_ids:
                results.append((0.0, True))
                continue
            self._record_length(len(context_ids) + len(continuation_ids) - 1)  # the last token is only a target
            ids = (context_ids + continuation_ids)[-(self.context_length + 1):]
            tokens = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, T]
            logits = self.model(tokens[:, :-1]).float()[0, -len(continuation_ids):]  # [C, V]
            targets = tokens[0, -len(continuation_ids):]  # [C]
            log_probs = logits.log_softmax(dim=-1)
            total = float(log_probs.gather(1, targets[:, None]).sum())
            results.append((total, bool((logits.argmax(dim=-1) == targets).all())))
        return results

    @torch.no_grad()
    def generate_until(self, prompts: list[str], stop: list[str], max_new_tokens: int,
                       batch_size: int = 1) -> list[str]:
        """Greedy continuation of each prompt, cut before the first stop string or EOS.

        Uses the lm plugin's batched `generate_text` (KV cache, left padding) where it exists,
        else decodes prompt by prompt in chunks, checking the stop strings between chunks.
        """
        eos = self.tokenizer.eos_id
        for prompt in prompts:
            self._record_length(1 + len(self.tokenizer.encode(prompt)))
        batched = getattr(sampling, "generate_text", None)
        if batched is not None:
            return batched(self.model, self.tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                           stop=stop, batch_size=batch_size, prefix_ids=[eos])
        completions = []
        for prompt in prompts:
            prompt_ids = [eos, *self.tokenizer.encode(prompt)]
            sequence = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)  # [1, T]
            new_ids: list[int] = []
            text = ""
            while len(new_ids) < max_new_tokens:
                step = min(GENERATION_CHUNK, max_new_tokens - len(new_ids))
                sequence = generate(self.model, sequence, max_new_tokens=step, temperature=0.0, eos_id=eos)
                new_ids = sequence[0, len(prompt_ids):].tolist()
                ended = eos in new_ids
                if ended:
                    new_ids = new_ids[:new_ids.index(eos)]
                text = self.tokenizer.decode(new_ids)
                if ended or any(marker in text for marker in stop):
                    break
            cut = min([text.index(marker) for marker in stop if marker in text], default=len(text))
            completions.append(text[:cut])
        return completions
