"""toolkit-bench's arithmetic: FLOPs per token against PyTorch's own FLOP counter, throughput with
the warm-up left out, MFU against per-device peak x world size, Token/$ and Loss/$."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM
from toolkit.bench import measure


def tiny_openelm(attention: str) -> OpenELM:
    torch.manual_seed(0)
    # Layer-wise widths and GQA on, so the per-layer attention term and grouped heads are both exercised.
    return OpenELM(OpenELMConfig(vocab_size=96, max_context_length=64, num_layers=3, model_dim=64, head_dim=16,
                                 num_gqa_groups=2, ffn_dim_divisor=16, attention=attention))


def counted_training_flops(model: OpenELM, batch: int, seq: int) -> int:
    """Matmul FLOPs of one forward and backward, as torch.utils.flop_counter counts them."""
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        logits = model(ids)  # [B, S, V]
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("attention", ["matmul", "sdpa_math"])
def test_flops_per_token_matches_pytorchs_flop_counter(attention):
    model = tiny_openelm(attention)
    batch, seq = 2, 48
    counted = counted_training_flops(model, batch, seq)
    formula = model.flops_per_token(seq) * batch * seq
    # The PaLM formula counts the norm scales as if they were matmul weights (6 FLOPs each per
    # token); they are the only difference, to the FLOP.
    norm_scales = sum(p.numel() for name, p in model.named_parameters() if name.endswith("norm.weight"))
    assert counted == formula - 6 * norm_scales * batch * seq
    assert counted == pytest.approx(formula, rel=5e-3)  # 0.4% at width 64; ~0.01% at 100M
    # The attention term is 12 x heads x head width x seq per layer: with a wrong factor (6, as
    # if causal attention skipped half the scores) or without it, the count is far off.
    heads = sum(layer.attn.num_query_heads for layer in model.layers)
    attention_flops = 12 * heads * model.config.head_dim * seq * batch * seq
    assert abs(counted - (formula - attention_flops / 2)) / counted > 0.05


def test_throughput_leaves_out_the_warm_up_and_keeps_each_window():
    seconds = [9.0, 5.0, 1.0, 1.0, 2.0, 2.0, 0.5, 0.5]  # two slow warm-up steps, then windows of 2
    tokens = [100.0] * 8
    assert measure.window_throughputs(seconds, tokens, warmup=2, steps=2, repeats=3) == [100.0, 50.0, 200.0]
    with pytest.raises(ValueError, match="8 steps measured, 9 needed"):
        measure.window_throughputs(seconds, tokens, warmup=3, steps=2, repeats=3)
    summary = measure.spread([100.0, 50.0, 200.0])
    assert (summary.mean, summary.low, summary.high) == (pytest.approx(350 / 3), 50.0, 200.0)
    assert summary.std == pytest.approx(math.sqrt(((100 - 350 / 3) ** 2 + (50 - 350 / 3) ** 2 + (200 - 350 / 3) ** 2) / 2))
    assert measure.spread([7.0]).std == 0.0


def test_mfu_divides_by_the_peak_of_every_device():
    # 1000 tokens/s over 2 devices at 6e6 FLOPs per token: 6e9 FLOP/s against 2 x 1e10.
    assert measure.model_flops_utilisation(6e6, 1000.0, 1e10, world_size=2) == pytest.approx(0.3)
    assert measure.model_flops_utilisation(6e6, 1000.0, 1e10, world_size=1) == pytest.approx(0.6)


def test_token_and_loss_per_dollar():
    # 2 devices at $1.80 per hour each: $0.001 per second; 500 tokens/s -> 500,000 tokens per $.
    assert measure.dollars_per_second(1.8, 2) == pytest.approx(0.001)
    assert measure.tokens_per_dollar(500.0, 1.8, 2) == pytest.approx(5e5)
    # loss 4.0 after a budget of 1,000 tokens: 0.004 loss per token x 500 tokens/s / $0.001 per s.
    assert measure.loss_per_dollar(4.0, 1000, 500.0, 1.8, 2) == pytest.approx(2000.0)
    assert measure.steps_for_budget(1000, 300) == 4
    assert measure.steps_for_budget(0, 300) == 0


def test_a_frozen_model_counts_no_weight_gradients():
    """Only layer 0's first norm trains (a router trained on a frozen model, in miniature): the
    gradient still flows through every matmul, but no weight gradient is computed."""
    model = tiny_openelm("sdpa_math")
    trainable = model.layers[0].attn_norm.weight
    for parameter in model.parameters():
        parameter.requires_grad_(parameter is trainable)
    batch, seq = 2, 48
    counted = counted_training_flops(model, batch, seq)
    formula = model.flops_per_token(seq) * batch * seq
    frozen_scales = sum(p.numel() for name, p in model.named_parameters()
                        if name.endswith("norm.weight") and p is not trainable)
    assert counted == formula - (4 * frozen_scales + 6 * trainable.numel()) * batch * seq
    everything = tiny_openelm("sdpa_math").flops_per_token(seq)  # 6 N + attention
    frozen = sum(p.numel() for p in model.matmul_parameters()) - trainable.numel()
    assert everything - model.flops_per_token(seq) == 2 * frozen  # 4 per frozen weight, not 6
