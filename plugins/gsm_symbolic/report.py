"""GSM-Symbolic data for the evaluator (generated from templates or read from a JSONL file) and its report.

A set is one instance of every template (set k = instance k), as in the paper; the `original`
set holds each template's original question. The report gives accuracy per set, mean and
(population) standard deviation across sets, the drop from the original questions, accuracy per
template, and a histogram of the per-set accuracies.
"""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path
from typing import Any

from plugins.gsm_symbolic.sampler import generate_rows
from plugins.gsm_symbolic.template import load_templates
from toolkit.errors import DataError
from toolkit.evaluation import write_bytes_atomically

ORIGINAL_SET = "original"
GENERATED_SETS = 5  # sets generated from templates when `sets` is 0


def _read_rows(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: unreadable ({error})") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({key: row[key] for key in ("id", "instance", "question", "answer")}
                        | {key: row.get(key) for key in ("original_question", "original_answer")})
            int(row["instance"])  # sets are numbered by it
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise DataError(f"{path}:{number}: not a GSM-Symbolic row with id, instance, question and answer "
                            f"({type(error).__name__})") from error
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows


def _generated_rows(config: Any, limit: int | None) -> list[dict[str, Any]]:
    templates = load_templates(config.templates or None, config.variant)[:limit]
    rows = []
    for template in templates:
        # The baseline is the template's own question as written: for names/numbers/noop that is the
        # symbolic template's original, with no NoOp clause added.
        base_variant = config.variant if config.variant in ("p1", "p2") else "symbolic"
        original = generate_rows(template, 1, config.instance_seed, original=True, variant=base_variant)[0]
        for row in generate_rows(template, config.sets or GENERATED_SETS, config.instance_seed, variant=config.variant):
            rows.append({**row, "original_question": original["question"], "original_answer": original["answer"]})
    return rows


def load_symbolic_rows(config: Any, limit: int | None) -> list[dict[str, Any]]:
    """Rows `{set, template, question, answer, original_question}`: the original set first, then set by set.

    `limit` keeps the first N templates (so every set holds the same questions); `config.sets` the
    first N sets (instance numbers), all of them when 0.
    """
    if config.data_file:
        rows = _read_rows(Path(config.data_file))
        template_ids = set(list(dict.fromkeys(row["id"] for row in rows))[:limit])
        # Apple's files hold every set of a template together: set k is `instance` k.
        instances = sorted({int(row["instance"]) for row in rows})
        kept = set(instances[:config.sets] if config.sets else instances)
        rows = [row for row in rows if row["id"] in template_ids and int(row["instance"]) in kept]
    else:
        rows = _generated_rows(config, limit)
    result = []
    if config.original:
        seen = set()
        for row in rows:
            if row["id"] in seen:
                continue
            seen.add(row["id"])
            if not row.get("original_question") or not row.get("original_answer"):
                raise DataError(f"template {row['id']}: no original_question/original_answer to score",
                                hint="pass original=false to skip the original set")
            result.append({"set": ORIGINAL_SET, "template": row["id"], "question": row["original_question"],
                           "answer": row["original_answer"], "original_question": row["original_question"]})
    for row in sorted(rows, key=lambda row: int(row["instance"])):
        result.append({"set": int(row["instance"]), "template": row["id"], "question": row["question"],
                       "answer": row["answer"], "original_question": row.get("original_question") or ""})
    return result


def _accuracy(records: list[dict[str, Any]]) -> float:
    return sum(bool(record["correct"]) for record in records) / len(records)


def summarize_symbolic(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-set accuracy, mean +- std across sets, drop from the original set, per-template accuracy."""
    by_set: dict[Any, list[dict[str, Any]]] = {}
    by_template: dict[Any, list[dict[str, Any]]] = {}
    for record in records:
        by_set.setdefault(record["set"], []).append(record)
        if record["set"] != ORIGINAL_SET:
            by_template.setdefault(record["template"], []).append(record)
    per_set = {str(name): _accuracy(group) for name, group in by_set.items() if name != ORIGINAL_SET}
    accuracies = list(per_set.values())
    metrics: dict[str, Any] = {
        "accuracy_mean": statistics.fmean(accuracies) if accuracies else None,
        "accuracy_std": statistics.pstdev(accuracies) if accuracies else None,
        # The paper's other spread figure: the gap between the best and the worst set.
        "accuracy_range": max(accuracies) - min(accuracies) if accuracies else None,
        "sets": len(per_set),
        "questions_per_set": len(by_template),
        "per_set_accuracy": per_set,
        "per_template_accuracy": {str(name): _accuracy(group) for name, group in by_template.items()},
    }
    if ORIGINAL_SET in by_set:
        metrics["original_accuracy"] = _accuracy(by_set[ORIGINAL_SET])
        if accuracies:
            metrics["drop_from_original"] = metrics["original_accuracy"] - metrics["accuracy_mean"]
    return metrics


def write_accuracy_plot(metrics: dict[str, Any], path: Path) -> Path | None:
    """A histogram of per-set accuracies (original marked) as PNG, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    accuracies = [100 * value for value in metrics["per_set_accuracy"].values()]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.hist(accuracies, bins=20, range=(0, 100), color="tab:blue", alpha=0.8,
              label=f"sets (mean {metrics['accuracy_mean'] * 100:.1f} ± {metrics['accuracy_std'] * 100:.1f})")
    if "original_accuracy" in metrics:
        axes.axvline(100 * metrics["original_accuracy"], color="black", linestyle="--", label="original")
    axes.set_xlabel("accuracy (%)")
    axes.set_ylabel("instance sets")
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_bytes_atomically(path, buffer.getvalue())
    return path
