"""The language-model plugin: text shards, SentencePiece tokenizers, packed batches, LM loss and task.

Registers
    dataset `text_shards`   webdataset text shards (or `builtin:shakespeare`) -> packed token windows
    loss    `cross_entropy` mean token cross-entropy (+ optional PaLM z-loss), computed in fp32
    task    `causal_lm`     next-token prediction; reports tokens, FLOPs and perplexity

and provides the commands `toolkit-tokenizer` (train/inspect a tokenizer) and `toolkit-generate`
(sample from a trained run), `plugins.lm.sampling.generate` for any causal LM, and
`plugins.lm.loading.load_language_model`, which loads a toolkit run, a path a plugin's model
importer reads, a Hugging Face causal-LM directory or a GGUF file for inference.
"""

from __future__ import annotations

from toolkit import hookimpl

from plugins.lm.dataset import TextShardsConfig, build_text_shards
from plugins.lm.loss import CrossEntropyConfig, CrossEntropyLoss, build_cross_entropy
from plugins.lm.sampling import generate
from plugins.lm.task import CausalLMConfig, CausalLMTask, build_causal_lm

__all__ = [
    "CausalLMConfig",
    "CausalLMTask",
    "CrossEntropyConfig",
    "CrossEntropyLoss",
    "TextShardsConfig",
    "build_causal_lm",
    "build_cross_entropy",
    "build_text_shards",
    "generate",
]


@hookimpl
def register_datasets(register):
    register("text_shards", build_text_shards, config=TextShardsConfig)


@hookimpl
def register_losses(register):
    register("cross_entropy", build_cross_entropy, config=CrossEntropyConfig)


@hookimpl
def register_tasks(register):
    register("causal_lm", build_causal_lm, config=CausalLMConfig)
