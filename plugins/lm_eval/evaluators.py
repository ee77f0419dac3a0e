"""The evaluators `perplexity` and `gsm8k`: configs, factories and scoring loops.

The GSM8K pieces (`GSMConfig`, `score_problems`, `shot_pool`) are the protocol the `gsm_symbolic`
plugin's evaluator builds on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.lm.language_model import LanguageModel
from plugins.lm.loading import load_language_model
from plugins.lm_eval import gsm
from toolkit.errors import DataError
from toolkit.evaluation import EvalContext, EvaluationError


class LanguageModelEvaluator:
    """Evaluators of causal LMs share how the `--model` spec is loaded."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def load_model(self, spec: str, device: str, tokenizer: str | None = None,
                   model_name: str | None = None) -> LanguageModel:
        return load_language_model(spec, device, tokenizer, model_name)


# --- perplexity ---------------------------------------------------------------------------------

@dataclass
class PerplexityConfig:
    shards: str = "builtin:shakespeare"  # glob/brace pattern of text shards; builtin -> its val shards
    window: int = 0  # tokens per scored window; 0 -> the model's context length
    cache_dir: str = ""  # where builtin corpora are built; "" -> $TOOLKIT_CACHE or ~/.cache/toolkit


class PerplexityEvaluator(LanguageModelEvaluator):
    """Token-level perplexity over text shards, in non-overlapping windows of the model's context."""

    def evaluate(self, model: LanguageModel, context: EvalContext) -> dict[str, Any]:
        from plugins.lm.corpus import is_builtin, resolve_builtin
        from toolkit.data.cache import cache_root
        from toolkit.data.shards import expand_shard_pattern, read_documents

        pattern = self.config.shards
        if is_builtin(pattern):
            pattern = resolve_builtin(pattern, cache_root(self.config.cache_dir)).val_pattern
        tokens: list[int] = []
        for document in read_documents(expand_shard_pattern(pattern)):
            tokens += [model.tokenizer.eos_id, *model.tokenizer.encode(document)]
        window = self.config.window or model.context_length
        if window < 1:
            raise EvaluationError(f"perplexity window must be >= 1, got {window}")
        # Window i scores tokens [i*window+1, (i+1)*window] given the token before them.
        windows = [tokens[start:start + window + 1] for start in range(0, max(len(tokens) - 1, 0), window)]
        windows = [w for w in windows if len(w) > 1][:context.limit]
        if not windows:
            raise DataError(f"{self.config.shards}: no text to score")
        items = [(f"window-{index:06d}", ids) for index, ids in enumerate(windows)]

        def compute(batch: list[list[int]]) -> list[dict[str, Any]]:
            return [{"nll": nll, "tokens": count} for nll, count in model.score_tokens(batch)]

        records = context.map_samples(items, compute, description="perplexity")
        total_nll = sum(record["nll"] for record in records)
        total_tokens = sum(record["tokens"] for record in records)
        return {"perplexity": math.exp(total_nll / total_tokens), "nll_per_token": total_nll / total_tokens,
                "tokens": total_tokens, "windows": len(records), "window": window}


# --- GSM evaluators -----------------------------------------------------------------------------

@dataclass
class GSMConfig:
    num_shots: int = 8
    seed: int = 1234  # draws the shots
    shots_file: str = ""  # JSONL with question/answer; "" -> the GSM8K test split
    max_new_tokens: int = 256


def score_problems(model: LanguageModel, context: EvalContext, config: GSMConfig,
                   items: list[tuple[str, dict[str, Any]]], shots: list[gsm.Problem],
                   description: str) -> list[dict[str, Any]]:
    """Greedy 8-shot answers for `(sample_id, {"question", "answer", ...})` items, one record each."""

    def compute(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        prompts = [gsm.build_prompt(shots, row["question"]) for row in batch]
        completions = model.generate_until(prompts, gsm.STOP_STRINGS, config.max_new_tokens,
                                             batch_size=len(prompts))
        records = []
        for row, completion in zip(batch, completions):
            gold = gsm.gold_answer(row["answer"])
            prediction = gsm.extract_answer(completion)
            extra = {key: value for key, value in row.items() if key not in ("question", "answer")}
            records.append({**extra, "question": row["question"], "gold": gold, "completion": completion,
                            "prediction": prediction, "correct": gsm.is_correct(prediction, gold)})
        return records

    return context.map_samples(items, compute, description=description)


def shot_pool(config: GSMConfig) -> list[gsm.Problem]:
    return gsm.read_problems(Path(config.shots_file)) if config.shots_file else gsm.gsm8k_test()


class GSM8KEvaluator(LanguageModelEvaluator):
    """8-shot chain-of-thought accuracy on the GSM8K test split."""

    def evaluate(self, model: LanguageModel, context: EvalContext) -> dict[str, Any]:
        problems = gsm.gsm8k_test()[:context.limit]
        shots = gsm.draw_shots(shot_pool(self.config), self.config.num_shots, self.config.seed,
                               exclude=[problem.question for problem in problems])
        items = [(f"gsm8k-{index:05d}", {"question": p.question, "answer": p.answer})
                 for index, p in enumerate(problems)]
        records = score_problems(model, context, self.config, items, shots, "gsm8k")
        correct = sum(record["correct"] for record in records)
        return {"accuracy": correct / len(records), "correct": correct, "total": len(records)}


def register_all(register) -> None:
    register("perplexity", PerplexityEvaluator, config=PerplexityConfig)
    register("gsm8k", GSM8KEvaluator, config=GSMConfig)


__all__ = ["GSM8KEvaluator", "GSMConfig", "LanguageModelEvaluator", "PerplexityConfig", "PerplexityEvaluator",
           "register_all", "score_problems", "shot_pool"]
