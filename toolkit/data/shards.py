"""Reading webdataset shards: expanding shard patterns, and samples (or text documents) in stored order,
refusing damaged shards.

Shards are `.tar` (or gzip-compressed `.tar.gz`) files of samples `<key>.<ext>`; a sample's `.txt`
member is one document. Samples are grouped by `webdataset.tariterators.group_by_keys`, so keys
follow the webdataset convention (the name up to the first dot of the base name).

Python's tarfile stops silently at a damaged header or at a file cut on a member boundary; a
reader that trusted it would train on part of a shard without a word. So after the last member we
check that the archive ends with its end-of-archive zero blocks: anything else is reported as a
DataError naming the shard.
"""

from __future__ import annotations

import glob
import gzip
import tarfile
import zlib
from pathlib import Path
from typing import Any, Iterator

from toolkit.errors import DataError

BLOCK_SIZE = 512  # tar block; an archive ends with zero blocks
GZIP_MAGIC = b"\x1f\x8b"


def expand_shard_pattern(pattern: str) -> list[Path]:
    """Shard files named by a glob and/or brace pattern ("dir/train-{000000..000009}.tar"), sorted.

    Several patterns may be joined with "::" (the webdataset/open_clip convention).
    """
    import braceexpand

    if not pattern:
        raise DataError("no shard pattern given")
    found: set[Path] = set()
    missing: list[str] = []
    for part in pattern.split("::"):
        for expanded in braceexpand.braceexpand(part):
            expanded = str(Path(expanded).expanduser())
            matches = glob.glob(expanded) if glob.has_magic(expanded) else [expanded]
            matches = [m for m in matches if Path(m).is_file()]
            if not matches:
                missing.append(expanded)
            found.update(Path(m) for m in matches)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"no shard file matches {missing[0]}{more}", hint=f"check the pattern '{pattern}'")
    return sorted(found, key=str)


def _members(archive: tarfile.TarFile, path: Path) -> Iterator[dict[str, Any]]:
    """Regular members as webdataset file samples ({"fname", "data", "__url__"})."""
    for member in archive:
        if member.isreg():
            handle = archive.extractfile(member)
            yield {"fname": member.name, "data": handle.read(), "__url__": str(path)}
        archive.members = []  # stream mode keeps every header otherwise


def _check_end_of_archive(stream: Any, offset: int, path: Path) -> None:
    """Everything after the last member must be zero blocks (at least one)."""
    stream.seek(offset)
    tail_bytes = 0
    while chunk := stream.read(1 << 16):
        if chunk.count(0) != len(chunk):
            raise DataError(f"{path}: corrupt or truncated shard: no valid tar header at byte {offset}",
                            hint="rebuild or re-download this shard")
        tail_bytes += len(chunk)
    if tail_bytes < BLOCK_SIZE:
        raise DataError(f"{path}: corrupt or truncated shard: the file ends without the tar end-of-archive marker",
                        hint="rebuild or re-download this shard")


def read_samples(path: Path) -> Iterator[dict[str, Any]]:
    """The webdataset samples of one shard in stored order: {"__key__", "__url__", "<ext>": bytes}."""
    from webdataset.tariterators import group_by_keys

    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot open shard ({error.strerror})") from error
    with raw:
        stream: Any = gzip.GzipFile(fileobj=raw) if raw.read(2) == GZIP_MAGIC else raw
        raw.seek(0)
        try:
            archive = tarfile.open(fileobj=stream, mode="r|")
            yield from group_by_keys(_members(archive, path))
            _check_end_of_archive(stream, archive.offset, path)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated shard ({error})".replace("\n", " "),
                            hint="rebuild or re-download this shard") from error
        except ValueError as error:  # webdataset: the same member twice in one sample
            raise DataError(f"{path}: malformed shard: {str(error).splitlines()[0]}") from error


def read_documents(paths: list[Path]) -> Iterator[str]:
    """The `.txt` document of every sample of `paths`, in order (samples without one are skipped)."""
    for path in paths:
        for sample in read_samples(path):
            data = sample.get("txt")
            if data is None:
                continue
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}: sample '{sample['__key__']}.txt' is not UTF-8 ({error.reason})") from error
