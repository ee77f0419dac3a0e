"""SentencePiece tokenizer: training on shards (cached by content), loading, and the CLI."""

from __future__ import annotations

import pytest

from toolkit.errors import DataError

from plugins.lm import tokenizer_cli
from plugins.lm.tokenizer import cached_tokenizer, load_tokenizer

SMALL_VOCAB = 512  # size of the conftest tokenizer


def test_trained_tokenizer_round_trips_text_exactly(small_tokenizer, small_corpus):
    assert small_tokenizer.vocab_size == SMALL_VOCAB
    assert (small_tokenizer.bos_id, small_tokenizer.eos_id) == (1, 2)
    text = small_corpus.documents[0].text[:2000] + "\n\n  two spaces, a tab\tand ünïcödé ✓\n"
    ids = small_tokenizer.encode(text)
    assert small_tokenizer.decode(ids) == text  # newlines and spacing survive
    assert small_tokenizer.eos_id not in ids


def test_cache_hit_and_content_key(small_corpus, small_tokenizer_path, tmp_path):
    train = sorted(small_corpus.shard_dir.glob("train-*.tar"))
    modified = small_tokenizer_path.stat().st_mtime_ns
    assert cached_tokenizer(train, SMALL_VOCAB, small_corpus.cache_dir) == small_tokenizer_path
    assert small_tokenizer_path.stat().st_mtime_ns == modified  # not retrained
    # A different vocabulary size is a different cache entry.
    other = cached_tokenizer(train, 400, tmp_path)
    assert other != small_tokenizer_path and load_tokenizer(other).vocab_size == 400


def test_vocab_mismatch_names_both_sizes(small_tokenizer_path):
    with pytest.raises(DataError, match=f"{SMALL_VOCAB} tokens but data.vocab_size is 4096"):
        load_tokenizer(small_tokenizer_path, expected_vocab_size=4096)


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(DataError, match="junk.model"):
        load_tokenizer(junk)


def test_vocab_too_large_for_corpus_is_a_data_error(small_corpus, tmp_path):
    train = sorted(small_corpus.shard_dir.glob("train-*.tar"))[:1]
    with pytest.raises(DataError, match=r"60000-token tokenizer on train-000000.tar failed: Vocabulary size too high"):
        cached_tokenizer(train, 60_000, tmp_path)
    assert not list((tmp_path / "tokenizers").glob("*.model"))  # nothing half-written cached


def test_tokenizer_cli_train_and_info(small_corpus, tmp_path, capsys):
    out = tmp_path / "tok.model"
    code = tokenizer_cli.run(["train", "--shards", small_corpus.train_pattern, "--vocab-size", "400",
                              "--out", str(out), "--threads", "1"])
    assert code == 0 and load_tokenizer(out, 400).vocab_size == 400
    assert tokenizer_cli.run(["info", str(out)]) == 0
    assert "vocab_size 400" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        tokenizer_cli.main(["train", "--shards", str(tmp_path / "none-*.tar"), "--vocab-size", "300",
                            "--out", str(out)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("error: --shards: no shard file matches")
