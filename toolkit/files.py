"""Atomic file writes: the whole new content or the old file, never half of one.

Content goes to a uniquely named temporary sibling of the target (two processes writing the same
path never share one), is flushed and fsynced, then renamed over the target; the directory is
fsynced so that the rename itself survives a power cut. The same holds for whole directories
(`atomic_directory`) and for files that a library writes itself, given a path (`atomic_path`).
Finished files get the permissions a plain `open()` would give them (0o666 less the umask), not
the 0600 of `mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Iterator


def current_umask() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        # Linux reports the umask without changing it; the os.umask round trip below briefly
        # sets a different one, which another thread creating a file at that moment would get.
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_file_mode() -> int:
    """0o666 less the process umask: what `open(path, "w")` gives a new file."""
    return 0o666 & ~current_umask()


def fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """fsync a file, or every file and directory under a directory (the directory last)."""
    root = Path(root)
    if not root.is_dir():
        with open(root, "rb") as handle:
            os.fsync(handle.fileno())
        return
    for directory, _, names in os.walk(root, topdown=False):
        for name in names:
            with open(Path(directory) / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_directory(Path(directory))


def give_default_permissions(root: Path) -> None:
    """Set the permissions `open()` / `mkdir()` would have given every file and directory under
    `root` (a file or a directory). Libraries that write through a temporary of their own
    (safetensors does) leave 0600 files; an exported model must be readable like any other file.
    Files with an execute bit keep it."""
    mask = current_umask()
    file_mode, directory_mode = 0o666 & ~mask, 0o777 & ~mask
    root = Path(root)
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        if path.is_symlink():
            continue
        if path.is_dir():
            os.chmod(path, directory_mode)
        else:
            executable = path.stat().st_mode & 0o100
            os.chmod(path, directory_mode if executable else file_mode)


def remove_path(path: Path) -> None:
    """Delete a file or a directory tree; nothing if it is absent."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def temporary_sibling(path: Path) -> Path:
    """A fresh name beside `path`: hidden, unique per process and call, ending in `path`'s suffix
    (tools such as `np.save` pick the format by extension)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w", encoding: str | None = None) -> Iterator[IO]:
    """`with atomic_writer(path) as handle: handle.write(...)`; on an exception the target is untouched.

    Streams: the handle writes straight to the temporary file, so content of any size never has
    to be held in memory. Text modes default to UTF-8.
    """
    path = Path(path)
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(descriptor, default_file_mode())
        with os.fdopen(descriptor, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as handle:
        handle.write(data)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A fresh temporary path beside `path` for code that writes a file or a directory by name
    (a library's `save(path)`); when the block ends, what it left there is fsynced and renamed to
    `path`. On an exception (or a failed rename) the temporary is deleted and `path` is untouched.

    A directory replaces only an absent or empty directory (the rename fails with OSError
    otherwise). The parent must exist by the time the block ends.
    """
    path = Path(path)
    temporary = temporary_sibling(path)
    try:
        yield temporary
        give_default_permissions(temporary)
        fsync_tree(temporary)
        os.replace(temporary, path)
    except BaseException:
        remove_path(temporary)
        raise
    fsync_directory(path.parent)


@contextlib.contextmanager
def atomic_directory(path: Path) -> Iterator[Path]:
    """`with atomic_directory(out) as staging: (staging / "a.json").write_text(...)`: `out` appears
    whole, with every file in it, or not at all. `out`'s parent must exist."""
    with atomic_path(path) as temporary:
        temporary.mkdir()
        yield temporary
