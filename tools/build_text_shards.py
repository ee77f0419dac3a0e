"""Build webdataset text shards from a folder of .txt / .md files, split into train and val by file.

    python tools/build_text_shards.py SRC_DIR OUT_DIR [--val-fraction 0.05] [--shard-size-bytes N] [--seed 0]

Writes OUT_DIR/train-000000.tar ..., OUT_DIR/val-000000.tar ... and OUT_DIR/manifest.json; each
sample is `<key>.txt` (one whole file) plus `<key>.json` ({"source": relative path}). The split is
a deterministic function of each file's relative path and --seed. Use the shards with
`data.train_shards: OUT_DIR/train-*.tar` and `data.val_shards: OUT_DIR/val-*.tar`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from toolkit.cli.common import run_cli

from plugins.lm.shard_writer import DEFAULT_SHARD_SIZE_BYTES, collect_documents, write_text_shards


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source_dir", type=Path, help="folder of .txt/.md files (searched recursively)")
    parser.add_argument("out_dir", type=Path, help="where the shards go")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="share of files held out (default 0.05)")
    parser.add_argument("--shard-size-bytes", type=int, default=DEFAULT_SHARD_SIZE_BYTES,
                        help=f"text bytes per shard before starting the next (default {DEFAULT_SHARD_SIZE_BYTES})")
    parser.add_argument("--seed", type=int, default=0, help="changes which files go to val")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in OUT_DIR")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    documents = collect_documents(arguments.source_dir)
    summary = write_text_shards(documents, arguments.out_dir, arguments.val_fraction,
                                arguments.shard_size_bytes, arguments.seed, arguments.overwrite)
    for split in ("train", "val"):
        print(f"{split}: {summary.documents[split]} documents, {summary.characters[split]} characters, "
              f"{len(summary.shards[split])} shard(s)")
    print(f"wrote {arguments.out_dir}")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
