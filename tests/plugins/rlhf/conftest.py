"""Fixtures for the rlhf tests: GSM-Symbolic SFT data, a small tokenizer trained on it, and a
tiny random-init OpenELM base run written directly (no training), all once per session."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from plugins.lm.shard_writer import Document, write_text_shards
from plugins.lm.tokenizer import cached_tokenizer, load_tokenizer
from plugins.openelm import OpenELM, OpenELMConfig
from plugins.rlhf import gsm_data
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint

VOCAB = 384
TINY = dict(vocab_size=VOCAB, max_context_length=512, num_layers=2, model_dim=32, head_dim=16, num_gqa_groups=2,
            ffn_dim_divisor=32)


@pytest.fixture(scope="session")
def gsm_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gsm")
    assert gsm_data.run(["--out", str(out), "--instances", "3", "--val-instances", "1", "--heldout-instances", "2",
                         "--heldout", "5"]) == 0
    return out


@pytest.fixture(scope="session")
def tokenizer_path(gsm_dir, tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in (gsm_dir / "train.jsonl").read_text().splitlines()]
    text = "\n".join(f"Q: {row['prompt']}\nA: Let's think step by step. {row['response']}" for row in rows)
    shards = tmp_path_factory.mktemp("shards")
    write_text_shards([Document("gsm.txt", text), Document("more.txt", text)], shards, val_fraction=0.5)
    return cached_tokenizer(sorted(shards.glob("train-*.tar")), VOCAB, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    return load_tokenizer(tokenizer_path, VOCAB)


def tiny_openelm(seed: int = 0) -> OpenELM:
    torch.manual_seed(seed)
    return OpenELM(OpenELMConfig(**TINY))


def write_run(run: Path, model: torch.nn.Module, recipe: dict, tokenizer_path: Path, step: int = 1) -> Path:
    """A run directory as the engine leaves one (checkpoint, recipe, tokenizer), written directly."""
    run.mkdir(parents=True)
    content = CheckpointContent(step=step, model=model.state_dict(), optimizer={}, scheduler={},
                                trainer_state={"step": step}, recipe_yaml=yaml.safe_dump(recipe))
    save_checkpoint(run, content, keep_last=1)
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    shutil.copyfile(tokenizer_path, run / "tokenizer.model")
    return run


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, tokenizer_path) -> Path:
    """A tiny random-init OpenELM saved as a toolkit run: the SFT runs' `source:`."""
    model = tiny_openelm()
    recipe = {"model": {"name": "openelm", **dataclasses.asdict(model.config)}}
    return write_run(tmp_path_factory.mktemp("base") / "run", model, recipe, tokenizer_path)


def sft_overrides(gsm_dir: Path, base_run: Path, out: Path, *extra: str) -> list[str]:
    return [f"models.policy.source={base_run}", f"data.train_file={gsm_dir / 'train.jsonl'}",
            f"data.val_file={gsm_dir / 'val.jsonl'}", f"data.tokenizer={base_run / 'tokenizer.model'}",
            "data.seq_len=384", "data.batch_size=4", "trainer.max_steps=3", "trainer.eval_every=3",
            "trainer.eval_batches=2", "trainer.save_every=3", "trainer.progress=false", "trainer.log_every=1",
            "trainer.precision=fp32", "schedule.warmup_steps=1", "optim.lr=3e-3", f"trainer.out_dir={out}", *extra]


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory, gsm_dir, base_run) -> Path:
    """Two SFT steps of the tiny base on the GSM data, through toolkit-train's entry point."""
    from toolkit.cli.train import main_with_arguments

    run = tmp_path_factory.mktemp("sft") / "run"
    overrides = sft_overrides(gsm_dir, base_run, run, "trainer.max_steps=2", "trainer.eval_every=2",
                              "trainer.save_every=2", "data.batch_size=2", "trainer.eval_batches=1")
    assert main_with_arguments(["rlhf/sft_a.yaml", *overrides]) == 0
    return run
