"""Writing text documents as webdataset shards, split into train and val by whole document.

Layout written to OUT_DIR (the open_clip / webdataset convention):

    train-000000.tar, train-000001.tar, ...   samples `<key>.txt` (one document, UTF-8)
    val-000000.tar, ...                       and `<key>.json` ({"source": relative path, ...})
    manifest.json                             documents, characters and shard names per split

The split depends only on each document's relative path and the seed, so rebuilding the same
folder gives the same split and byte-identical shards (tar member times are fixed). Every shard is
written under a temporary name and renamed, so a crash never leaves a truncated shard behind.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import DataError
from toolkit.files import atomic_write_text, atomic_writer

TEXT_SUFFIXES = (".txt", ".md")
SHARD_MEMBER_MTIME = 0  # fixed so identical input gives byte-identical shards
DEFAULT_SHARD_SIZE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Document:
    """One document: `name` is its relative path (it decides the split), `text` its content."""

    name: str
    text: str


@dataclass
class ShardSummary:
    """What `write_text_shards` produced, also saved as manifest.json."""

    out_dir: Path
    shards: dict[str, list[str]] = field(default_factory=dict)  # split -> shard file names
    documents: dict[str, int] = field(default_factory=dict)  # split -> number of documents
    characters: dict[str, int] = field(default_factory=dict)  # split -> characters of text
    val_documents: list[str] = field(default_factory=list)  # names of the documents held out

    def to_json(self) -> str:
        return json.dumps(
            {
                "shards": self.shards,
                "documents": self.documents,
                "characters": self.characters,
                "val_documents": self.val_documents,
            },
            indent=2,
        )


def collect_documents(source_dir: Path, suffixes: tuple[str, ...] = TEXT_SUFFIXES) -> list[Document]:
    """Every non-empty text file under `source_dir` (recursively), sorted by relative path."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise DataError(f"{source_dir}: not a directory")
    documents = []
    for path in sorted(p for p in source_dir.rglob("*") if p.is_file() and p.suffix.lower() in suffixes):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
        if text.strip():
            documents.append(Document(path.relative_to(source_dir).as_posix(), text))
    if not documents:
        raise DataError(f"{source_dir}: holds no non-empty {'/'.join(suffixes)} files")
    return documents


def _split_rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode("utf-8")).hexdigest()


def split_documents(
    documents: list[Document], val_fraction: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """(train, val) by whole document, in the input order.

    The val documents are the round(val_fraction * n) ones whose hash of (seed, name) is smallest:
    deterministic, independent of file order, at least one when there are >= 2 documents and
    val_fraction > 0, and never all of them.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    count = len(documents)
    val_count = 0
    if count >= 2 and val_fraction > 0:
        val_count = min(max(1, round(val_fraction * count)), count - 1)
    ranked = sorted(documents, key=lambda document: _split_rank(document.name, seed))
    val_names = {document.name for document in ranked[:val_count]}
    train = [document for document in documents if document.name not in val_names]
    val = [document for document in documents if document.name in val_names]
    return train, val


def _sample_key(index: int, name: str) -> str:
    # webdataset splits a member name at the first dot of its base name: keep keys dot- and slash-free.
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", name.rsplit(".", 1)[0]).strip("-")[:60]
    return f"{index:06d}_{stem}" if stem else f"{index:06d}"


def _write_one_shard(path: Path, samples: list[tuple[str, Document]]) -> None:
    import webdataset

    with atomic_writer(path, "wb") as stream:  # streamed: a shard is never held whole in memory
        writer = webdataset.TarWriter(stream, encoder=False, mtime=SHARD_MEMBER_MTIME)
        for key, document in samples:
            metadata = {"source": document.name, "characters": len(document.text)}
            writer.write(
                {
                    "__key__": key,
                    "txt": document.text.encode("utf-8"),
                    "json": json.dumps(metadata, sort_keys=True).encode("utf-8"),
                }
            )
        writer.close()


def write_split_shards(
    documents: list[Document], out_dir: Path, prefix: str, shard_size_bytes: int
) -> list[str]:
    """`documents` as `prefix-000000.tar`, ... of about `shard_size_bytes` each; returns the names.

    A shard closes once it holds at least `shard_size_bytes` of text, so one long document is
    never cut in two.
    """
    if shard_size_bytes <= 0:
        raise DataError(f"shard size must be positive, got {shard_size_bytes} bytes")
    names: list[str] = []
    pending: list[tuple[str, Document]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        name = f"{prefix}-{len(names):06d}.tar"
        _write_one_shard(out_dir / name, pending)
        names.append(name)
        pending, pending_bytes = [], 0

    for index, document in enumerate(documents):
        pending.append((_sample_key(index, document.name), document))
        pending_bytes += len(document.text.encode("utf-8"))
        if pending_bytes >= shard_size_bytes:
            flush()
    if pending:
        flush()
    return names


def existing_shards(out_dir: Path) -> list[Path]:
    return sorted(p for pattern in ("train-*.tar", "val-*.tar") for p in Path(out_dir).glob(pattern))


def write_text_shards(
    documents: list[Document],
    out_dir: Path,
    val_fraction: float = 0.05,
    shard_size_bytes: int = DEFAULT_SHARD_SIZE_BYTES,
    seed: int = 0,
    overwrite: bool = False,
) -> ShardSummary:
    """Split `documents` by document and write train/val shards plus manifest.json into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = existing_shards(out_dir)
    if stale and not overwrite:
        raise DataError(
            f"{out_dir}: already holds shards ({stale[0].name}, ...)",
            hint="choose an empty directory or pass --overwrite",
        )
    for path in stale:  # left over shards would silently join the new set
        path.unlink()
    train, val = split_documents(documents, val_fraction, seed)
    summary = ShardSummary(out_dir=out_dir, val_documents=[document.name for document in val])
    for split, members in (("train", train), ("val", val)):
        summary.shards[split] = write_split_shards(members, out_dir, split, shard_size_bytes)
        summary.documents[split] = len(members)
        summary.characters[split] = sum(len(document.text) for document in members)
    manifest = out_dir / "manifest.json"
    atomic_write_text(manifest, summary.to_json() + "\n")
    return summary
