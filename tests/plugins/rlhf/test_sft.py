"""SFT: response-only labels, packing without cross-example attention (the document-masked
forward equals each example run alone), the GSM data builder's template split, the two SFT
recipes, and a short SFT run from a base run through toolkit-train's entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import sft_overrides, tiny_openelm
from helpers import REPO
from plugins.lm.packing import IGNORE_INDEX
from plugins.lm_eval.gsm import build_prompt
from plugins.rlhf import gsm_data
from plugins.rlhf.chat import chat_template
from plugins.rlhf.packed import document_positions, packed_logits, require_packing_support
from plugins.rlhf.sft_data import Example, PromptResponseConfig, build_prompt_response, pack_rows, tokenize_example
from toolkit.cli.common import run_cli
from toolkit.cli.train import main_with_arguments
from toolkit.data import ShardInfo
from toolkit.errors import RecipeError
from toolkit.plugins import get_registries
from toolkit.recipe import load_recipe
from toolkit.run_dir import flatten

RECIPES = REPO / "plugins" / "rlhf" / "recipes"


def test_labels_cover_the_response_and_its_eos_only(tokenizer):
    template = chat_template("gsm")
    example = tokenize_example(tokenizer, template, "Tom has 3 apples. How many?", "He has 3. The final answer is 3.")
    # The evaluator's zero-shot prompt, so toolkit-eval gsm_symbolic num_shots=0 asks as training did.
    assert template.render_prompt("Tom has 3 apples. How many?") == build_prompt([], "Tom has 3 apples. How many?")
    prompt = [tokenizer.eos_id, *tokenizer.encode(build_prompt([], "Tom has 3 apples. How many?"))]
    response = tokenizer.encode(" He has 3. The final answer is 3.")
    assert example.input_ids == prompt + response
    assert example.labels == [IGNORE_INDEX] * (len(prompt) - 1) + response + [tokenizer.eos_id]


def test_packing_fills_rows_in_order_and_numbers_documents():
    examples = [Example([1, 2, 3], [-100, 5, 6]), Example([7, 8], [9, 10]), Example([11, 12, 13, 14], [1, 2, 3, 4])]
    rows = pack_rows(examples, seq_len=6, packing=True, pad_id=0)
    assert rows["input_ids"].tolist() == [[1, 2, 3, 7, 8, 0], [11, 12, 13, 14, 0, 0]]
    assert rows["labels"].tolist() == [[-100, 5, 6, 9, 10, -100], [1, 2, 3, 4, -100, -100]]
    assert rows["document_ids"].tolist() == [[0, 0, 0, 1, 1, -1], [0, 0, 0, 0, -1, -1]]
    assert pack_rows(examples, seq_len=6, packing=False, pad_id=0)["input_ids"].shape == (3, 6)


def test_a_packed_example_computes_what_it_computes_alone():
    model = tiny_openelm().eval()
    torch.manual_seed(1)
    first, second = torch.randint(0, 384, (1, 5)), torch.randint(0, 384, (1, 7))
    row = torch.cat([first, second, torch.zeros(1, 4, dtype=torch.long)], dim=1)  # [1, 16]
    documents = torch.tensor([[0] * 5 + [1] * 7 + [-1] * 4])
    assert document_positions(documents).tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3]]
    with torch.no_grad():
        packed = packed_logits(model, row, documents)  # [1, 16, V]
        torch.testing.assert_close(packed[:, :5], model(first), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed[:, 5:12], model(second), atol=1e-5, rtol=1e-5)
        # The plain causal forward lets the second example read the first: it differs.
        assert (model(row)[:, 5:12] - model(second)).abs().max() > 1e-3
    with pytest.raises(RecipeError, match="data.packing needs a plain OpenELM"):
        require_packing_support(nn.Linear(2, 2))


def test_the_data_builder_keeps_heldout_templates_out_of_training(gsm_dir):
    split = json.loads((gsm_dir / "split.json").read_text())
    assert len(split["heldout_templates"]) == 5 and not set(split["heldout_templates"]) & set(split["train_templates"])
    rows = {name: [json.loads(line) for line in (gsm_dir / f"{name}.jsonl").read_text().splitlines()]
            for name in ("train", "val", "heldout")}
    assert {row["id"] for row in rows["train"]} == {row["id"] for row in rows["val"]} == set(split["train_templates"])
    assert {row["id"] for row in rows["heldout"]} == set(split["heldout_templates"])
    assert len(rows["train"]) == 3 * len(split["train_templates"])
    for row in rows["train"]:
        assert row["prompt"] == row["question"] and row["response"].endswith(f"The final answer is {row['reference']}.")
        assert "<<" not in row["response"] and row["answer"].rstrip().endswith(f"#### {row['reference']}")


def test_the_data_builder_refuses_to_overwrite(gsm_dir, capsys):
    before = (gsm_dir / "train.jsonl").read_bytes()
    assert run_cli(gsm_data.run, ["--out", str(gsm_dir), "--instances", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "already holds train.jsonl" in errors[0]
    assert (gsm_dir / "train.jsonl").read_bytes() == before


def test_the_two_sft_recipes_differ_only_in_seed_and_out_dir():
    registries = get_registries()
    first = flatten(load_recipe(str(RECIPES / "sft_a.yaml"), [], registries).values)
    second = flatten(load_recipe(str(RECIPES / "sft_b.yaml"), [], registries).values)
    assert sorted(key for key in first if first[key] != second.get(key)) == ["trainer.out_dir", "trainer.seed"]


def test_the_seed_alone_changes_the_data_order(gsm_dir, base_run):
    config = PromptResponseConfig(train_file=str(gsm_dir / "train.jsonl"), tokenizer=str(base_run / "tokenizer.model"),
                                  template="gsm", seq_len=384, batch_size=2)
    first_batches = {seed: [build_prompt_response(config, "train", ShardInfo(seed=seed)).next_batch()["input_ids"]
                            for _ in range(2)] for seed in (1, 2)}
    again = build_prompt_response(config, "train", ShardInfo(seed=1)).next_batch()["input_ids"]
    assert torch.equal(again, first_batches[1][0])
    assert not torch.equal(torch.cat(first_batches[1]), torch.cat(first_batches[2]))


def test_an_example_longer_than_the_rows_is_one_line(gsm_dir, base_run, tmp_path, capsys):
    run = tmp_path / "sft"
    code = run_cli(main_with_arguments, ["rlhf/sft_a.yaml", *sft_overrides(gsm_dir, base_run, run, "data.seq_len=16")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert f"{gsm_dir / 'train.jsonl'}:1: the example is" in errors[0] and "data.seq_len + 1 = 17" in errors[0]
    assert not run.exists()


def test_sft_from_a_base_run_trains_the_policy_on_response_tokens(sft_run, gsm_dir):
    final = sft_run / "step-000002"
    assert sorted(p.name for p in final.iterdir()) == [
        "model-policy.safetensors", "optimizer.pt", "recipe.yaml", "scheduler.json", "trainer_state.json"]
    assert (sft_run / "tokenizer.model").is_file()
    records = [json.loads(line) for line in (sft_run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r) and any("val_loss" in r for r in records)
    config = PromptResponseConfig(train_file=str(gsm_dir / "train.jsonl"), tokenizer=str(sft_run / "tokenizer.model"),
                                  template="gsm", seq_len=384, batch_size=2)
    first_batch = build_prompt_response(config, "train", ShardInfo(seed=1)).next_batch()
    response_tokens = int((first_batch["labels"] != IGNORE_INDEX).sum())
    assert records[0]["tokens_per_s"] * records[0]["step_time_s"] == pytest.approx(response_tokens, rel=1e-6)
