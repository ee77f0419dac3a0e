"""The on-disk cache for derived data (corpora, tokenizers, token files, shard indexes, labels): build once, atomically.

The cache root, content hashes for cache keys, and `build_once`; every dataset plugin uses them.

Every rank of a job builds the same cache entries at the same time. `build_once` makes that safe
and cheap: the first process to take the entry's lock builds it under a temporary name and renames
it into place; the others wait on the lock and then find the entry ready. A crash mid-build leaves
only a temporary name behind, never a half entry under the real one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterable

from toolkit.files import atomic_path

CACHE_ENV_VAR = "TOOLKIT_CACHE"


def cache_root(configured: str = "") -> Path:
    """The cache directory: the configured one, else $TOOLKIT_CACHE, else ~/.cache/toolkit."""
    if configured:
        return Path(configured).expanduser()
    from_environment = os.environ.get(CACHE_ENV_VAR)
    if from_environment:
        return Path(from_environment).expanduser()
    return Path.home() / ".cache" / "toolkit"


def hash_file(path: Path, digest: "hashlib._Hash | None" = None) -> "hashlib._Hash":
    """SHA-256 of a file's bytes (fed into `digest` when given, so several files chain)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def hash_strings(parts: Iterable[str]) -> str:
    """A short, stable hex key for a sequence of strings (used in cache file names)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")  # so ("ab", "c") and ("a", "bc") differ
    return digest.hexdigest()[:16]


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`target` (a file or a directory), built by `build(temporary_path)` if it does not exist yet.

    `build` writes the complete entry at the path it is given; it is renamed to `target` only when
    `build` returns. Concurrent callers (ranks, workers) wait on a lock file beside `target`.
    """
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.with_name(target.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if we crash
        try:
            if target.exists():  # another process built it while we waited
                return target
            # The temporary keeps the suffix: tools that choose a format by extension (np.save) work.
            with atomic_path(target) as temporary:
                build(temporary)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target
