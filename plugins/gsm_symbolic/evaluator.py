"""The `gsm_symbolic` evaluator: the GSM8K 8-shot protocol (from the lm_eval plugin) run on instance sets
generated from this plugin's templates (or read from a JSONL file), reported per set, with the spread
across sets and the drop from the original questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins.gsm_symbolic.report import load_symbolic_rows, summarize_symbolic, write_accuracy_plot
from plugins.lm_eval import LanguageModel, gsm
from plugins.lm_eval.evaluators import GSMConfig, LanguageModelEvaluator, score_problems, shot_pool
from toolkit.evaluation import EvalContext, EvaluationError


@dataclass
class GSMSymbolicConfig(GSMConfig):
    data_file: str = ""  # a generated JSONL in the official layout; "" -> generate from templates
    templates: str = ""  # folder with <variant>/NNNN.json; "" -> the shipped templates
    variant: str = "symbolic"
    # Instance sets (set k = the k-th instance of every template). 0: every set a data file holds
    # (Apple's released files hold 50), or 5 when generating; N: the first N sets.
    sets: int = 0
    instance_seed: int = 0
    original: bool = True  # also score the original questions and report the drop


class GSMSymbolicEvaluator(LanguageModelEvaluator):
    """Accuracy per GSM-Symbolic instance set, its spread, and the drop from the original questions."""

    def evaluate(self, model: LanguageModel, context: EvalContext) -> dict[str, Any]:
        config = self.config
        if config.sets < 0:
            raise EvaluationError(f"gsm_symbolic sets must be >= 0 (0: all of a data file), got {config.sets}")
        rows = load_symbolic_rows(config, context.limit)
        scored = [row["question"] for row in rows] + [row["original_question"] for row in rows]
        shots = gsm.draw_shots(shot_pool(config), config.num_shots, config.seed, exclude=scored)
        items = [(f"{row['set']}:{row['template']}", row) for row in rows]
        records = score_problems(model, context, config, items, shots, "gsm_symbolic")
        metrics = summarize_symbolic(records)
        plot = write_accuracy_plot(metrics, context.output_dir / "accuracy_distribution.png")
        if plot is None:
            context.notes.append("matplotlib is not installed: no accuracy_distribution.png "
                                 "(pip install matplotlib)")
        else:
            metrics["plot"] = plot.name
        return metrics
