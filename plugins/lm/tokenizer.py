"""SentencePiece tokenizers: train one on shards (cached by content), or load the user's own.

`load_tokenizer` also reads a Hugging Face `tokenizer.json` (json_tokenizer.py: a pretrained
model's own vocabulary, SmolLM2's byte-level BPE say) behind the same interface; a run directory
keeps whichever file it trained with under its usual name (`run_tokenizer_file` finds it).

Trained models keep text exactly: identity normalisation, no collapsing of spaces, newline as a
piece of its own and byte fallback for characters never seen, so `decode(encode(text)) == text`
and generated samples keep their line breaks. Ids: 0 = <unk>, 1 = <s> (BOS), 2 = </s> (EOS).
In the token stream documents are separated by EOS.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from plugins.lm.tokenizer_files import tokenizer_run_files
from toolkit.data.cache import build_once, hash_file
from toolkit.data.shards import read_documents
from toolkit.errors import DataError

TRAINER_VERSION = 1  # part of the cache key: bump when the training options change
MAX_TRAINING_LINE_BYTES = 16384  # longer lines are cut for training only (SentencePiece's limit)


@dataclass
class Tokenizer:
    """A loaded SentencePiece model and the file it came from."""

    path: Path
    processor: "sentencepiece.SentencePieceProcessor"  # noqa: F821 - imported lazily

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    @property
    def eos_id(self) -> int:
        return self.processor.eos_id()

    @property
    def bos_id(self) -> int:
        return self.processor.bos_id()

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str], num_threads: int = 0) -> list[list[int]]:
        return self.processor.encode(texts, num_threads=num_threads or default_threads())

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids)

    def run_files(self) -> dict[str, Path]:
        """The files a run directory keeps of this tokenizer (name there -> file)."""
        return tokenizer_run_files(self.path)


def default_threads() -> int:
    return max(1, min(16, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def load_tokenizer(path: str | Path, expected_vocab_size: int | None = None) -> Tokenizer:
    """A SentencePiece `.model` file or a Hugging Face `.json` one, optionally checked against the
    configured vocabulary size."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: tokenizer file not found")
    if path.suffix == ".json":
        from plugins.lm.json_tokenizer import load_json_tokenizer

        tokenizer = load_json_tokenizer(path)
    else:
        tokenizer = _load_sentencepiece(path)
    if expected_vocab_size is not None and tokenizer.vocab_size != expected_vocab_size:
        raise DataError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but data.vocab_size is {expected_vocab_size}",
            hint=f"set data.vocab_size={tokenizer.vocab_size} (and the model's vocab_size to match)",
        )
    if tokenizer.eos_id < 0:
        raise DataError(f"{path}: the tokenizer has no end-of-sequence token; documents cannot be separated")
    return tokenizer


def _load_sentencepiece(path: Path) -> Tokenizer:
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.load(str(path))
    except (OSError, RuntimeError) as error:
        raise DataError(f"{path}: not a SentencePiece model ({str(error).splitlines()[0]})") from error
    return Tokenizer(path, processor)


def _training_lines(shard_paths: list[Path]) -> Iterator[str]:
    # SentencePiece learns from "sentences"; lines are the natural unit of plain text. Encoding later
    # sees whole documents, where "\n" is its own piece, so a line's pieces are the same either way.
    for document in read_documents(shard_paths):
        for line in document.split("\n"):
            if line.strip():
                yield line.encode("utf-8")[:MAX_TRAINING_LINE_BYTES].decode("utf-8", errors="ignore")


def train_tokenizer(
    shard_paths: list[Path],
    vocab_size: int,
    out_path: Path,
    model_type: str = "bpe",
    num_threads: int = 0,
) -> Path:
    """Train a SentencePiece model on the `.txt` documents of `shard_paths`; writes `out_path`."""
    import sentencepiece

    if model_type not in ("bpe", "unigram"):
        raise DataError(f"tokenizer model type must be 'bpe' or 'unigram', got '{model_type}'")
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=_training_lines(shard_paths),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            user_defined_symbols=["\n"],
            allow_whitespace_only_pieces=True,
            split_digits=True,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            max_sentence_length=MAX_TRAINING_LINE_BYTES,
            num_threads=num_threads or default_threads(),
            minloglevel=2,  # SentencePiece logs to stderr otherwise; library code stays quiet
        )
    except RuntimeError as error:
        # "INTERNAL: src/x.cc(744) [check] Vocabulary size too high (60000). Please ..." -> the words.
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "training failed"
        reason = reason.rsplit("] ", 1)[-1]
        names = ", ".join(p.name for p in shard_paths[:3]) + (", ..." if len(shard_paths) > 3 else "")
        raise DataError(f"training a {vocab_size}-token tokenizer on {names} failed: {reason}",
                        hint="change data.vocab_size (toolkit-tokenizer: --vocab-size): byte fallback needs "
                             "256 + the corpus's characters, "
                             "and a small corpus supports only a small vocabulary") from error
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(model.getvalue())
    return out_path


def shards_fingerprint(shard_paths: list[Path]) -> str:
    """SHA-256 over the shards' names and bytes (the tokenizer depends on their content only)."""
    import hashlib

    digest = hashlib.sha256()
    for path in shard_paths:
        digest.update(path.name.encode("utf-8") + b"\0")
        hash_file(path, digest)
    return digest.hexdigest()


def cached_tokenizer(shard_paths: list[Path], vocab_size: int, cache_dir: Path, model_type: str = "bpe") -> Path:
    """A tokenizer trained on `shard_paths`, from the cache when one with the same key exists."""
    key = f"{shards_fingerprint(shard_paths)[:16]}-v{TRAINER_VERSION}"
    target = Path(cache_dir) / "tokenizers" / f"sp-{model_type}{vocab_size}-{key}.model"
    return build_once(target, lambda temporary: train_tokenizer(shard_paths, vocab_size, temporary, model_type))
