"""`toolkit-catlip-vocab`: build CatLIP's synset vocabulary from image-text shards.

    toolkit-catlip-vocab --shards 'data/train-{000000..000099}.tar' --top-k 24320 --out synsets.json
    toolkit-catlip-vocab --shards builtin:openmoji --min-count 2 --out synsets.json

Each caption word is lemmatised and mapped to its first noun sense (`word.n.01`); synsets are
counted once per caption and kept by count (`--min-count`) and rank (`--top-k`). The JSON lists
{"synset", "offset", "count", "lemma"} in class order; recipes name it as `data.vocabulary`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugins.catlip.labels import build_vocabulary, shared_mapper
from plugins.catlip.openmoji import resolve_builtin_images
from plugins.catlip.shards import load_index
from toolkit.cli.common import ArgumentParser, run_cli
from toolkit.data.cache import cache_root
from toolkit.data.shards import expand_shard_pattern
from toolkit.errors import DataError
from toolkit.files import atomic_path


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="toolkit-catlip-vocab", description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="glob/brace pattern of .tar shards, or builtin:openmoji")
    parser.add_argument("--out", required=True, type=Path, help="output JSON file")
    parser.add_argument("--min-count", type=int, default=1, help="keep synsets in at least this many captions")
    parser.add_argument("--top-k", type=int, default=0, help="keep the K most frequent synsets (0 = all)")
    parser.add_argument("--cache-dir", default="", help="where shard indexes are cached (default $TOOLKIT_CACHE)")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.min_count < 1 or arguments.top_k < 0:
        raise DataError("--min-count must be >= 1 and --top-k >= 0")
    cache_dir = cache_root(arguments.cache_dir)
    pattern = arguments.shards
    if pattern.startswith("builtin:"):
        pattern = resolve_builtin_images(pattern, cache_dir).train_pattern
    indexes = [load_index(path, cache_dir) for path in expand_shard_pattern(pattern)]
    mapper = shared_mapper()
    vocabulary = build_vocabulary(indexes, arguments.min_count, arguments.top_k or None, mapper)
    if len(vocabulary) == 0:
        raise DataError(f"no synset reaches --min-count {arguments.min_count} in the captions of {arguments.shards}")
    captions = [caption for index in indexes for caption in index.captions]
    without = sum(1 for caption in captions if not vocabulary.label_indices(caption, mapper))
    out: Path = arguments.out
    with atomic_path(out) as temporary:  # two runs building the same file never share a temporary
        vocabulary.save(temporary)
    unreadable = sum(len(index.unreadable) for index in indexes)
    print(f"wrote {out}: {len(vocabulary)} synsets from {len(captions)} captions in {len(indexes)} shard(s); "
          f"{without} captions have no synset in it; {unreadable} unreadable images skipped")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(run, argv))


if __name__ == "__main__":
    main()
