"""Reading webdataset shards: expanding shard patterns, and samples (or text documents) in stored order,
refusing damaged shards.

Shards are `.tar` (or gzip-compressed `.tar.gz`) files of samples `<key>.<ext>`; a sample's `.txt`
member is one document. Samples are grouped by `webdataset.tariterators.group_by_keys`, so keys
follow the webdataset convention (the name up to the first dot of the base name).

Python's tarfile stops silently at a damaged header or at a file cut on a member boundary; a
reader that trusted it would train on part of a shard without a word. So after the last member we
check that the archive ends with its end-of-archive zero blocks: anything else is reported as a
DataError naming the shard.

Members are read whole, so their size is capped (`max_member_bytes`, 64 MiB by default): a gzip
shard of zeros expands about 1000:1, and a header claiming gigabytes would otherwise become one
allocation. The header's size is checked before a member is read, and the decompressed stream
itself refuses to yield more than the cap (plus room for headers) without reaching the next
member, which also bounds the extended (pax, long-name) headers tarfile reads whole on its own.
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
DEFAULT_MAX_MEMBER_BYTES = 64 << 20  # 64 MiB: far above any caption, document or image
HEADER_ALLOWANCE = 1 << 20  # extended headers (long names, pax records) read besides the data


def member_too_large(path: Path, member: str, size: int | str, limit: int) -> DataError:
    """The error for a member over the cap, naming the shard, the member and the cap."""
    return DataError(f"{path}: member '{member}' is {size} bytes, over the {limit}-byte member size cap",
                     hint="a shard member this large is damaged or hostile; raise max_member_bytes if it is real")


class _BoundedStream:
    """A read-only stream that refuses to yield more than `limit` bytes between two `mark()`s.

    tarfile reads the decompressed stream in small records, so the count grows with what has
    really been produced; this stops a member or header that expands without end, whatever its
    header says, before it is held in memory."""

    def __init__(self, stream: Any, limit: int, path: Path) -> None:
        self.stream, self.limit, self.path = stream, limit, path
        self.since_mark = 0
        self.member = "the archive start"

    def mark(self, member: str) -> None:
        self.since_mark, self.member = 0, member

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.limit + 1 - self.since_mark
        data = self.stream.read(max(0, min(size, self.limit + 1 - self.since_mark)))
        self.since_mark += len(data)
        if self.since_mark > self.limit:
            raise member_too_large(self.path, f"after {self.member}", f"more than {self.limit}", self.limit)
        return data


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


def _members(archive: tarfile.TarFile, stream: _BoundedStream, path: Path,
             max_member_bytes: int) -> Iterator[dict[str, Any]]:
    """Regular members as webdataset file samples ({"fname", "data", "__url__"})."""
    for member in archive:
        if member.isreg():
            if member.size > max_member_bytes:  # refused before a byte of it is read
                raise member_too_large(path, member.name, member.size, max_member_bytes)
            handle = archive.extractfile(member)
            data = handle.read(max_member_bytes + 1)
            if len(data) > max_member_bytes:  # a sparse member can expand past its header size
                raise member_too_large(path, member.name, f"more than {max_member_bytes}", max_member_bytes)
            yield {"fname": member.name, "data": data, "__url__": str(path)}
        stream.mark(f"member '{member.name}'")  # the next header and member may use a full cap again
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


def read_samples(path: Path, max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[dict[str, Any]]:
    """The webdataset samples of one shard in stored order: {"__key__", "__url__", "<ext>": bytes}.

    A member over `max_member_bytes` (as its header says, or as it decompresses) is a DataError."""
    from webdataset.tariterators import group_by_keys

    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as error:
        raise DataError(f"{path}: cannot open shard ({error.strerror})") from error
    with raw:
        stream: Any = gzip.GzipFile(fileobj=raw) if raw.read(2) == GZIP_MAGIC else raw
        raw.seek(0)
        bounded = _BoundedStream(stream, max_member_bytes + HEADER_ALLOWANCE, path)
        try:
            archive = tarfile.open(fileobj=bounded, mode="r|")
            yield from group_by_keys(_members(archive, bounded, path, max_member_bytes))
            _check_end_of_archive(stream, archive.offset, path)  # read in chunks: the tail is not held
        except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
            raise DataError(f"{path}: corrupt or truncated shard ({error})".replace("\n", " "),
                            hint="rebuild or re-download this shard") from error
        except ValueError as error:  # webdataset: the same member twice in one sample
            raise DataError(f"{path}: malformed shard: {str(error).splitlines()[0]}") from error


def read_documents(paths: list[Path], max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES) -> Iterator[str]:
    """The `.txt` document of every sample of `paths`, in order (samples without one are skipped)."""
    for path in paths:
        for sample in read_samples(path, max_member_bytes):
            data = sample.get("txt")
            if data is None:
                continue
            try:
                yield data.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(f"{path}: sample '{sample['__key__']}.txt' is not UTF-8 ({error.reason})") from error
