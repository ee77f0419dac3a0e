"""Evaluators for causal language models, run by `toolkit-eval`.

Registers
    evaluator `perplexity`    token-level perplexity over text shards (default: builtin Shakespeare val)
    evaluator `gsm8k`         8-shot chain-of-thought accuracy on the GSM8K test split

The `gsm_symbolic` plugin runs the same GSM8K protocol on GSM-Symbolic instance sets.

Models are whatever `--model` names, loaded by the lm plugin (`plugins.lm.loading`) into a handle
with `score_tokens`, `loglikelihood` and `generate_until`.
"""

from __future__ import annotations

from plugins.lm.language_model import LanguageModel
from plugins.lm.loading import load_language_model
from toolkit import hookimpl

__all__ = ["LanguageModel", "load_language_model"]


@hookimpl
def register_evaluators(register):
    from plugins.lm_eval.evaluators import register_all

    register_all(register)
