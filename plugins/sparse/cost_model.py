"""What reading FFN weights from disk should cost: measured positioned-read speed x reads per token.

The page cache: a file read recently is served from DRAM by the kernel, at memory-copy speed, and
only a cold read reaches the device. Dropping every cache needs root (`/proc/sys/vm/drop_caches`);
what a user can do is `posix_fadvise(POSIX_FADV_DONTNEED)` on a file of their own, which evicts
its clean pages (the writer fsyncs). `page_residency` checks the result with `mincore` (the
fraction of the file's pages in DRAM), so every measurement says whether its reads were cached.
Measurements use a scratch file much larger than what they read, so a cold run does not warm
itself (random reads seldom touch a page twice).

Cost per token = reads per token x measured seconds per random positioned read of the mean read
size (cold: from the device; warm: from the page cache). It leaves out the gather into the
output tensors and Python's per-read overhead beyond the measured `os.pread` call itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.files import atomic_writer

SCRATCH_CHUNK = 1 << 22


def _libc():
    library = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    library.mmap.restype = ctypes.c_void_p
    library.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    library.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    library.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    return library


def page_residency(path: Path) -> float | None:
    """Fraction of `path`'s pages in the page cache (mincore), or None where that cannot be asked."""
    size = os.path.getsize(path)
    if size == 0:
        return 0.0
    try:
        library = _libc()
    except (OSError, AttributeError):
        return None
    descriptor = os.open(path, os.O_RDONLY)
    try:
        # A mapping only asks; it reads nothing (mincore does not fault pages in).
        address = library.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, descriptor, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            return None
        pages = -(-size // mmap.PAGESIZE)
        vector = (ctypes.c_ubyte * pages)()
        result = library.mincore(ctypes.c_void_p(address), size, vector)
        library.munmap(ctypes.c_void_p(address), size)
        return None if result else sum(byte & 1 for byte in vector) / pages
    finally:
        os.close(descriptor)


def drop_page_cache(path: Path) -> None:
    """Ask the kernel to evict `path`'s clean pages (works without root for the file's pages)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def make_scratch_file(path: Path, size_bytes: int) -> Path:
    """A file of `size_bytes` random bytes (incompressible), written atomically and fsynced."""
    path = Path(path)
    if not path.exists() or path.stat().st_size != size_bytes:
        with atomic_writer(path, "wb") as handle:
            for start in range(0, size_bytes, SCRATCH_CHUNK):
                handle.write(os.urandom(min(SCRATCH_CHUNK, size_bytes - start)))
    return path


@dataclass
class ReadMeasurement:
    pattern: str  # "random" or "sequential"
    cold: bool  # the file's pages were dropped before reading
    read_bytes: int
    reads: int
    seconds: float
    resident_before: float | None  # fraction of the file's pages cached before / after
    resident_after: float | None

    @property
    def seconds_per_read(self) -> float:
        return self.seconds / self.reads

    @property
    def bytes_per_second(self) -> float:
        return self.reads * self.read_bytes / self.seconds


def measure_reads(path: Path, read_bytes: int, reads: int, pattern: str = "random", cold: bool = True,
                  seed: int = 0) -> ReadMeasurement:
    """Time `reads` positioned reads of `read_bytes` from `path`: at random multiples of
    `read_bytes` (random) or one after another from the start (sequential). Cold: the file's
    pages are dropped first; warm: the same reads are done once untimed first."""
    size = os.path.getsize(path)
    slots = size // read_bytes
    if pattern == "sequential":
        offsets = [index * read_bytes for index in range(min(reads, slots))]
    else:
        chooser = random.Random(seed)
        offsets = [chooser.randrange(slots) * read_bytes for _ in range(reads)]
    descriptor = os.open(path, os.O_RDONLY)
    try:
        if cold:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            for offset in offsets:
                os.pread(descriptor, read_bytes, offset)
        before = page_residency(path)
        buffer = bytearray(read_bytes)
        start = time.perf_counter()
        for offset in offsets:
            os.preadv(descriptor, [buffer], offset)
        seconds = time.perf_counter() - start
    finally:
        os.close(descriptor)
    return ReadMeasurement(pattern, cold, read_bytes, len(offsets), seconds, before, page_residency(path))


@dataclass
class CostEstimate:
    """Expected weight-fetch time per token from a provider's reads and a read measurement."""

    bytes_per_token: float
    reads_per_token: float
    mean_read_bytes: float
    seconds_per_read: float  # measured for reads of about mean_read_bytes
    cached: bool  # the measurement's reads came from the page cache

    @property
    def seconds_per_token(self) -> float:
        return self.reads_per_token * self.seconds_per_read

    @property
    def tokens_per_second(self) -> float:
        return 1.0 / self.seconds_per_token if self.seconds_per_token else float("inf")


def estimate(summary: dict[str, float], measurement: ReadMeasurement) -> CostEstimate:
    """A provider's FetchStats summary + a measurement of reads of its mean read size."""
    return CostEstimate(summary["bytes_read_per_token"], summary["reads_per_token"], summary["mean_read_bytes"],
                        measurement.seconds_per_read, not measurement.cold)
