"""`toolkit-tokenizer`: train a SentencePiece tokenizer on text shards, or describe one.

    toolkit-tokenizer train --shards 'data/train-*.tar' --vocab-size 4096 --out tok.model
    toolkit-tokenizer info tok.model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.lm.shard_paths import text_shard_paths
from plugins.lm.tokenizer import load_tokenizer, train_tokenizer
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.files import atomic_path


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-tokenizer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a SentencePiece model on the .txt samples of shards")
    train.add_argument("--shards", required=True,
                       help="glob or brace pattern of .tar shards, or a folder of them (its train-*.tar); "
                            "plain text: run tools/build_text_shards.py first")
    train.add_argument("--vocab-size", type=int, required=True)
    train.add_argument("--out", required=True, help="output FILE.model")
    train.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
    train.add_argument("--threads", type=int, default=0, help="training threads (0 = the CPUs available)")
    info = commands.add_parser("info", help="vocabulary size and special ids of a .model file")
    info.add_argument("model", help="FILE.model")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.command == "train":
        shards = text_shard_paths(arguments.shards, "--shards")
        out = Path(arguments.out)
        with atomic_path(out) as temporary:  # two runs building the same file never share a temporary
            train_tokenizer(shards, arguments.vocab_size, temporary, arguments.model_type, arguments.threads)
        tokenizer = load_tokenizer(out)
        print(f"wrote {out}: {tokenizer.vocab_size} tokens, trained on {len(shards)} shard(s)")
    else:
        tokenizer = load_tokenizer(arguments.model)
        print(f"{tokenizer.path}: vocab_size {tokenizer.vocab_size}, "
              f"bos_id {tokenizer.bos_id}, eos_id {tokenizer.eos_id}")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
