"""Llama checkpoints imported into the toolkit's OpenELM (plugins/openelm/llama.py, import_llama.py):
same logits and greedy tokens as transformers, an ordinary run directory, one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch

from plugins.lm.sampling import generate
from plugins.openelm.config import OpenELMConfig
from plugins.openelm.convert import build_from_state, read_hf_weights
from plugins.openelm.import_llama import import_run, run
from plugins.openelm.llama import config_from_llama, import_llama, state_from_llama
from tests.plugins.openelm.llama_fixtures import VOCAB, tiny_llama_config
from tests.helpers import assert_error_output
from toolkit.checkpoint import load_model
from toolkit.cli.common import run_cli
from toolkit.errors import CheckpointError

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TOKENS = torch.tensor([[5, 17, 3, 88, 42, 9, 61, 2, 30, 71, 14], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])


def test_imported_llama_has_transformers_logits(llama_dir):
    directory, reference = llama_dir
    model, config = import_llama(directory)
    assert (config.num_query_heads, config.num_kv_heads, config.ffn_dim, config.normalize_qk) == (4, 2, 48, False)
    assert (config.rope_theta, config.norm_eps, config.tie_embeddings) == (5000.0, 1e-5, True)
    with torch.no_grad():
        ours, theirs = model(TOKENS), reference(input_ids=TOKENS, use_cache=False).logits
    assert ours.abs().max() > 1.0  # not two near-zero tensors
    assert (ours - theirs).abs().max() < 1e-5


def test_swapped_gate_and_up_would_fail_the_tolerance(llama_dir):
    """The tolerance above catches a wrong mapping: gate and up exchanged gives other logits."""
    directory, reference = llama_dir
    raw, source = read_hf_weights(directory)
    swapped = dict(raw)
    for index in range(2):
        gate, up = f"model.layers.{index}.mlp.gate_proj.weight", f"model.layers.{index}.mlp.up_proj.weight"
        swapped[gate], swapped[up] = raw[up], raw[gate]
    config = config_from_llama(json.loads((directory / "config.json").read_text()))
    wrong = build_from_state(config, state_from_llama(swapped, config, source), source)
    with torch.no_grad():
        difference = (wrong(TOKENS) - reference(input_ids=TOKENS, use_cache=False).logits).abs().max()
    assert difference > 1e-2


def test_kv_cache_greedy_generation_matches_transformers(llama_dir):
    directory, reference = llama_dir
    model, _ = import_llama(directory)
    prompt = TOKENS[:1, :6]
    ours = generate(model, prompt, max_new_tokens=8)
    theirs = reference.generate(prompt, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(prompt),
                                pad_token_id=0)
    assert ours.tolist() == theirs.tolist()


def test_untied_head_imports_and_matches(tmp_path):
    torch.manual_seed(1)
    reference = transformers.LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=False)).eval()
    reference.save_pretrained(tmp_path)
    model, config = import_llama(tmp_path)
    assert not config.tie_embeddings and model.lm_head is not None
    with torch.no_grad():
        assert (model(TOKENS) - reference(input_ids=TOKENS, use_cache=False).logits).abs().max() < 1e-5


def test_tokenizer_json_round_trips_and_matches_transformers(llama_dir):
    from plugins.lm.tokenizer import load_tokenizer

    directory, _ = llama_dir
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    assert tokenizer.vocab_size == len(fast) <= VOCAB
    text = "the cat sat on 12 mats.\nTwo plus three!"
    ids = tokenizer.encode(text)
    assert ids == fast.encode(text, add_special_tokens=False) and len(ids) > 5
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, "mat"]) == [ids, tokenizer.encode("mat")]
    assert tokenizer.eos_id == 2 and tokenizer.bos_id == -1  # tokenizer_config.json's eos_token <|im_end|>
    assert tokenizer.encode("<|im_start|>cat") == [1, *tokenizer.encode("cat")]  # specials in text are one id
    assert set(tokenizer.run_files()) == {"tokenizer.json", "tokenizer_config.json"}


def test_import_run_writes_an_ordinary_run_directory(llama_dir, tmp_path):
    directory, reference = llama_dir
    checkpoint = import_run(directory, tmp_path / "run")
    run_dir = checkpoint.parent
    assert sorted(p.name for p in run_dir.iterdir()) == ["import.json", "recipe.yaml", "step-000000",
                                                         "tokenizer.json", "tokenizer_config.json"]
    loaded = load_model(run_dir)
    assert isinstance(loaded.model.config, OpenELMConfig) and loaded.model.config.ffn_dim == 48
    with torch.no_grad():
        assert (loaded.model(TOKENS) - reference(input_ids=TOKENS, use_cache=False).logits).abs().max() < 1e-5


@pytest.mark.parametrize("change, fragment", [
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "is not supported: OpenELM uses plain RoPE"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn' is not supported"),
    ({"attention_bias": True}, "attention_bias is true; OpenELM has no biases"),
    ({"hidden_act": "gelu"}, "hidden_act is 'gelu'"),
])
def test_unsupported_config_is_one_line_and_writes_nothing(llama_dir, tmp_path, capsys, change, fragment):
    directory, _ = llama_dir
    source = tmp_path / "src"
    source.mkdir()
    config = json.loads((directory / "config.json").read_text())
    config.pop("rope_parameters", None)  # transformers 5 writes the theta here; the refusal reads either
    (source / "config.json").write_text(json.dumps({**config, **change}))
    code = run_cli(run, [str(source), "--out", str(tmp_path / "out")])
    assert_error_output(code, capsys.readouterr().err, f"{source / 'config.json'}: ", fragment)
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_existing_out_and_non_llama_sources_are_refused(llama_dir, tmp_path, capsys):
    directory, _ = llama_dir
    (tmp_path / "taken").mkdir()
    assert_error_output(run_cli(run, [str(directory), "--out", str(tmp_path / "taken")]), capsys.readouterr().err,
                        "taken: already exists")
    (tmp_path / "notes.txt").write_text("hello")
    assert_error_output(run_cli(run, [str(tmp_path / "notes.txt"), "--out", str(tmp_path / "out")]),
                        capsys.readouterr().err, "neither a Hugging Face Llama directory nor a GGUF file")
    with pytest.raises(CheckpointError, match="model_type is 'mistral'"):
        config_from_llama({"model_type": "mistral"})
    assert not (tmp_path / "out").exists() and not any(tmp_path.glob("taken/*"))


def test_an_imported_run_generates_and_soups_with_its_tokenizer_json(llama_dir, tmp_path):
    """The run keeps tokenizer.json + tokenizer_config.json: loading for generation finds them, a
    soup copies them, and a dataset built on them hands both to the next run."""
    from plugins.lm.json_tokenizer import JsonTokenizer
    from plugins.lm.loading import load_language_model
    from plugins.lm.tokenizer import load_tokenizer
    from plugins.rlhf.soup import make_soup

    directory, reference = llama_dir
    run_dir = import_run(directory, tmp_path / "run").parent
    language_model = load_language_model(str(run_dir), "cpu")
    assert isinstance(language_model.tokenizer, JsonTokenizer) and language_model.tokenizer.eos_id == 2
    soup = make_soup([str(run_dir), str(run_dir)], None, tmp_path / "soup").parent
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (soup / name).read_bytes() == (directory / name).read_bytes()
    assert load_tokenizer(soup / "tokenizer.json").run_files() == {
        "tokenizer.json": soup / "tokenizer.json", "tokenizer_config.json": soup / "tokenizer_config.json"}


def test_tokenizer_json_without_config_and_broken_files(llama_dir, tmp_path):
    from plugins.lm.tokenizer import load_tokenizer
    from toolkit.errors import DataError

    directory, _ = llama_dir
    alone = tmp_path / "alone" / "tokenizer.json"
    alone.parent.mkdir()
    alone.write_bytes((directory / "tokenizer.json").read_bytes())
    assert load_tokenizer(alone).eos_id == 0  # no tokenizer_config.json: the usual <|endoftext|>
    assert load_tokenizer(alone).run_files() == {"tokenizer.json": alone}
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DataError, match="not a Hugging Face tokenizer.json"):
        load_tokenizer(tmp_path / "broken.json")
    (alone.parent / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<|nope|>"}}))
    with pytest.raises(DataError, match="eos_token '<|nope|>' is not in tokenizer.json's vocabulary"):
        load_tokenizer(alone)
