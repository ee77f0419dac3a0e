"""Baselines for a language-model recipe's data: the unigram entropy of its tokens.

    python tools/lm_corpus_stats.py openelm/tiny.yaml [key=value ...]

A model that learned nothing beyond token frequencies scores the unigram cross-entropy on the
validation split; a trained model's validation loss (nats per token, the same unit) should end far
below it. Prints both unigram figures, the split sizes, and a JSON last line.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from toolkit.cli.common import recipe_arguments, run_cli
from toolkit.data import ShardInfo
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe


def unigram_stats(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int) -> dict[str, float]:
    """Entropy of the train unigram distribution, and its cross-entropy on val (add-one smoothed)."""
    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    probabilities = counts / counts.sum()
    nonzero = probabilities[probabilities > 0]
    entropy = float(-(nonzero * np.log(nonzero)).sum())
    smoothed = (counts + 1) / (counts.sum() + vocab_size)
    val_counts = np.bincount(np.asarray(val_tokens, dtype=np.int64), minlength=vocab_size)
    cross_entropy = float(-(val_counts * np.log(smoothed)).sum() / max(1, val_counts.sum()))
    return {"unigram_entropy_train": entropy, "unigram_cross_entropy_val": cross_entropy,
            "train_tokens": int(len(train_tokens)), "val_tokens": int(len(val_tokens)),
            "uniform_entropy": math.log(vocab_size)}


def main_with_arguments(argv: list[str]) -> int:
    arguments = recipe_arguments("lm_corpus_stats.py", __doc__.strip(), argv)
    recipe = load_recipe(arguments.recipe, arguments.overrides, get_registries())
    data = recipe.components["data"]
    train = data.build("train", ShardInfo())
    val = data.build("val", ShardInfo())
    stats = unigram_stats(train.tokens, val.tokens if val is not None else train.tokens[:0], train.vocab_size)
    print(f"train tokens {stats['train_tokens']:,}, val tokens {stats['val_tokens']:,}")
    print(f"unigram entropy (train) {stats['unigram_entropy_train']:.3f} nats/token; "
          f"unigram cross-entropy on val {stats['unigram_cross_entropy_val']:.3f}; "
          f"uniform {stats['uniform_entropy']:.3f}")
    print(json.dumps(stats))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main_with_arguments))
