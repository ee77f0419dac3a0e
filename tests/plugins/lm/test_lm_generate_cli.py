"""`toolkit-generate` on a hand-made run directory, through the core's real checkpoint loader."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import toolkit.plugins
from toolkit.checkpoint import load_model
from toolkit.data import ShardInfo
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint
from toolkit.registry import Registry

from helpers import assert_error_output
from plugins.lm import generate_cli
from plugins.lm.dataset import TextShardsConfig, build_text_shards


@dataclass
class BigramConfig:
    vocab_size: int = 512


class Bigram(nn.Module):
    def __init__(self, config: BigramConfig):
        super().__init__()
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, input_ids):  # [B, S] -> [B, S, V]
        return self.table(input_ids)


@pytest.fixture
def run_dir(small_corpus, small_tokenizer_path, tmp_path, monkeypatch):
    """A run whose model is a bigram table counted from the training tokens (a 'trained' LM)."""
    data = TextShardsConfig(train_shards=small_corpus.train_pattern, vocab_size=512, seq_len=32, batch_size=4,
                            cache_dir=str(small_corpus.cache_dir))
    tokens = build_text_shards(data, "train", ShardInfo()).tokens.astype(np.int64)
    counts = np.zeros((512, 512))
    np.add.at(counts, (tokens[:-1], tokens[1:]), 1.0)
    model = Bigram(BigramConfig())
    model.table.weight.data = torch.from_numpy(np.log(counts + 1e-3)).float()
    registries = toolkit.plugins.Registries(kinds={kind: Registry(kind) for kind in toolkit.plugins.KINDS})
    registries["models"].add("bigram", Bigram, BigramConfig, "tests")
    monkeypatch.setattr(toolkit.plugins, "get_registries", lambda refresh=False: registries)
    return write_run(tmp_path / "run", model, small_tokenizer_path)


def write_run(run, model: Bigram, tokenizer_path):
    """A run directory holding `model` as its step-1 checkpoint and a copy of the tokenizer."""
    rows = model.table.num_embeddings
    recipe = {"model": {"name": "bigram", "vocab_size": rows}, "data": {"name": "text_shards", "vocab_size": 512}}
    run.mkdir()
    content = CheckpointContent(step=1, model=model.state_dict(), optimizer={}, scheduler={},
                                     trainer_state={"step": 1}, recipe_yaml=yaml.safe_dump(recipe))
    save_checkpoint(run, content, keep_last=1)
    shutil.copyfile(tokenizer_path, run / "tokenizer.model")  # what the engine does via run_files()
    return run


def generate_text(capsys, *arguments) -> str:
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(list(arguments))
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    return captured.out


def test_generates_a_continuation_of_the_prompt(run_dir, capsys):
    greedy = generate_text(capsys, str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--temperature", "0")
    assert greedy.startswith("ROMEO:") and len(greedy) > len("ROMEO:\n") + 10
    assert greedy == generate_text(capsys, str(run_dir / "step-000001"), "--prompt", "ROMEO:",
                                   "--max-new-tokens", "20", "--temperature", "0")
    sampled = [generate_text(capsys, str(run_dir), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", str(seed))
               for seed in (0, 0, 1)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_missing_tokenizer_is_one_error_line(run_dir, capsys):
    (run_dir / "tokenizer.model").unlink()
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main([str(run_dir), "--prompt", "x"])
    captured = capsys.readouterr()
    assert_error_output(exit_info.value.code, captured.err, "tokenizer.model", str(run_dir))
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_tokenizer_larger_than_the_model_is_refused_before_any_output(run_dir, small_tokenizer_path, tmp_path, capsys):
    small_model = Bigram(BigramConfig(vocab_size=300))  # 300 rows; the run's tokenizer has 512 pieces
    other_run = write_run(tmp_path / "small", small_model, small_tokenizer_path)
    for spec in (other_run, other_run / "step-000001"):
        with pytest.raises(SystemExit) as exit_info:
            generate_cli.main([str(spec), "--prompt", "ROMEO:", "--max-new-tokens", "5"])
        captured = capsys.readouterr()
        assert_error_output(exit_info.value.code, captured.err, "error: tokenizer ", "512 pieces", "300 token rows",
                            str(other_run / "tokenizer.model"), "step-000001")
        assert captured.err.count("\n") == 1 and captured.out == ""


def test_tokenizer_smaller_than_the_model_is_accepted(run_dir, small_tokenizer_path, tmp_path, capsys):
    # Rows beyond the tokenizer's pieces, as in CoreNet's padded embeddings: they never win, so the
    # greedy text is the 512-row model's.
    padded = Bigram(BigramConfig(vocab_size=576))
    with torch.no_grad():
        padded.table.weight.fill_(-1e4)
        padded.table.weight[:512, :512] = load_model(str(run_dir)).model.table.weight
    padded_run = write_run(tmp_path / "padded", padded, small_tokenizer_path)
    arguments = ["--prompt", "ROMEO:", "--max-new-tokens", "20", "--temperature", "0"]
    assert generate_text(capsys, str(padded_run), *arguments) == generate_text(capsys, str(run_dir), *arguments)
