"""`toolkit-generate`: continue a prompt with a trained language model.

    toolkit-generate runs/tiny --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 50

RUN_OR_CHECKPOINT_DIR is a run directory (its latest checkpoint is used) or one `step-NNNNNN/`.
The tokenizer is the run's `tokenizer.model` (copied there at training time), else the recipe's
`data.tokenizer`. The prompt is given to the model after an end-of-text token, as a document start
looks in training, and sampling stops at the next end-of-text token.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from toolkit.cli.common import run_cli
from toolkit.errors import DataError

from plugins.lm.sampling import generate
from plugins.lm.tokenizer import Tokenizer, load_tokenizer

TOKENIZER_FILE = "tokenizer.model"


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="toolkit-generate", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="run directory or checkpoint directory")
    parser.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=50, help="0 = no top-k filter")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    return parser.parse_args(argv)


def find_tokenizer(run_dir: Path, recipe: dict[str, Any]) -> Tokenizer:
    """The run's copied tokenizer, else the file the recipe's data section names."""
    candidates = [run_dir / TOKENIZER_FILE]
    configured = (recipe.get("data") or {}).get("tokenizer")
    if configured:
        candidates.append(Path(configured))
    for candidate in candidates:
        if candidate.is_file():
            return load_tokenizer(candidate)
    raise DataError(f"{run_dir}: no {TOKENIZER_FILE} in the run directory and the recipe names no tokenizer file",
                    hint="copy the tokenizer the run was trained with to " + str(run_dir / TOKENIZER_FILE))


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    from toolkit.engine.checkpoint import load_model  # the core's loader; heavy, so only here

    device = arguments.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model(arguments.path, device=device)
    tokenizer = find_tokenizer(loaded.run_dir, loaded.recipe)
    prompt_ids = [tokenizer.eos_id, *tokenizer.encode(arguments.prompt)]
    model_device = next(iter(loaded.model.parameters()), torch.empty(0)).device
    input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=model_device)  # [1, T]
    generator = torch.Generator(device=model_device).manual_seed(arguments.seed)
    output = generate(
        loaded.model,
        input_ids,
        max_new_tokens=arguments.max_new_tokens,
        temperature=arguments.temperature,
        top_k=arguments.top_k or None,
        top_p=arguments.top_p if arguments.top_p < 1.0 else None,
        eos_id=tokenizer.eos_id,
        generator=generator,
    )[0].tolist()
    new_ids = output[len(prompt_ids):]
    if tokenizer.eos_id in new_ids:
        new_ids = new_ids[:new_ids.index(tokenizer.eos_id)]
    # Decoding prompt and continuation together keeps pieces that join across the boundary intact.
    print(tokenizer.decode(prompt_ids[1:] + new_ids))
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
