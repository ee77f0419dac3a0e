"""Sampling: greedy is deterministic, EOS stops a row, filters and seeds behave, context is cropped."""

from __future__ import annotations

import io

import torch
from torch import nn

from plugins.lm.generate_cli import TextStream
from plugins.lm.sampling import (
    filter_logits,
    generate,
    generate_text,
    max_context_length,
)

VOCAB = 11
EOS = 2


class CountingLM(nn.Module):
    """Predicts (token + 1) % VOCAB strongly; EOS follows token 6. Refuses inputs over its limit."""

    def __init__(self, limit: int = 1000):
        super().__init__()
        self.config = type("Config", (), {"max_context_length": limit})()
        self.bias = nn.Parameter(torch.zeros(VOCAB))

    def forward(self, input_ids):  # [B, S] -> [B, S, V]
        assert input_ids.shape[1] <= self.config.max_context_length
        following = (input_ids + 1) % VOCAB
        following = torch.where(input_ids == 6, torch.full_like(following, EOS), following)
        return nn.functional.one_hot(following, VOCAB).float() * 5.0 + self.bias


def test_greedy_is_deterministic_and_stops_at_eos():
    model = CountingLM()
    prompt = torch.tensor([[3], [0]])
    output = generate(model, prompt, max_new_tokens=8, eos_id=EOS)
    assert torch.equal(output, generate(model, prompt, max_new_tokens=8, eos_id=EOS))
    # Row 0: 3 4 5 6 EOS, then held at EOS while row 1 continues; row 1 counts 0 1 2 = EOS at step 2.
    assert output[0].tolist()[:5] == [3, 4, 5, 6, EOS] and set(output[0].tolist()[4:]) == {EOS}
    assert output[1].tolist()[:3] == [0, 1, 2]
    # Generation ends as soon as every row has produced EOS.
    assert output.shape[1] == 5
    assert generate(model, prompt, max_new_tokens=8).shape == (2, 9)  # no eos_id: full length


def test_sampling_is_reproducible_with_a_generator_and_top_k_1_is_greedy():
    model = CountingLM()
    prompt = torch.tensor([[7]])
    draw = lambda seed: generate(model, prompt, 12, temperature=5.0, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(1), draw(1))
    assert any(not torch.equal(draw(1), draw(seed)) for seed in range(2, 6))
    top1 = generate(model, prompt, 12, temperature=5.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(top1, generate(model, prompt, 12))


def test_filters_keep_the_top_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True, True]]
    probabilities = logits.softmax(-1)[0]  # about [.64, .24, .09, .03, .01]
    kept = ~torch.isinf(filter_logits(logits, top_p=0.8))
    assert kept.tolist() == [[True, True, False, False, False]]
    assert float(probabilities[:2].sum()) >= 0.8
    assert (~torch.isinf(filter_logits(logits, top_p=0.1))).sum() == 1  # the top token always stays


def test_context_is_cropped_to_the_model_limit():
    model = CountingLM(limit=4)
    assert max_context_length(model) == 4
    output = generate(model, torch.tensor([[0, 1, 3, 4, 5]]), max_new_tokens=3)
    assert output.shape == (1, 8)


class DigitTokenizer:
    """Token i <-> the character str(i) for i < 10 ('X' for 10); EOS is token 2."""

    eos_id = EOS

    def encode(self, text):
        return [10 if c == "X" else int(c) for c in text]

    def decode(self, ids):
        return "".join("X" if i == 10 else str(i) for i in ids)


def test_generate_text_without_a_cache_groups_equal_lengths_and_stops():
    model = CountingLM()
    tokenizer = DigitTokenizer()
    # 3 -> 4 5 6 EOS; 7 -> 8 9 X 0 1 EOS; "03" -> 4 5 6 EOS; "8" -> 9 X 0 1 EOS.
    assert generate_text(model, tokenizer, ["3", "7", "03", "8"], 10, batch_size=4) == ["456", "89X01", "456", "9X01"]
    assert generate_text(model, tokenizer, ["7", "8"], 10, stop=["0"]) == ["89X", "9X"]
    assert generate_text(model, tokenizer, ["7"], 3) == ["89X"]  # max_new_tokens reached first


def test_streaming_callback_and_custom_finish():
    model = CountingLM()
    seen = []
    output = generate(model, torch.tensor([[7]]), 10, on_tokens=lambda ids: seen.append(ids.tolist()),
                      is_finished=lambda new: (new == 10).any(dim=1))
    assert output[0].tolist() == [7, 8, 9, 10]  # stopped once the row produced token 10
    assert seen == [[8], [9], [10]]


def test_text_stream_writes_as_tokens_arrive_and_holds_incomplete_characters():
    class Pieces:
        eos_id = 0
        def decode(self, ids):  # token 3 then 4 is one character "é" (as byte-fallback pieces would be)
            table = {1: "ab", 2: "c", 3: "\ufffd", 4: "d"}
            text = "".join(table[i] for i in ids)
            return text.replace("\ufffdd", "é")

    out = io.StringIO()
    stream = TextStream(Pieces(), [1], out)
    assert out.getvalue() == "ab"
    stream.add(2)
    assert out.getvalue() == "abc"
    stream.add(3)
    assert out.getvalue() == "abc"  # held back: an incomplete character
    stream.add(4)
    assert out.getvalue() == "abcé"
    stream.add(0)
    stream.add(2)  # after EOS nothing more is written
    stream.finish([2, 3, 4])
    assert out.getvalue() == "abcé\n"
