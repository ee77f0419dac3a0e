"""A tiny random Llama saved by transformers with a byte-level BPE tokenizer.json: the source the
Llama import and export tests share (the `llama_dir` fixture in conftest.py)."""

from __future__ import annotations

import json

import torch

VOCAB = 300  # byte-level BPE: 256 byte tokens, 3 specials, a few merges


def tiny_llama_config(**changes):
    """A transformers.LlamaConfig of the tiny shape, with `changes`."""
    import transformers

    values = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=5000.0,
                  tie_word_embeddings=True, attn_implementation="eager")
    values.update(changes)
    return transformers.LlamaConfig(**values)


def write_tokenizer(directory) -> None:
    """A small byte-level BPE tokenizer.json with ChatML-style specials, and the config naming its EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(["the cat sat on the mat", "two plus three is five", "A: 12 apples."] * 20, trainer)
    backend.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "bos_token": None}))


def make_llama_dir(directory):
    """A random tiny LlamaForCausalLM saved by transformers (safetensors) into `directory`, with a
    tokenizer.json; returns (directory, the model)."""
    import transformers

    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(tiny_llama_config()).eval()
    with torch.no_grad():  # larger weights and uneven norm scales, so every mapping matters in the logits
        for name, parameter in model.named_parameters():
            parameter.copy_(torch.rand_like(parameter) + 0.5 if name.endswith("norm.weight")
                            else torch.randn_like(parameter) * 0.1)
    model.save_pretrained(directory)
    write_tokenizer(directory)
    return directory, model
