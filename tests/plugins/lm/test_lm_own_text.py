"""A user's own text: folders and plain-text mistakes give shards or a line naming the tool and the
setting; the val shards the builder writes are found; a run without validation says so."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import assert_one_line_error
from toolkit.cli.common import run_cli
from toolkit.data import ShardInfo
from toolkit.errors import DataError

from plugins.lm import tokenizer_cli
from plugins.lm.dataset import TextShardsConfig, build_text_shards
from plugins.lm.shard_paths import sibling_val_pattern, text_shard_paths


def write_text_folder(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"note-{index}.txt").write_text(f"note {index}\nsome words of my own\n")
    return folder


def run_in_process(main, argv: list[str], capsys) -> subprocess.CompletedProcess:
    """A console script's `run` through the CLI wrapper, captured like a subprocess (no start-up cost)."""
    code = run_cli(main, argv)
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


def test_a_folder_of_built_shards_means_its_train_shards(small_corpus):
    paths = text_shard_paths(str(small_corpus.shard_dir), "--shards")
    assert paths == sorted(small_corpus.shard_dir.glob("train-*.tar")) and len(paths) >= 2
    assert text_shard_paths(str(small_corpus.shard_dir), "data.val_shards", split="val") == sorted(
        small_corpus.shard_dir.glob("val-*.tar"))
    assert sibling_val_pattern(paths) == str(small_corpus.shard_dir / "val-*.tar")
    assert sibling_val_pattern([small_corpus.shard_dir / "shard-000000.tar"]) == ""


def test_plain_text_is_refused_with_the_builder_named(tmp_path, capsys):
    folder = write_text_folder(tmp_path / "mytext")
    out = tmp_path / "tok.model"
    for shards, what in ((str(folder), "is a folder of text files, not of .tar shards"),
                         (str(folder / "*.txt"), "note-0.txt is not a .tar shard (3 of the 3 files matched)")):
        result = run_in_process(tokenizer_cli.run, ["train", "--shards", shards, "--vocab-size", "300",
                                                    "--out", str(out)], capsys)
        assert_one_line_error(result, f"--shards: {folder}", what, "tools/build_text_shards.py",
                              "--shards 'data/train-*.tar'")
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["mytext"]
    with pytest.raises(DataError, match=r"^data.train_shards: no shard file matches .*missing-\*\.tar"):
        text_shard_paths(str(tmp_path / "missing-*.tar"), "data.train_shards")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="data.train_shards: .*empty holds no .tar shards"):
        text_shard_paths(str(tmp_path / "empty"), "data.train_shards")


def config_for(small_corpus, **overrides) -> TextShardsConfig:
    values = dict(train_shards=small_corpus.train_pattern, vocab_size=512, seq_len=32, batch_size=4,
                  cache_dir=str(small_corpus.cache_dir))
    return TextShardsConfig(**{**values, **overrides})


def test_val_shards_beside_the_train_shards_are_used(small_corpus, capsys):
    for train in (small_corpus.train_pattern, str(small_corpus.shard_dir)):  # a pattern or the folder
        val = build_text_shards(config_for(small_corpus, train_shards=train), "val", ShardInfo())
        explicit = build_text_shards(config_for(small_corpus, val_shards=small_corpus.val_pattern), "val", ShardInfo())
        assert val is not None and val.num_windows == explicit.num_windows > 0
        assert f"note: validating on {small_corpus.val_pattern}" in capsys.readouterr().err
    build_text_shards(config_for(small_corpus), "val", ShardInfo(rank=1, world_size=2))
    assert capsys.readouterr().err == ""  # said once, by rank 0
    assert build_text_shards(config_for(small_corpus, val_shards="none"), "val", ShardInfo()) is None
    assert capsys.readouterr().err == ""


def test_no_validation_data_is_a_warning_naming_the_keys(small_corpus, tmp_path, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "train-000000.tar").write_bytes(sorted(small_corpus.shard_dir.glob("train-*.tar"))[0].read_bytes())
    assert build_text_shards(config_for(small_corpus, train_shards=str(lone)), "val", ShardInfo()) is None
    warning = capsys.readouterr().err
    assert warning.startswith("warning: this run has no validation data, so trainer.eval_every evaluates nothing")
    assert "set data.val_shards" in warning and warning.count("\n") == 1


def test_missing_data_tokenizer_names_the_key(small_corpus, tmp_path):
    with pytest.raises(DataError, match=r"^data.tokenizer: .*nope.model: no such file"):
        build_text_shards(config_for(small_corpus, tokenizer=str(tmp_path / "nope.model")), "train", ShardInfo())
