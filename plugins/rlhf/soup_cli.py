"""`toolkit-soup`: average runs into a soup run directory, or sweep the path between two runs.

    toolkit-soup runs/sft-a runs/sft-b --out runs/sft-soup                 # equal weights
    toolkit-soup runs/sft-a runs/sft-b runs/sft-c --weights 0.5,0.25,0.25 --out runs/soup3
    toolkit-soup runs/sft-a runs/sft-b --sweep --alphas 0,0.25,0.5,0.75,1 [--report sweep.json]
    toolkit-soup runs/salsa --model policy --out runs/salsa-policy       # one model of an RL run

Runs of another architecture, config or tokenizer are refused with one line naming what differs
(for tensors: which one and both shapes), and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from plugins.rlhf.soup import SoupError, make_soup, read_ingredient
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.files import atomic_write_text


def parse_numbers(text: str, option: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise SoupError(f"{option} takes comma-separated numbers, got '{text}'") from None


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-soup", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run or checkpoint directories of one architecture")
    parser.add_argument("--weights", help="comma-separated, one per run, summing to 1 (default: equal)")
    parser.add_argument("--out", type=Path, help="the soup's run directory (must not exist)")
    parser.add_argument("--model", help="which trained model of many-model runs (an RL run's policy)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of writing a soup, report validation loss between two runs")
    parser.add_argument("--alphas", default="0,0.25,0.5,0.75,1", help="sweep points (0 = first run, 1 = second)")
    parser.add_argument("--batches", type=int, default=0, help="validation batches per point (0 = all)")
    parser.add_argument("--report", type=Path, help="also write the sweep as JSON here")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.sweep:
        if len(arguments.runs) != 2 or arguments.out or arguments.weights:
            raise SoupError("--sweep takes exactly two runs and no --out or --weights")
        from plugins.rlhf.sweep import alpha_sweep  # loads the plugins to build the recipe's task and data

        first, second = (read_ingredient(run, arguments.model) for run in arguments.runs)
        points = alpha_sweep(first, second, parse_numbers(arguments.alphas, "--alphas"), arguments.batches)
        for point in points:
            print(f"alpha {point.alpha:.3f}  val_loss {point.val_loss:.5f}  ({point.items} items)")
        if arguments.report:
            atomic_write_text(arguments.report, json.dumps([asdict(p) for p in points], indent=2) + "\n")
        return 0
    if arguments.out is None:
        raise SoupError("give the soup's run directory with --out DIR (or --sweep)")
    weights = parse_numbers(arguments.weights, "--weights") if arguments.weights else None
    checkpoint = make_soup(arguments.runs, weights, arguments.out, arguments.model)
    print(f"soup of {len(arguments.runs)} runs written to {arguments.out} ({checkpoint.name})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
