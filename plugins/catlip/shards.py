"""Image-text webdataset shards: write them, index them once, and read one image by position.

A sample is `KEY.jpg|.jpeg|.png|.webp` plus `KEY.txt` (the caption) in an uncompressed tar, the
layout open_clip and DataComp use. Reading is by random access: a shard is indexed once (member
offsets, captions, and which images do not decode), the index is cached on disk, and an image is
then one `pread` away, so any sample order costs the same as reading in order.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError

from toolkit.data.cache import build_once, hash_strings
from toolkit.data.shards import DEFAULT_MAX_MEMBER_BYTES, member_too_large
from toolkit.errors import DataError
from toolkit.files import atomic_writer

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
INDEX_VERSION = "1"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTextSample:
    """One sample to write: its key, encoded image bytes with their extension, and caption."""

    key: str
    image: bytes
    extension: str
    caption: str


@dataclass
class ShardIndex:
    """What one shard holds, in stored order; unreadable images are already left out."""

    path: Path
    keys: list[str]
    offsets: list[int]  # byte offset of each image's data in the tar
    sizes: list[int]  # byte size of each image
    captions: list[str]
    unreadable: list[str]  # keys whose image could not be decoded (skipped)
    no_image: int  # samples with a caption but no image member

    def __len__(self) -> int:
        return len(self.keys)


def shard_identity(path: Path) -> str:
    """A cache key that changes when the shard file does (path, size, modification time)."""
    status = path.stat()
    return hash_strings([str(path.resolve()), str(status.st_size), str(status.st_mtime_ns)])


def write_shards(samples: Iterable[ImageTextSample], out_dir: Path, prefix: str = "shard",
                 samples_per_shard: int = 1000) -> list[Path]:
    """Write `prefix-000000.tar`, ... into out_dir; each shard appears only once complete."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    batch: list[ImageTextSample] = []

    def flush() -> None:
        path = out_dir / f"{prefix}-{len(written):06d}.tar"
        with atomic_writer(path, "wb") as stream:
            with tarfile.open(fileobj=stream, mode="w", format=tarfile.USTAR_FORMAT) as archive:
                for sample in batch:
                    _add_member(archive, f"{sample.key}.{sample.extension}", sample.image)
                    _add_member(archive, f"{sample.key}.txt", sample.caption.encode("utf-8"))
        written.append(path)
        batch.clear()

    for sample in samples:
        if sample.extension not in IMAGE_EXTENSIONS:
            raise DataError(f"sample '{sample.key}': image extension '{sample.extension}' is not one of {IMAGE_EXTENSIONS}")
        if "." in sample.key or "/" in sample.key:
            raise DataError(f"sample key '{sample.key}' may not contain '.' or '/' (webdataset splits keys there)")
        batch.append(sample)
        if len(batch) == samples_per_shard:
            flush()
    if batch:
        flush()
    return written


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    archive.addfile(info, io.BytesIO(data))


def decode_rgb(data: bytes) -> Image.Image:
    """Encoded bytes -> an RGB PIL image (alpha composited on white). Raises on bad data."""
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def _scan(path: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ShardIndex:
    """Read a shard once: image offsets, captions, and images that fail to decode.

    A member over `max_member_bytes` is refused from its header, before it is read."""
    images: dict[str, tuple[int, int]] = {}
    captions: dict[str, str] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as archive:  # uncompressed: offsets are file positions
            for member in archive:
                if not member.isreg():
                    continue
                if member.size > max_member_bytes:  # images are read whole too (pread, decode)
                    raise member_too_large(path, member.name, member.size, max_member_bytes)
                name = member.name.rsplit("/", 1)[-1]
                key, _, extension = name.partition(".")
                if key not in images and key not in captions:
                    order.append(key)
                if extension.lower() in IMAGE_EXTENSIONS:
                    images[key] = (member.offset_data, member.size)
                elif extension == "txt":
                    handle = archive.extractfile(member)
                    captions[key] = handle.read().decode("utf-8", errors="replace").strip()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataError(f"{path}: not a readable uncompressed tar shard ({error})".replace("\n", " "),
                        hint="image-text shards must be plain .tar files; rebuild with tools/build_image_text_shards.py") from error
    index = ShardIndex(path, [], [], [], [], [], 0)
    with open(path, "rb") as handle:
        for key in order:
            if key not in images:
                index.no_image += 1
                continue
            offset, size = images[key]
            try:
                decode_rgb(os.pread(handle.fileno(), size, offset))
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
                index.unreadable.append(key)
                continue
            index.keys.append(key)
            index.offsets.append(offset)
            index.sizes.append(size)
            index.captions.append(captions.get(key, ""))
    return index


def load_index(path: Path, cache_dir: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> ShardIndex:
    """The shard's index, built on first use and cached under cache_dir/image_index/; no image
    of it may exceed `max_member_bytes` (also checked on a cached index built under a larger cap)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: shard file not found")
    target = cache_dir / "image_index" / f"{path.stem}-{shard_identity(path)}-v{INDEX_VERSION}.json"

    def build(temporary: Path) -> None:
        started = time.perf_counter()
        index = _scan(path, max_member_bytes)
        temporary.write_text(json.dumps({
            "keys": index.keys, "offsets": index.offsets, "sizes": index.sizes, "captions": index.captions,
            "unreadable": index.unreadable, "no_image": index.no_image,
        }))
        logger.info("indexed %s: %d samples in %.1f s", path, len(index), time.perf_counter() - started)

    built = build_once(target, build)
    try:
        stored = json.loads(built.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{built}: unreadable shard index ({error})", hint="delete it to rebuild") from error
    index = ShardIndex(path, stored["keys"], stored["offsets"], stored["sizes"], stored["captions"],
                       stored["unreadable"], stored["no_image"])
    for key, size in zip(index.keys, index.sizes):
        if size > max_member_bytes:
            raise member_too_large(path, f"{key} (image)", size, max_member_bytes)
    if index.unreadable:
        shown = ", ".join(index.unreadable[:5]) + (" ..." if len(index.unreadable) > 5 else "")
        logger.warning("%s: skipped %d unreadable image(s): %s", path, len(index.unreadable), shown)
    return index


class ImageReader:
    """Random access to the images of indexed shards, with one open file per shard (per process)."""

    def __init__(self, indexes: list[ShardIndex]) -> None:
        self.indexes = indexes
        self._files: dict[int, int] = {}
        self._pid = os.getpid()

    def read(self, shard: int, position: int) -> Image.Image:
        if os.getpid() != self._pid:  # a forked worker must not share file offsets or handles
            self._files, self._pid = {}, os.getpid()
        descriptor = self._files.get(shard)
        index = self.indexes[shard]
        if descriptor is None:
            descriptor = self._files[shard] = os.open(index.path, os.O_RDONLY)
        data = os.pread(descriptor, index.sizes[position], index.offsets[position])
        return decode_rgb(data)

    def close(self) -> None:
        for descriptor in self._files.values():
            os.close(descriptor)
        self._files = {}

    def __getstate__(self) -> dict:
        return {"indexes": self.indexes, "_files": {}, "_pid": -1}
