"""Prompt/response JSONL for SFT from the GSM-Symbolic engine, train templates apart from held-out ones.

    python -m plugins.rlhf.gsm_data --out data/gsm --instances 40 --heldout 5 --seed 0

Writes into --out:
    train.jsonl    --instances instances of every train template
    val.jsonl      --val-instances further instances of the train templates (another seed)
    heldout.jsonl  --heldout-instances instances of the held-out templates, never trained on
    pairs_train.jsonl, pairs_val.jsonl
                   preference pairs of the train and val rows for a reward model: `chosen` is the
                   worked solution, `rejected` the same solution ending in a wrong final number
    split.json     which template ids went where, and the options used

Rows keep the generator's official fields (so `toolkit-eval gsm_symbolic data_file=heldout.jsonl`
reads them) and add `prompt` (the question), `response` (the worked solution without calculator
annotations, ending "The final answer is N.", the sentence the evaluator's shots use) and
`reference` (N, what the `math_answer` reward checks). The held-out templates are a seeded draw.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from plugins.gsm_symbolic.sampler import generate_rows
from plugins.gsm_symbolic.template import Template, load_templates
from plugins.lm_eval.gsm import split_solution
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.errors import DataError
from toolkit.files import atomic_write_text

OUTPUT_FILES = ("train.jsonl", "val.jsonl", "heldout.jsonl", "pairs_train.jsonl", "pairs_val.jsonl", "split.json")
VAL_SEED_OFFSET = 1_000_003  # val instances come from another seed than the train instances


def with_prompt_and_response(row: dict[str, Any]) -> dict[str, Any]:
    reasoning, final = split_solution(row["answer"])
    response = f"{reasoning} The final answer is {final}." if reasoning else f"The final answer is {final}."
    return {**row, "prompt": row["question"], "response": response, "reference": final}


def preference_pair(row: dict[str, Any], seed: int) -> dict[str, Any]:
    """The row's solution (chosen) against the same solution with a wrong final number (rejected)."""
    rng = random.Random(f"rlhf-pairs:{seed}:{row['id']}:{row['instance']}")
    final = float(row["reference"].replace(",", ""))
    wrong = final + rng.choice([-1, 1]) * rng.randint(1, 9)
    shown = str(int(wrong)) if wrong == int(wrong) else str(wrong)
    head, marker, _ = row["response"].rpartition("The final answer is")
    return {"prompt": row["prompt"], "chosen": row["response"], "rejected": f"{head}{marker} {shown}.",
            "reference": row["reference"]}


def split_templates(templates: list[Template], heldout: int, seed: int) -> tuple[list[Template], list[Template]]:
    """(train, held-out) templates; the held-out ones are a seeded draw of `heldout` of them."""
    if not 0 < heldout < len(templates):
        raise DataError(f"--heldout must be between 1 and {len(templates) - 1} (there are {len(templates)} "
                        f"templates), got {heldout}")
    chosen = set(random.Random(f"rlhf-heldout:{seed}").sample([t.id_shuffled for t in templates], heldout))
    return ([t for t in templates if t.id_shuffled not in chosen], [t for t in templates if t.id_shuffled in chosen])


def build_rows(templates: list[Template], instances: int, seed: int) -> list[dict[str, Any]]:
    return [with_prompt_and_response(row) for template in templates
            for row in generate_rows(template, instances, seed)]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="python -m plugins.rlhf.gsm_data", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSONL files")
    parser.add_argument("--templates", type=Path, default=None, help="template folder (default: the shipped ones)")
    parser.add_argument("--instances", type=int, default=40, help="train instances per train template")
    parser.add_argument("--val-instances", type=int, default=4, help="val instances per train template")
    parser.add_argument("--heldout-instances", type=int, default=10, help="instances per held-out template")
    parser.add_argument("--heldout", type=int, default=5, help="how many templates to hold out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace files an earlier build wrote")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    for name in ("instances", "val_instances", "heldout_instances"):
        if getattr(arguments, name) < 1:
            raise DataError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(arguments, name)}")
    existing = [name for name in OUTPUT_FILES if (arguments.out / name).exists()]
    if existing and not arguments.overwrite:
        raise DataError(f"{arguments.out}: already holds {', '.join(existing)}", hint="pass --overwrite")
    train, heldout = split_templates(load_templates(arguments.templates), arguments.heldout, arguments.seed)
    train_rows = build_rows(train, arguments.instances, arguments.seed)
    val_rows = build_rows(train, arguments.val_instances, arguments.seed + VAL_SEED_OFFSET)
    contents = {
        "train.jsonl": jsonl(train_rows),
        "val.jsonl": jsonl(val_rows),
        "heldout.jsonl": jsonl(build_rows(heldout, arguments.heldout_instances, arguments.seed)),
        "pairs_train.jsonl": jsonl([preference_pair(row, arguments.seed) for row in train_rows]),
        "pairs_val.jsonl": jsonl([preference_pair(row, arguments.seed) for row in val_rows]),
        "split.json": json.dumps({"train_templates": [t.id_shuffled for t in train],
                                  "heldout_templates": [t.id_shuffled for t in heldout],
                                  **{key: value for key, value in vars(arguments).items() if key != "out"}},
                                 default=str, indent=2) + "\n",
    }
    arguments.out.mkdir(parents=True, exist_ok=True)
    for name, text in contents.items():  # every file is built before the first is written
        atomic_write_text(arguments.out / name, text)
    print(f"wrote {', '.join(contents)} to {arguments.out} ({len(train)} train, {len(heldout)} held-out templates)",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
