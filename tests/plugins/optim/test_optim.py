"""AdamW parameter groups and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from plugins.optim import (
    AdamWConfig,
    ConstantConfig,
    CosineConfig,
    build_adamw,
    build_constant,
    build_cosine,
    cosine_factor,
)


class TinyLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)  # weight decays, bias does not
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight  # tied: an embedding, so no decay


def test_no_decay_on_norms_biases_and_embeddings():
    model = TinyLM()
    optimizer = build_adamw(AdamWConfig(lr=1e-3, weight_decay=0.1, betas=[0.9, 0.95]), model)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p is model.proj.weight for p in decay["params"]] == [True]
    assert {id(p) for p in no_decay["params"]} == {
        id(model.embed.weight), id(model.norm.weight), id(model.norm.bias), id(model.proj.bias)}
    assert optimizer.defaults["betas"] == (0.9, 0.95)


def test_cosine_warmup_then_decay_to_the_floor():
    model = nn.Linear(2, 2)
    optimizer = build_adamw(AdamWConfig(lr=1e-2), model)
    scheduler = build_cosine(CosineConfig(warmup_steps=10, warmup_init_lr=1e-6, min_lr_ratio=0.1), optimizer, 110)
    rates = []
    for _ in range(111):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-6)
    assert rates[10] == pytest.approx(1e-2)
    assert rates[60] == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5))
    assert rates[110] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11]))
    assert all(a >= b for a, b in zip(rates[10:-1], rates[11:]))


@given(step=st.integers(0, 10_000), warmup=st.integers(0, 500), total=st.integers(1, 5000))
def test_cosine_factor_stays_between_floor_and_peak(step, warmup, total):
    config = CosineConfig(warmup_steps=warmup, warmup_init_lr=0.0, min_lr_ratio=0.1)
    factor = cosine_factor(step, 1.0, config, total)
    low = 0.0 if step < warmup else 0.1
    assert low - 1e-12 <= factor <= 1.0 + 1e-12 and math.isfinite(factor)


def test_constant_with_warmup():
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    scheduler = build_constant(ConstantConfig(warmup_steps=4), optimizer, 100)
    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_fused_adamw_by_default_where_it_runs_and_the_same_update():
    model = TinyLM()
    by_default = build_adamw(AdamWConfig(lr=1e-2, weight_decay=0.1), model)
    assert by_default.defaults["fused"] is True  # plain CPU tensors: the fused kernel
    assert build_adamw(AdamWConfig(fused=False), model).defaults["fused"] in (None, False)
    twin = TinyLM()
    twin.load_state_dict(model.state_dict())
    for_each = build_adamw(AdamWConfig(lr=1e-2, weight_decay=0.1, fused=False), twin)
    for network, optimizer in ((model, by_default), (twin, for_each)):
        network.proj(network.embed(torch.arange(10))).square().sum().backward()
        optimizer.step()
    for fused_parameter, plain_parameter in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(fused_parameter, plain_parameter)
