"""Sampling: greedy is deterministic, EOS stops a row, filters and seeds behave, context is cropped."""

from __future__ import annotations

import torch
from torch import nn

from plugins.lm.sampling import filter_logits, generate, max_context_length

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
