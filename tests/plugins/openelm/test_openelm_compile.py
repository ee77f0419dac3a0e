"""`torch.compile` of OpenELM: one graph for the whole model, and the eager model's numbers.

The hand-written kernels step aside while compiling (their `out=` writes would split the graph at
every block, and OpenELM's per-layer widths would then recompile each piece per layer).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM


@pytest.mark.slow
def test_compiled_model_is_one_graph_and_matches_eager():
    torch.manual_seed(0)
    config = OpenELMConfig(vocab_size=97, max_context_length=32, num_layers=3, model_dim=64, head_dim=16,
                           num_gqa_groups=2, ffn_dim_divisor=32)
    eager = OpenELM(config)
    compiled_copy = OpenELM(config)
    compiled_copy.load_state_dict(eager.state_dict())
    tokens = torch.randint(0, 97, (2, 24))

    def loss_and_grads(model, forward):
        logits = forward(tokens[:, :-1])  # [B, S, V]
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        loss.backward()
        return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = torch.compile(compiled_copy, dynamic=False)
    compiled_loss, compiled_grads = loss_and_grads(compiled_copy, compiled)
    eager_loss, eager_grads = loss_and_grads(eager, eager)

    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for name, gradient in eager_grads.items():
        torch.testing.assert_close(compiled_grads[name], gradient, rtol=1e-4, atol=1e-5, msg=name)
