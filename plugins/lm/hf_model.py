"""Hugging Face causal LMs (a local directory or a GGUF file) behind the evaluators' model interface.

`load_hf_language_model` reads a directory with `config.json` + weights + tokenizer files, or a
`.gguf` file (transformers dequantises it), offline only (`local_files_only`). `HFLanguageModel`
answers the three queries the evaluators make (`score_tokens`, `loglikelihood`, `generate_until`)
with the model's own conventions: text is tokenised the way its tokenizer adds special tokens
(a BOS for LLaMA-2-style models, nothing for SmolLM2), not with the toolkit's end-of-text prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plugins.lm.context_overflow import CountsContextOverflow
from toolkit.errors import CheckpointError

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == GGUF_MAGIC


def require_transformers():
    """The transformers module, or one line saying how to install it."""
    try:
        import transformers
    except ImportError as error:
        raise CheckpointError("loading Hugging Face or GGUF models needs transformers",
                              hint="pip install transformers gguf accelerate") from error
    return transformers


class HFTokenizer:
    """encode / decode / eos_id over a transformers tokenizer, as the evaluators expect."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self.vocab_size = len(tokenizer)
        self._prefix = self._special_prefix()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _special_prefix(self) -> list[int]:
        marker = "\x00"
        with_special = self.tokenizer.encode(marker, add_special_tokens=True)
        without = self.tokenizer.encode(marker, add_special_tokens=False)
        return with_special[:len(with_special) - len(without)] if with_special[-len(without):] == without else []

    def prefix_ids(self) -> list[int]:
        """What the tokenizer puts before a document (a BOS, or nothing); worked out once."""
        return list(self._prefix)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@dataclass
class HFLanguageModel(CountsContextOverflow):
    model: Any  # a transformers causal LM
    tokenizer: HFTokenizer
    device: torch.device
    identity: str = ""
    overflow_consequence = ("scored inputs keep only their last context-length tokens, and generation runs at "
                            "positions the model was not trained on")

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)

    @torch.no_grad()
    def score_tokens(self, windows: list[list[int]]) -> list[tuple[float, int]]:
        """(sum of NLL of tokens 1.., count) for each window, each scored within itself."""
        results = []
        for window in windows:
            ids = torch.tensor([window], dtype=torch.long, device=self.device)  # [1, T]
            logits = self.model(ids[:, :-1]).logits.float()  # [1, T-1, V]
            results.append((float(F.cross_entropy(logits[0], ids[0, 1:], reduction="sum")), len(window) - 1))
        return results

    @torch.no_grad()
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        results = []
        prefix = self.tokenizer.prefix_ids()
        for context, continuation in requests:
            context_ids = [*prefix, *self.tokenizer.encode(context)]
            continuation_ids = self.tokenizer.encode(continuation)
            if not continuation_ids:
                results.append((0.0, True))
                continue
            self._record_length(len(context_ids) + len(continuation_ids) - 1)  # the last token is only a target
            ids = torch.tensor([(context_ids + continuation_ids)[-(self.context_length + 1):]], device=self.device)
            logits = self.model(ids[:, :-1]).logits.float()[0, -len(continuation_ids):]  # [C, V]
            targets = ids[0, -len(continuation_ids):]
            total = float(logits.log_softmax(-1).gather(1, targets[:, None]).sum())
            results.append((total, bool((logits.argmax(-1) == targets).all())))
        return results

    @torch.no_grad()
    def generate_until(self, prompts: list[str], stop: list[str], max_new_tokens: int,
                       batch_size: int = 1) -> list[str]:
        """Greedy continuations, batched with left padding, cut before the first stop string."""
        transformers = require_transformers()
        tokenizer = self.tokenizer.tokenizer
        completions: list[str] = []
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.tokenizer.eos_id
        prefix = self.tokenizer.prefix_ids()

        class StopStrings(transformers.StoppingCriteria):
            """Per row: done once its new text holds a stop string (checked on the decoded text)."""

            def __init__(self, prompt_length: int) -> None:
                self.prompt_length = prompt_length

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
                texts = tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
                return torch.tensor([any(marker in text for marker in stop) for text in texts], device=input_ids.device)

        for start in range(0, len(prompts), batch_size):
            rows = [[*prefix, *self.tokenizer.encode(prompt)] for prompt in prompts[start:start + batch_size]]
            for row in rows:
                self._record_length(len(row))
            width = max(map(len, rows))
            ids = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], device=self.device)  # [B, T]
            mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows], device=self.device)
            output = self.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                pad_token_id=pad_id, eos_token_id=self.tokenizer.eos_id,
                stopping_criteria=transformers.StoppingCriteriaList([StopStrings(width)]),
            )
            for row in output[:, width:].tolist():
                if self.tokenizer.eos_id in row:
                    row = row[:row.index(self.tokenizer.eos_id)]
                text = self.tokenizer.decode(row)
                cut = min([text.index(marker) for marker in stop if marker in text], default=len(text))
                completions.append(text[:cut])
        return completions


def load_hf_language_model(path: Path, device: str) -> HFLanguageModel:
    """A local Hugging Face causal-LM directory or GGUF file, in fp32, offline."""
    transformers = require_transformers()
    if path.is_file():
        directory, keywords = path.parent, {"gguf_file": path.name}
    else:
        directory, keywords = path, {}
    # transformers reports loading problems as multi-line tables and progress bars on stderr; the
    # toolkit turns a failure into one line instead, so it is kept quiet while loading.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory, local_files_only=True, **keywords)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, dtype=torch.float32, **keywords)
    except ImportError as error:
        raise CheckpointError(f"{path}: {error}".splitlines()[0], hint="pip install transformers gguf accelerate") from error
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        # Missing files, unknown architectures, and weights whose shapes disagree with config.json
        # all arrive here; the first line of transformers' message names what is wrong.
        first_line = " ".join(str(error).split("\n")[0].split())[:300]
        if "mismatched_sizes" in first_line:
            first_line = "the weights' shapes disagree with the shapes config.json asks for"
        raise CheckpointError(f"{path}: cannot load as a Hugging Face causal LM ({first_line})") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()
    model.eval().to(device)
    identity = f"{path.resolve()}:{path.stat().st_size if path.is_file() else ''}"
    return HFLanguageModel(model, HFTokenizer(tokenizer), torch.device(device), identity=identity)
