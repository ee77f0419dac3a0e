"""`toolkit-export --format hf` stands alone: the run's tokenizer (a SentencePiece model, or a
tokenizer.json as a SmolLM2 import keeps) travels with the weights, and the directory loads with it
in `toolkit-generate`, in `toolkit-eval`'s model loader and in transformers (`auto_map` + our own
modelling code), all giving the same greedy continuation."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import sentencepiece
import torch
import yaml

from helpers import assert_one_line_error
from toolkit.cli.common import run_cli
from toolkit.engine.checkpoint import CheckpointContent, save_checkpoint

from plugins.lm import generate_cli
from plugins.lm.loading import load_language_model
from plugins.lm.shard_writer import Document, write_text_shards
from plugins.lm.tokenizer import load_tokenizer, train_tokenizer
from plugins.openelm import export_cli
from plugins.openelm.config import OpenELMConfig
from plugins.openelm.hf_export import AUTO_MAP, export_files
from plugins.openelm.model import OpenELM

transformers = pytest.importorskip("transformers")

VOCAB = 320
MODEL = {"vocab_size": VOCAB, "max_context_length": 96, "num_layers": 3, "model_dim": 64, "head_dim": 16,
         "num_gqa_groups": 2, "ffn_dim_divisor": 32, "init_std": 0.2}  # a wide init: varied greedy tokens
PROMPTS = ["the fox said", "a"]
JSON_RUN_SEED = 1  # its random model's greedy continuations of PROMPTS vary (seed 0's repeat one token)
TEXT = ["the quick brown fox jumps over the lazy dog\n", "a bird sang 12 songs at dawn, then slept.\n",
        "ROMEO: what light through yonder window breaks?\n", "tokens, spaces  and\n\nnew lines\n"]


def make_run(root, tokenizer_bytes: bytes | None):
    """A run of a tiny random OpenELM keeping `tokenizer_bytes` as its tokenizer.model (None: none)."""
    odd = []
    if tokenizer_bytes is not None:
        processor = sentencepiece.SentencePieceProcessor(model_proto=tokenizer_bytes)
        odd = [i for i in range(VOCAB) if processor.is_byte(i) or processor.is_control(i) or processor.is_unknown(i)]
    run, model = save_run(root, odd)
    if tokenizer_bytes is not None:
        (run / "tokenizer.model").write_bytes(tokenizer_bytes)  # what training copies into a run
    return run, model


def save_run(root, odd: list[int], seed: int = 0):
    """The run directory of a tiny random OpenELM whose head rows `odd` are zero.

    Zero rows give logit 0, under the best piece's: no unknown, control or lone-byte pieces are
    generated, whose decoding (half a UTF-8 character) is not text to compare."""
    torch.manual_seed(seed)
    model = OpenELM(OpenELMConfig(**MODEL)).eval()
    with torch.no_grad():
        model.token_embeddings.weight[odd] = 0.0
    run = root / "run"
    run.mkdir()
    recipe = {"model": {"name": "openelm", **MODEL}, "data": {"name": "text_shards", "vocab_size": VOCAB}}
    save_checkpoint(run, CheckpointContent(step=2, model=model.state_dict(), optimizer={}, scheduler={},
                                           trainer_state={"step": 2}, recipe_yaml=yaml.safe_dump(recipe)),
                    keep_last=1)
    return run, model


def make_json_run(root):
    """A run keeping a byte-level BPE tokenizer.json and the tokenizer_config.json naming its end token,
    as a SmolLM2 import does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)  # kept ahead of the export's own
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(TEXT * 20, trainer)
    # The specials, and the pieces that are part of a character (a lone byte of a longer UTF-8 one).
    odd = [0, 1, *(i for i in range(backend.get_vocab_size()) if "\ufffd" in backend.decode([i]))]
    run, model = save_run(root, odd, seed=JSON_RUN_SEED)
    backend.save(str(run / "tokenizer.json"))
    (run / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return run, model


@pytest.fixture(scope="module", params=["sentencepiece", "tokenizer.json"])
def exported(request, tmp_path_factory):
    """(export directory, the toolkit model, the run) for a tiny random OpenELM and a real tokenizer."""
    root = tmp_path_factory.mktemp("hf_export")
    if request.param == "sentencepiece":
        shards = root / "shards"
        write_text_shards([Document(f"d{i}.txt", text * 20) for i, text in enumerate(TEXT)], shards, val_fraction=0)
        tokenizer_path = train_tokenizer(sorted(shards.glob("train-*.tar")), VOCAB, root / "tok.model", num_threads=1)
        run, model = make_run(root, tokenizer_path.read_bytes())
    else:
        run, model = make_json_run(root)
    assert run_cli(export_cli.run, ["--format", "hf", str(run), "--out", str(root / "hf")]) == 0
    return root / "hf", model, run


def run_tokenizer(run):
    return run / "tokenizer.model" if (run / "tokenizer.model").is_file() else run / "tokenizer.json"


def test_the_export_holds_code_tokenizer_and_normal_permissions(exported):
    out, _, run = exported
    assert sorted(path.name for path in out.iterdir()) == sorted(export_files(run_tokenizer(run)))
    assert [path.name for path in out.parent.iterdir() if path.name.startswith(".")] == []
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(path.stat().st_mode & 0o777) for path in out.iterdir()} == {oct(0o666 & ~umask)}
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["model_type"] == "openelm"
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    if run_tokenizer(run).name == "tokenizer.model":
        assert (out / "tokenizer.model").read_bytes() == (run / "tokenizer.model").read_bytes()
        assert (tokenizer_config["tokenizer_class"], tokenizer_config["bos_token"]) == ("LlamaTokenizer", "</s>")
    else:
        assert (tokenizer_config["tokenizer_class"], tokenizer_config["bos_token"]) == (
            "PreTrainedTokenizerFast", "<|endoftext|>")
        processor = json.loads((out / "tokenizer.json").read_text())["post_processor"]
        assert [step["type"] for step in processor["processors"]] == ["ByteLevel", "TemplateProcessing"]


def load_with_transformers(out):
    model = transformers.AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out, trust_remote_code=True, local_files_only=True)
    return model.eval(), tokenizer


def test_transformers_loads_the_same_model_and_tokenizer(exported):
    out, model, run = exported
    hf_model, hf_tokenizer = load_with_transformers(out)
    ours = load_tokenizer(out / run_tokenizer(run).name)
    assert ours.eos_id == load_tokenizer(run_tokenizer(run)).eos_id
    for text in TEXT + ["  leading spaces, ünïcödé ✓ and\ttabs\n"]:
        assert hf_tokenizer.encode(text, add_special_tokens=False) == ours.encode(text)
        assert hf_tokenizer.decode(ours.encode(text)) == text
    # A text starts after the end-of-text token, as documents do in training.
    assert hf_tokenizer("the fox")["input_ids"] == [ours.eos_id, *ours.encode("the fox")]
    ids = torch.tensor([[ours.eos_id, *ours.encode(TEXT[2])]])  # [1, T]
    with torch.no_grad():
        assert torch.allclose(hf_model(ids).logits, model(ids), atol=1e-5, rtol=0)


def test_greedy_continuations_agree_everywhere(exported, capsys):
    out, _, _ = exported
    hf_model, hf_tokenizer = load_with_transformers(out)
    batch = hf_tokenizer(PROMPTS, return_tensors="pt", padding=True)  # left-padded
    with torch.no_grad():
        generated = hf_model.generate(**batch, max_new_tokens=12, do_sample=False)
    new_ids = generated[:, batch["input_ids"].shape[1]:]
    assert len(set(new_ids[0].tolist())) > 2  # a varied continuation, not one repeated token
    theirs = hf_tokenizer.batch_decode(new_ids, skip_special_tokens=True)
    # toolkit-eval's model loader (the lm_eval evaluators' load_model) and its greedy decoding
    evaluated = load_language_model(str(out), "cpu").generate_until(PROMPTS, stop=[], max_new_tokens=12,
                                                                    batch_size=2)
    assert evaluated == theirs
    for prompt, continuation in zip(PROMPTS, theirs):
        code = run_cli(generate_cli.run, ["--model", str(out), "--prompt", prompt, "--temperature", "0",
                                          "--max-new-tokens", "12"])
        assert code == 0 and capsys.readouterr().out == prompt + continuation + "\n"


def test_a_run_without_its_tokenizer_is_refused_before_anything_is_written(tmp_path, capsys):
    run, _ = make_run(tmp_path, tokenizer_bytes=None)
    code = run_cli(export_cli.run, ["--format", "hf", str(run), "--out", str(tmp_path / "hf")])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert_one_line_error(result, f"{run}: no tokenizer.model or tokenizer.json", "data.tokenizer", "--tokenizer")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    code = run_cli(export_cli.run, ["--format", "hf", str(run), "--out", str(tmp_path / "hf"),
                                    "--tokenizer", str(tmp_path / "nope.model")])
    assert code == 2 and "--tokenizer" in capsys.readouterr().err and not (tmp_path / "hf").exists()


def test_a_run_with_a_broken_tokenizer_json_is_refused_before_anything_is_written(tmp_path, capsys):
    run, _ = save_run(tmp_path, [])
    (run / "tokenizer.json").write_text('{"model": "not one"}')
    code = run_cli(export_cli.run, ["--format", "hf", str(run), "--out", str(tmp_path / "hf")])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert_one_line_error(result, f"{run / 'tokenizer.json'}: not a Hugging Face tokenizer.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
