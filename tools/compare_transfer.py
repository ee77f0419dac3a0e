"""Compare two transfer runs (Transfer Init vs a random head): validation accuracy and matched classes.

    python tools/compare_transfer.py runs/transfer-init runs/transfer-random

Reads each run's metrics.jsonl (the `val_accuracy` of every evaluation) and, for the Transfer Init
run, which downstream classes started from a pretrained synset row: from its transfer_init.json
when the run directory has one, else recomputed from its recipe.yaml (model.init_from and
model.class_names) with the same matching rule the model used.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from toolkit.errors import ToolkitError


class RunError(ToolkitError):
    """A run directory lacks what the comparison needs."""


def val_accuracies(run_dir: Path) -> dict[int, float]:
    """step -> val_accuracy of every evaluation logged in `run_dir/metrics.jsonl`."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RunError(f"{path}: no metrics log", hint="run toolkit-train on the transfer recipe first")
    found = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunError(f"{path}:{number}: not JSON ({error})") from error
        if "val_accuracy" in record:
            found[int(record["step"])] = float(record["val_accuracy"])
    if not found:
        raise RunError(f"{path}: no val_accuracy logged", hint="the run needs a validation split")
    return found


def transfer_matches(run_dir: Path) -> dict:
    """The Transfer Init report of a run: its transfer_init.json, or recomputed from its recipe."""
    saved = run_dir / "transfer_init.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    from plugins.transfer.model import TransferViTConfig, cached_mapper, find_vocabulary
    from plugins.transfer.transfer_init import match_classes, report
    from toolkit.checkpoint import resolve_checkpoint

    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    except (OSError, yaml.YAMLError) as error:
        raise RunError(f"{run_dir / 'recipe.yaml'}: unreadable ({error})".splitlines()[0]) from error
    model = recipe.get("model") or {}
    defaults = TransferViTConfig()
    if not model.get("init_from"):
        raise RunError(f"{run_dir / 'recipe.yaml'}: model.init_from is empty, nothing was transferred")
    vocabulary_path = find_vocabulary(resolve_checkpoint(model["init_from"]))
    vocabulary = {entry["synset"]: row for row, entry in enumerate(json.loads(vocabulary_path.read_text()))}
    mapper = cached_mapper(model.get("wordnet_dir", defaults.wordnet_dir))
    matches = match_classes(model.get("class_names", defaults.class_names), mapper, vocabulary)
    return {"init_from": model["init_from"], **report(matches)}


def compare(transfer_run: Path, random_run: Path) -> str:
    transfer, random = val_accuracies(transfer_run), val_accuracies(random_run)
    lines = ["val_accuracy     Transfer Init   random head", "-" * 42]
    for step in sorted(set(transfer) | set(random)):
        cells = [f"{100 * scores[step]:6.2f}%" if step in scores else "     -" for scores in (transfer, random)]
        lines.append(f"step {step:<8d}   {cells[0]:>12}   {cells[1]:>11}")
    last_transfer, last_random = transfer[max(transfer)], random[max(random)]
    lines.append(f"final: Transfer Init {100 * last_transfer:.2f}% vs random head {100 * last_random:.2f}% "
                 f"({100 * (last_transfer - last_random):+.2f} points)")
    matches = transfer_matches(transfer_run)
    lines.append(f"Transfer Init: {matches['matched']} of {matches['classes']} classes started from a pretrained "
                 f"synset row ({matches['init_from']}):")
    for row in matches["rows"]:
        if row["copied"]:
            state = f"copied from {row['synset']} (pretrained row {row['vocabulary_row']})"
        elif row["synset"]:
            state = f"random ({row['synset']} is not in the pretraining vocabulary)"
        else:
            state = "random (no WordNet synset)"
        lines.append(f"  {row['index']:2d} {row['name']:<12s} {state}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transfer_run", type=Path, help="run directory trained with model.head=transfer")
    parser.add_argument("random_run", type=Path, help="run directory trained with model.head=random")
    arguments = parser.parse_args(argv)
    try:
        print(compare(arguments.transfer_run, arguments.random_run))
    except ToolkitError as error:
        print(f"error: {error.one_line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
