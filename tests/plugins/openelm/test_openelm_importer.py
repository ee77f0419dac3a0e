"""The `openelm-hf` importer: Hugging Face OpenELM directories load as the toolkit's OpenELM through
the lm plugin's loader, which knows nothing of OpenELM itself."""

from __future__ import annotations

import json

import pytest
import torch

from plugins.lm.language_model import LanguageModel
from plugins.lm.loading import load_language_model
from plugins.openelm.config import OpenELMConfig
from plugins.openelm.convert import write_hf
from plugins.openelm.importer import HFOpenELMImporter
from plugins.openelm.model import OpenELM
from toolkit.errors import CheckpointError
from toolkit.importers import importer_for

TINY = dict(vocab_size=64, max_context_length=32, num_layers=2, model_dim=32, head_dim=8, num_gqa_groups=1,
            ffn_dim_divisor=8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny random OpenELM in the HF layout, and a SentencePiece tokenizer to read it with."""
    import sentencepiece

    root = tmp_path_factory.mktemp("openelm_hf")
    torch.manual_seed(0)
    model = OpenELM(OpenELMConfig(**TINY)).eval()
    out = write_hf(model.config, model.state_dict(), root / "hf")
    lines = ["the cat sat on the mat", "a dog ran after the red ball", "numbers one two three"] * 30
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(root / "sp"),
                                             vocab_size=40, model_type="bpe", minloglevel=2)
    return model, out, root / "sp.model"


def test_recognises_openelm_configs_only(tmp_path, exported):
    importer = HFOpenELMImporter()
    assert importer.recognizes(exported[1])
    for name, content in {"llama": '{"model_type": "llama"}', "broken": "{not json", "list": "[1, 2]",
                          "exported_keys": '{"num_transformer_layers": 2}'}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(content)
    assert not importer.recognizes(tmp_path / "llama")
    assert not importer.recognizes(tmp_path / "broken") and not importer.recognizes(tmp_path / "list")
    assert importer.recognizes(tmp_path / "exported_keys")
    assert not importer.recognizes(tmp_path / "missing")


def test_the_plugin_registers_it_and_the_lm_loader_uses_it(exported):
    model, directory, tokenizer = exported
    assert importer_for(directory).name == "openelm-hf"
    loaded = load_language_model(str(directory), "cpu", str(tokenizer))
    assert isinstance(loaded, LanguageModel) and isinstance(loaded.model, OpenELM)
    tokens = torch.randint(0, TINY["vocab_size"], (1, 7))
    assert torch.equal(loaded.model(tokens), model(tokens))
    assert loaded.tokenizer.path == tokenizer


def test_without_a_tokenizer_it_is_refused_before_the_weights_are_read(exported):
    with pytest.raises(CheckpointError) as caught:
        load_language_model(str(exported[1]), "cpu")
    assert "no tokenizer.model or tokenizer.json beside the weights" in caught.value.message and "openelm-hf" in caught.value.message
    assert "LLaMA" not in caught.value.message and "toolkit run" in caught.value.hint
    assert "--tokenizer" in caught.value.hint
    config = json.loads((exported[1] / "config.json").read_text())
    assert config["model_type"] == "openelm"
