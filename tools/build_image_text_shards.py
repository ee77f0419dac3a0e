"""Build image-text webdataset shards (KEY.jpg|png|webp + KEY.txt) from a folder, a CSV or OpenMoji.

    python tools/build_image_text_shards.py --folder photos/ --out data/   # data/train-*.tar, data/val-*.tar
    python tools/build_image_text_shards.py --csv pairs.csv --out data/ --val-fraction 0.1
    python tools/build_image_text_shards.py --openmoji --out data/openmoji/

--folder: every image file with a caption file beside it (same stem, .txt); images without one are
listed and skipped. --csv: rows of (path, caption) with a header naming `path` (or `filepath`,
`image`) and `caption` (or `text`, `title`); relative paths are relative to the CSV. The samples
are split into `train-*.tar` and `val-*.tar` by a hash of each image's path (CSV: its line), so a
rebuild gives the same split (--seed changes it); `--prefix NAME` writes them all to `NAME-*.tar`
instead. Use them with `toolkit-catlip-vocab --shards 'data/train-*.tar'` and a recipe's
`data.train_shards: data/train-*.tar`, `data.val_shards: data/val-*.tar`. Image bytes are stored as
they are (no re-encoding). Shards are written whole, each under a temporary name first. A bad row
or unreadable file is one `error:` line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from plugins.catlip.openmoji import emoji_samples, svg_directory
from plugins.catlip.shards import IMAGE_EXTENSIONS, ImageTextSample, write_shards
from plugins.lm.shard_writer import Document, split_documents
from toolkit.cli.common import run_cli
from toolkit.errors import DataError

PATH_COLUMNS = ("path", "filepath", "image")
CAPTION_COLUMNS = ("caption", "text", "title")
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Pair:
    """One image and its caption, before the image is read. `name` decides its split."""

    name: str
    image_path: Path
    caption: str
    where: str  # how errors name it: the image path, or the CSV file and line


def _sample(key: str, pair: Pair) -> ImageTextSample:
    extension = pair.image_path.suffix.lower().lstrip(".")
    if extension not in IMAGE_EXTENSIONS:
        raise DataError(f"{pair.where}: {pair.image_path} is not a .jpg/.jpeg/.png/.webp image")
    try:
        data = pair.image_path.read_bytes()
    except OSError as error:
        raise DataError(f"{pair.where}: cannot read {pair.image_path} ({error.strerror})") from error
    return ImageTextSample(key, data, extension, " ".join(pair.caption.split()))


def folder_pairs(folder: Path) -> list[Pair]:
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    missing = [p for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        print(f"skipping {len(missing)} image(s) without a caption file, e.g. {missing[0]}", file=sys.stderr)
    skipped = set(missing)
    return [Pair(image.relative_to(folder).as_posix(), image,
                 image.with_suffix(".txt").read_text(encoding="utf-8", errors="replace"), str(image))
            for image in images if image not in skipped]


def _column(header: list[str], names: tuple[str, ...], csv_path: Path) -> int:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise DataError(f"{csv_path}: header {header} has no column named {' or '.join(names)}")


def csv_pairs(csv_path: Path) -> list[Pair]:
    try:
        handle = open(csv_path, newline="", encoding="utf-8")
    except OSError as error:
        raise DataError(f"{csv_path}: cannot open ({error.strerror})") from error
    pairs = []
    with handle:
        rows = csv.reader(handle)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{csv_path}: empty CSV")
        path_column = _column(header, PATH_COLUMNS, csv_path)
        caption_column = _column(header, CAPTION_COLUMNS, csv_path)
        for line_number, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) <= max(path_column, caption_column):
                raise DataError(f"{csv_path}, line {line_number}: expected {len(header)} columns, got {len(row)}")
            image_path = Path(row[path_column])
            if not image_path.is_absolute():
                image_path = csv_path.parent / image_path
            pairs.append(Pair(f"{line_number:08d}:{row[path_column]}", image_path, row[caption_column],
                              f"{csv_path}, line {line_number}"))
    return pairs


def split_pairs(pairs: list[Pair], val_fraction: float, seed: int) -> dict[str, list[Pair]]:
    """train/val by a hash of each pair's name: the text shard builder's rule, so the same guarantees
    (deterministic, independent of order, at least one val pair from two pairs on, never all)."""
    by_name = {pair.name: pair for pair in pairs}
    train, val = split_documents([Document(pair.name, "") for pair in pairs], val_fraction, seed)
    return {"train": [by_name[document.name] for document in train], "val": [by_name[document.name] for document in val]}


def keyed(pairs: Iterable[tuple[int, Pair]]) -> Iterator[ImageTextSample]:
    for number, pair in pairs:
        yield _sample(f"{number:08d}", pair)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="build_image_text_shards.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="images with same-stem .txt captions")
    source.add_argument("--csv", type=Path, help="CSV of (path, caption)")
    source.add_argument("--openmoji", action="store_true",
                        help="OpenMoji's emoji (builtin:openmoji's train and val splits), captions from Unicode names")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--val-fraction", type=float, default=0.05,
                        help="share of the pairs written to val-*.tar (default 0.05; --folder and --csv)")
    parser.add_argument("--seed", type=int, default=0, help="changes which pairs go to val")
    parser.add_argument("--prefix", default=None,
                        help="write every pair to PREFIX-000000.tar, ... (no train/val split)")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="stop after N samples (per split)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    return parser.parse_args(argv)


def run(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    if arguments.samples_per_shard < 1:
        raise DataError("--samples-per-shard must be >= 1")
    prefixes = (arguments.prefix,) if arguments.prefix else SPLITS
    stale = sorted(path for prefix in prefixes for path in arguments.out.glob(f"{prefix}-*.tar"))
    if stale and not arguments.overwrite:
        raise DataError(f"{arguments.out}: already holds shards ({stale[0].name}, ...)",
                        hint="choose an empty folder or pass --overwrite")
    if arguments.openmoji:
        directory = svg_directory()
        splits: dict[str, Iterable[ImageTextSample]] = {
            split: emoji_samples(directory, validation=split == "val", limit=arguments.limit) for split in SPLITS}
        if arguments.prefix:
            splits = {arguments.prefix: splits["train"]}
    else:
        pairs = folder_pairs(arguments.folder) if arguments.folder else csv_pairs(arguments.csv)
        if not pairs:
            raise DataError(f"{arguments.folder or arguments.csv}: no image-caption pairs found")
        numbered = {pair.name: number for number, pair in enumerate(pairs)}
        grouped = {arguments.prefix: pairs} if arguments.prefix else split_pairs(pairs, arguments.val_fraction,
                                                                                arguments.seed)
        splits = {name: keyed((numbered[pair.name], pair) for pair in members[:arguments.limit])
                  for name, members in grouped.items()}
    for path in stale:  # left-over shards would silently join the new set
        path.unlink()
    for name, samples in splits.items():
        written = write_shards(samples, arguments.out, name, arguments.samples_per_shard)
        print(f"{name}: {len(written)} shard(s)")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
