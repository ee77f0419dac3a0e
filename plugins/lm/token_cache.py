"""The tokenized form of a split: all its documents as one flat token file, cached and memory-mapped.

`tokens-<split>-<key>.<dtype>.bin` holds the raw token ids (uint16 when the vocabulary fits, else
uint32), each document followed by EOS. The key covers the shard files (names, sizes, mtimes) and
the tokenizer's bytes, so changing either makes a new file. Documents are tokenized in chunks and
streamed to disk, so a corpus larger than memory is fine; reading maps the file (never pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from plugins.lm.tokenizer import Tokenizer
from toolkit.data.cache import build_once, hash_file, hash_strings
from toolkit.data.shards import read_documents
from toolkit.errors import DataError

TOKEN_FILE_VERSION = 1
DOCUMENTS_PER_CHUNK = 64  # documents tokenized together (SentencePiece threads over a batch)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


def token_file_key(shard_paths: list[Path], tokenizer: Tokenizer) -> str:
    parts = [f"v{TOKEN_FILE_VERSION}", hash_file(tokenizer.path).hexdigest()]
    for path in shard_paths:
        status = path.stat()
        parts.append(f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}")
    return hash_strings(parts)


def write_token_file(shard_paths: list[Path], tokenizer: Tokenizer, out_path: Path) -> None:
    """Tokenize every document of `shard_paths` into `out_path`, documents joined by EOS."""
    dtype = token_dtype(tokenizer.vocab_size)
    eos = tokenizer.eos_id

    def write_chunk(handle, documents: list[str]) -> None:
        for ids in tokenizer.encode_batch(documents):
            ids.append(eos)
            np.asarray(ids, dtype=dtype).tofile(handle)

    with open(out_path, "wb") as handle:
        chunk: list[str] = []
        for document in read_documents(shard_paths):
            chunk.append(document)
            if len(chunk) == DOCUMENTS_PER_CHUNK:
                write_chunk(handle, chunk)
                chunk = []
        if chunk:
            write_chunk(handle, chunk)


def cached_tokens(shard_paths: list[Path], tokenizer: Tokenizer, cache_dir: Path, split: str) -> np.ndarray:
    """The split's token ids as a read-only memory map, tokenizing on first use."""
    dtype = token_dtype(tokenizer.vocab_size)
    target = Path(cache_dir) / "tokens" / f"tokens-{split}-{token_file_key(shard_paths, tokenizer)}.{dtype.name}.bin"
    build_once(target, lambda temporary: write_token_file(shard_paths, tokenizer, temporary))
    if target.stat().st_size == 0:
        raise DataError(f"the {split} shards ({shard_paths[0]}, ...) hold no .txt documents")
    return np.memmap(target, dtype=dtype, mode="r")
