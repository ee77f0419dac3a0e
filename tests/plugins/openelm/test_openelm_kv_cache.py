"""KV-cached decoding equals full recomputation: per-layer head counts, left padding, RoPE offsets."""

from __future__ import annotations

import pytest
import torch

from plugins.lm.sampling import generate, generate_text, supports_kv_cache
from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM

VOCAB = 97


def make_model(**overrides) -> OpenELM:
    torch.manual_seed(0)
    settings = {"vocab_size": VOCAB, "max_context_length": 64, "num_layers": 4, "model_dim": 64, "head_dim": 16,
                "num_gqa_groups": 2, "qkv_multipliers": [0.5, 1.0], "ffn_multipliers": [0.5, 2.0], "ffn_dim_divisor": 32}
    settings.update(overrides)
    model = OpenELM(OpenELMConfig(**settings)).eval()
    with torch.no_grad():  # larger weights than the init, so logits are far apart and every path matters
        for name, parameter in model.named_parameters():
            if not name.endswith("norm.weight"):
                parameter.normal_(0.0, 0.5)
    return model


def test_cache_buffers_follow_each_layers_kv_heads():
    model = make_model()
    kv_heads = [layer.attn.num_kv_heads for layer in model.layers]
    assert len(set(kv_heads)) > 1  # layer-wise scaling gives the layers different head counts
    cache = model.make_cache(batch_size=3, max_length=20)
    assert [tuple(k.shape) for k in cache.keys] == [(3, heads, 20, 16) for heads in kv_heads]
    assert [v.shape for v in cache.values] == [k.shape for k in cache.keys]
    assert supports_kv_cache(model)


def test_prefill_and_steps_give_the_full_forward_logits():
    model = make_model()
    tokens = torch.randint(0, VOCAB, (2, 12))
    full = model(tokens)
    cache = model.make_cache(2, 12)
    pieces = [model.forward_step(tokens[:, :5], cache), model.forward_step(tokens[:, 5:9], cache)]
    pieces += [model.forward_step(tokens[:, i:i + 1], cache) for i in range(9, 12)]
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-4)
    assert cache.length == 12
    with pytest.raises(ValueError, match="holds 12 positions"):
        model.forward_step(tokens[:, :1], cache)


@pytest.mark.parametrize("normalize_qk", [True, False])
def test_cached_greedy_equals_uncached_for_one_prompt(normalize_qk):
    model = make_model(normalize_qk=normalize_qk)
    prompt = torch.randint(0, VOCAB, (1, 7))
    cached = generate(model, prompt, max_new_tokens=20)
    uncached = generate(model, prompt, max_new_tokens=20, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, 7:].tolist())) > 3  # a real continuation, not one repeated token


def test_left_padded_batch_equals_each_prompt_alone():
    model = make_model()
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, VOCAB, (length,), generator=generator).tolist() for length in (3, 9, 6, 1)]
    width, new = max(map(len, prompts)), 15
    input_ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    input_ids[mask == 0] = 5  # padding ids must not matter
    batched = generate(model, input_ids, max_new_tokens=new, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        alone = generate(model, torch.tensor([prompt]), max_new_tokens=new, use_cache=False)
        assert batched[row, width:].tolist() == alone[0, len(prompt):].tolist(), f"row {row}"
    assert len({tuple(row) for row in batched[:, width:].tolist()}) == len(prompts)  # distinct continuations
    # The padded prefill's logits for each row's real tokens equal that prompt's own forward.
    cache = model.make_cache(len(prompts), width)
    logits = model.forward_step(input_ids, cache, attention_mask=mask)
    for row, prompt in enumerate(prompts):
        assert torch.allclose(logits[row, width - len(prompt):], model(torch.tensor([prompt]))[0], atol=1e-4)


def test_padding_without_a_cache_is_refused():
    model = make_model()
    mask = torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, torch.tensor([[0, 4, 5]]), 3, attention_mask=mask, use_cache=False)


def test_sampling_with_the_cache_matches_the_uncached_draws():
    model = make_model()
    prompt = torch.randint(0, VOCAB, (2, 5))
    for top_k, top_p in ((None, None), (5, None), (None, 0.9)):
        draws = [generate(model, prompt, 16, temperature=0.8, top_k=top_k, top_p=top_p,
                          generator=torch.Generator().manual_seed(7), use_cache=use_cache) for use_cache in (True, False)]
        assert torch.equal(*draws)


class CharTokenizer:
    """One token per character of 'a'..; id 0 is EOS."""

    eos_id = 0

    def encode(self, text):
        return [ord(c) - 96 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 96) for i in ids)


def test_generate_text_batches_and_cuts_at_stop_strings_and_eos():
    model = make_model(vocab_size=27)
    tokenizer = CharTokenizer()
    prompts = ["abc", "hello", "z", "qrstuvw", "mm"]
    alone = [generate_text(model, tokenizer, [p], 12, batch_size=1)[0] for p in prompts]
    assert generate_text(model, tokenizer, prompts, 12, batch_size=3) == alone
    for text, prompt in zip(alone, prompts):
        expected = generate(model, torch.tensor([tokenizer.encode(prompt)]), 12, use_cache=False)[0, len(prompt):]
        ids = expected.tolist()
        ids = ids[:ids.index(0)] if 0 in ids else ids
        assert text == tokenizer.decode(ids)
    # A stop string: cut before its first occurrence (choose one that occurs in the first output).
    assert len(alone[0]) >= 4
    stop = alone[0][2:4]
    cut = generate_text(model, tokenizer, prompts, 12, stop=[stop, "zzzz"], batch_size=2)
    assert cut[0] == alone[0][:alone[0].index(stop)]
    for text, full in zip(cut, alone):
        assert full.startswith(text) and stop not in text
