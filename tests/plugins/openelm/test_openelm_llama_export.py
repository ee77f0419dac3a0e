"""`toolkit-export --format hf-llama`: a Llama-shaped run (a SmolLM2 import and what is trained from
it) goes back to transformers' own Llama layout: the imported Llama's tensors come back bit for bit,
transformers reads the same config and tokenizer, and what is not a Llama is one `error:` line."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from plugins.openelm import export_cli
from plugins.openelm.import_llama import import_run
from plugins.openelm.llama import config_from_llama, import_llama
from tests.helpers import assert_one_line_error
from toolkit.cli.common import run_cli

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "A: 12 apples. two plus three"]


@pytest.fixture(scope="module")
def exported(llama_dir, tmp_path_factory):
    directory, reference = llama_dir
    root = tmp_path_factory.mktemp("llama_export")
    checkpoint = import_run(directory, root / "run")
    assert run_cli(export_cli.run, ["--format", "hf-llama", str(checkpoint.parent), "--out", str(root / "hf")]) == 0
    return root / "hf", directory, reference


def test_the_imported_llama_comes_back_bit_for_bit(exported):
    out, _, reference = exported
    assert sorted(path.name for path in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json"]  # no modelling code: transformers' own class
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True, attn_implementation="eager").eval()
    assert type(model).__name__ == "LlamaForCausalLM"
    ours, theirs = model.state_dict(), reference.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    tokens = torch.tensor([[5, 17, 3, 88, 42, 9, 61, 2]])
    with torch.no_grad():
        assert torch.equal(model(tokens).logits, reference(tokens).logits)  # both eager attention


def test_the_config_reads_back_as_the_imported_one(exported):
    out, directory, _ = exported
    _, imported = import_llama(directory)
    config = json.loads((out / "config.json").read_text())
    assert config_from_llama(config, out / "config.json") == imported
    assert (config["rope_parameters"]["rope_theta"], config["rms_norm_eps"]) == (5000.0, 1e-5)


def test_transformers_puts_the_end_token_before_a_text_as_training_does(exported):
    from plugins.lm.tokenizer import load_tokenizer

    out, directory, _ = exported
    ours = load_tokenizer(directory / "tokenizer.json")
    theirs = transformers.AutoTokenizer.from_pretrained(out, local_files_only=True)
    for text in TEXTS:
        assert theirs(text)["input_ids"] == [ours.eos_id, *ours.encode(text)]
        assert theirs.decode(theirs(text)["input_ids"], skip_special_tokens=True) == text


def test_a_model_that_is_not_a_llama_is_refused_before_anything_is_written(tmp_path, capsys):
    from tests.plugins.openelm.test_openelm_hf_export import save_run

    run, _ = save_run(tmp_path, [])  # OpenELM's layer-wise widths and Q/K norm
    code = run_cli(export_cli.run, ["--format", "hf-llama", str(run), "--out", str(tmp_path / "hf")])
    result = subprocess.CompletedProcess([], code, "", capsys.readouterr().err)
    assert_one_line_error(result, "the layers' widths differ", "--format hf")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]
