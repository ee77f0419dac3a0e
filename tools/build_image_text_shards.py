"""Build image-text webdataset shards (KEY.jpg|png|webp + KEY.txt) from a folder, a CSV or OpenMoji.

    python tools/build_image_text_shards.py --folder photos/ --out data/ --prefix train
    python tools/build_image_text_shards.py --csv pairs.csv --out data/ --prefix train
    python tools/build_image_text_shards.py --openmoji --out data/openmoji/

--folder: every image file with a caption file beside it (same stem, .txt); images without one are
listed and skipped. --csv: rows of (path, caption) with a header naming `path` (or `filepath`,
`image`) and `caption` (or `text`, `title`); relative paths are relative to the CSV. Image bytes
are stored as they are (no re-encoding). Shards are written whole, each under a temporary name
first. A bad row or unreadable file is one `error:` line naming it, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Iterator

from plugins.catlip.openmoji import emoji_samples, svg_directory
from plugins.catlip.shards import IMAGE_EXTENSIONS, ImageTextSample, write_shards
from toolkit.cli.common import run_cli
from toolkit.errors import DataError

PATH_COLUMNS = ("path", "filepath", "image")
CAPTION_COLUMNS = ("caption", "text", "title")


def _sample(key: str, image_path: Path, caption: str, where: str) -> ImageTextSample:
    extension = image_path.suffix.lower().lstrip(".")
    if extension not in IMAGE_EXTENSIONS:
        raise DataError(f"{where}: {image_path} is not a .jpg/.jpeg/.png/.webp image")
    try:
        data = image_path.read_bytes()
    except OSError as error:
        raise DataError(f"{where}: cannot read {image_path} ({error.strerror})") from error
    return ImageTextSample(key, data, extension, " ".join(caption.split()))


def folder_samples(folder: Path) -> Iterator[ImageTextSample]:
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS)
    missing = [p for p in images if not p.with_suffix(".txt").is_file()]
    if missing:
        print(f"skipping {len(missing)} image(s) without a caption file, e.g. {missing[0]}", file=sys.stderr)
    for number, image in enumerate(p for p in images if p not in set(missing)):
        caption = image.with_suffix(".txt").read_text(encoding="utf-8", errors="replace")
        yield _sample(f"{number:08d}", image, caption, str(image))


def _column(header: list[str], names: tuple[str, ...], csv_path: Path) -> int:
    lowered = [name.strip().lower() for name in header]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    raise DataError(f"{csv_path}: header {header} has no column named {' or '.join(names)}")


def csv_samples(csv_path: Path) -> Iterator[ImageTextSample]:
    try:
        handle = open(csv_path, newline="", encoding="utf-8")
    except OSError as error:
        raise DataError(f"{csv_path}: cannot open ({error.strerror})") from error
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
            yield _sample(f"{line_number:08d}", image_path, row[caption_column], f"{csv_path}, line {line_number}")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="build_image_text_shards.py", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder", type=Path, help="images with same-stem .txt captions")
    source.add_argument("--csv", type=Path, help="CSV of (path, caption)")
    source.add_argument("--openmoji", action="store_true",
                        help="OpenMoji's emoji (the training split of builtin:openmoji), captions from Unicode names")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--prefix", default="shard", help="shard file prefix (shard-000000.tar, ...)")
    parser.add_argument("--samples-per-shard", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=None, help="stop after N samples")
    arguments = parser.parse_args(argv)
    if arguments.samples_per_shard < 1:
        raise DataError("--samples-per-shard must be >= 1")
    if arguments.folder:
        samples = folder_samples(arguments.folder)
    elif arguments.csv:
        samples = csv_samples(arguments.csv)
    else:
        samples = emoji_samples(svg_directory(), validation=False, limit=arguments.limit)

    def limited() -> Iterator[ImageTextSample]:
        for count, sample in enumerate(samples):
            if arguments.limit is not None and count >= arguments.limit:
                return
            yield sample

    written = write_shards(limited(), arguments.out, arguments.prefix, arguments.samples_per_shard)
    print(f"wrote {len(written)} shard(s) to {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run))
