"""The `duo_analysis` evaluator: how a Duo model's routings compare, per budget of big-FFN layers.

    toolkit-eval duo_analysis --model runs/duo-tiny --output eval/duo sequences=4

On the first `sequences` validation sequences of the run's own data it runs the exhaustive
oracle (plugins.duo.oracle) and reads from its per-token losses, for each budget `max_big`:
the oracle (corpus pattern, per-sequence and per-token), the best of `random_patterns` random
patterns drawn once (seeded) and filtered to the budget; beside them all-small, all-big, and the
model's own router (its loss and big-FFN share). Also: which layers the per-sequence oracle
gives the big FFN, big-FFN layers by token position, and token difficulty (all-small loss minus
the best loss any pattern reaches). A PNG (`duo_analysis.png`) plots loss per budget and big
layers by position.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from plugins.duo.oracle import IGNORE_INDEX, OracleSearchConfig, search
from plugins.duo.routers import BIG, SMALL
from toolkit.errors import ToolkitError


@dataclass
class DuoAnalysisConfig:
    """`toolkit-eval duo_analysis` options."""

    sequences: int = 4  # validation sequences (toolkit-eval --limit overrides)
    random_patterns: int = 32  # N of best-of-N random patterns
    seed: int = 0  # draws the random patterns
    allow_skip: bool = True
    precision: str = "bfloat16"  # of the oracle's scoring: float32 or bfloat16
    figure: bool = True  # write duo_analysis.png

    def __post_init__(self) -> None:
        if self.sequences < 1 or self.random_patterns < 1:
            raise ValueError("sequences and random_patterns must be >= 1")


def analyze(model, input_ids: torch.Tensor, labels: torch.Tensor, config: DuoAnalysisConfig) -> dict[str, Any]:
    """The metrics (see the module docstring) for `input_ids`, `labels` [N, S]."""
    result = search(model, input_ids, labels, OracleSearchConfig(allow_skip=config.allow_skip, method="exhaustive",
                                                                 precision=config.precision))
    patterns, losses = result.patterns, result.token_losses  # [P, L], [P, N, S]
    keep = (labels != IGNORE_INDEX).float().cpu()  # [N, S]
    corpus = losses.sum(dim=(1, 2)) / keep.sum()  # [P]
    big_counts = (patterns == BIG).sum(dim=1)  # [P]
    num_layers = patterns.shape[1]
    index_of = {tuple(row.tolist()): i for i, row in enumerate(patterns)}
    drawn = torch.randint(0, patterns.shape[0], (config.random_patterns,),
                          generator=torch.Generator().manual_seed(config.seed))
    per_budget = []
    for entry in result.budgets:
        allowed = [int(i) for i in drawn if int(big_counts[i]) <= entry["max_big"]]
        per_budget.append({
            "max_big": entry["max_big"], "oracle_corpus": entry["loss"],
            "oracle_sequence": entry["sequence_oracle_loss"], "oracle_token": entry["token_oracle_loss"],
            "best_of_random": min((float(corpus[i]) for i in allowed), default=None),
            "oracle_pattern": entry["best_pattern"],
            "oracle_big_share_by_layer": entry["sequence_big_share_by_layer"],
            "big_layers_by_position": entry["token_big_layers_by_position"],
        })
    all_small = losses[index_of[(SMALL,) * num_layers]]  # [N, S]
    reachable = losses.min(dim=0).values  # [N, S]
    difficulty = ((all_small - reachable) * keep).sum() / keep.sum()
    model.eval()
    with torch.no_grad():
        logits = model(input_ids)  # the model's own router
        own = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    return {"all_big": float(corpus[index_of[(BIG,) * num_layers]]), "all_small": float(corpus[index_of[(SMALL,) * num_layers]]),
            "own_router": float(own), "own_router_big_share": float(model.big_share()),
            "token_difficulty": float(difficulty), "num_patterns": int(patterns.shape[0]),
            "budgets": per_budget}


def figure_png(metrics: dict[str, Any]) -> bytes:
    """Loss per budget (oracle, best-of-N random, all-small, all-big, own router) and big layers by position."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = metrics["budgets"]
    x = [entry["max_big"] for entry in budgets]
    figure, (losses, positions) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("oracle_corpus", "oracle (corpus)"), ("oracle_sequence", "oracle (per sequence)"),
                       ("oracle_token", "oracle (per token)"), ("best_of_random", "best of N random")):
        losses.plot(x, [entry[key] for entry in budgets], marker="o", label=label)
    for key, style in (("all_big", "--"), ("all_small", ":"), ("own_router", "-.")):
        losses.axhline(metrics[key], linestyle=style, color="gray", label=key.replace("_", " "))
    losses.set_xlabel("at most this many big-FFN layers")
    losses.set_ylabel("loss (nats/token)")
    losses.legend(fontsize=7)
    middle = budgets[len(budgets) // 2]
    positions.plot(middle["big_layers_by_position"])
    positions.set_xlabel("token position")
    positions.set_ylabel(f"big layers of the per-token oracle (max_big {middle['max_big']})")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


class DuoAnalysisEvaluator:
    def __init__(self, config: DuoAnalysisConfig | None = None) -> None:
        self.config = config or DuoAnalysisConfig()

    def load_model(self, spec: str, device: str, **options: str):
        from toolkit.checkpoint import load_model

        loaded = load_model(spec, device=device)
        if not hasattr(loaded.model, "set_router"):
            raise ToolkitError(f"{spec}: duo_analysis needs a Duo model, this is {type(loaded.model).__name__}")
        loaded.identity = str(loaded.checkpoint_dir)
        return loaded

    def evaluate(self, loaded, context) -> dict[str, Any]:
        from plugins.duo.oracle_cli import validation_sequences
        from toolkit.evaluation import write_bytes_atomically

        input_ids, labels = validation_sequences(loaded.recipe, context.limit or self.config.sequences)
        metrics = analyze(loaded.model, input_ids, labels, self.config)
        if self.config.figure:
            Path(context.output_dir).mkdir(parents=True, exist_ok=True)
            write_bytes_atomically(Path(context.output_dir) / "duo_analysis.png", figure_png(metrics))
        return metrics


def build_duo_analysis(config: DuoAnalysisConfig | None) -> DuoAnalysisEvaluator:
    return DuoAnalysisEvaluator(config)
