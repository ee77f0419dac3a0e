"""`python -m plugins.duo.oracle_cli RUN --out oracle.json`: the oracle on a trained Duo run.

Loads the run's latest checkpoint (or the checkpoint directory given), takes the first
`--sequences` validation sequences of the run's own data section, searches every routing pattern
(or beams, for deep models) and writes the per-budget bests as JSON, atomically. The `oracle`
router reads that file: `model.router=oracle 'model.router_options={patterns_file: oracle.json, max_big: 2}'`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from plugins.duo.oracle import OracleSearchConfig, search
from plugins.lm.loading import run_sequences
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.errors import RecipeError


def validation_sequences(recipe: dict, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` validation (input_ids, labels) rows [N, S] of a run's data section."""
    return run_sequences(recipe, "val", count)


def main_with_arguments(argv: list[str]) -> int:
    parser = ArgumentParser(prog="python -m plugins.duo.oracle_cli", description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a Duo run directory or checkpoint directory")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--sequences", type=int, default=8, help="validation sequences to search on (default: 8)")
    parser.add_argument("--no-skip", action="store_true", help="big or small only (2^L patterns)")
    parser.add_argument("--method", default="auto", choices=["auto", "exhaustive", "beam"])
    parser.add_argument("--beam-width", type=int, default=8)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    arguments = parser.parse_args(argv)
    if arguments.sequences < 1:
        raise RecipeError(f"--sequences must be >= 1, got {arguments.sequences}")
    try:  # checked before the model loads: bad options cost nothing
        config = OracleSearchConfig(allow_skip=not arguments.no_skip, method=arguments.method,
                                    beam_width=arguments.beam_width, precision=arguments.precision)
    except ValueError as error:
        raise RecipeError(f"oracle options: {error}") from error
    from toolkit.checkpoint import load_model
    from toolkit.files import atomic_write_text

    loaded = load_model(arguments.run)
    if not hasattr(loaded.model, "set_router"):
        raise RecipeError(f"{arguments.run}: the model is {type(loaded.model).__name__}, not a Duo model")
    input_ids, labels = validation_sequences(loaded.recipe, arguments.sequences)
    start = time.perf_counter()
    result = search(loaded.model, input_ids, labels, config)
    seconds = time.perf_counter() - start
    report = {"checkpoint": str(loaded.checkpoint_dir), "sequences": int(input_ids.shape[0]),
              "tokens_per_sequence": int(input_ids.shape[1]), "seconds": round(seconds, 2), **result.to_json()}
    atomic_write_text(Path(arguments.out), json.dumps(report, indent=1))
    for entry in result.budgets:
        print(f"max_big {entry['max_big']}: loss {entry['loss']:.4f} with {' '.join(entry['best_pattern'])}")
    print(f"{result.num_patterns} patterns on {input_ids.shape[0]} sequences in {seconds:.1f} s -> {arguments.out}")
    return 0


def main() -> None:
    sys.exit(run_cli(main_with_arguments))


if __name__ == "__main__":
    main()
