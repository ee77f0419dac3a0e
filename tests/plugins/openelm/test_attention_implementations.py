"""`model.attention` picks the attention kernel (toolkit-bench's attention axis): every kernel that
runs computes the same function and gradients; one that cannot run on the device says so."""

from __future__ import annotations

import pytest
import torch

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM


def loss_and_gradients(attention: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = OpenELM(OpenELMConfig(vocab_size=64, max_context_length=32, num_layers=2, model_dim=64, head_dim=16,
                                  num_gqa_groups=2, ffn_dim_divisor=16, attention=attention))
    ids = torch.randint(0, 64, (2, 24), generator=torch.Generator().manual_seed(1))
    logits = model(ids)  # [B, S, V]
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def test_every_kernel_that_runs_on_cpu_computes_the_same_loss_and_gradients():
    reference_loss, reference_gradients = loss_and_gradients("sdpa")
    for attention in ("sdpa_flash", "sdpa_math", "matmul"):
        loss, gradients = loss_and_gradients(attention)
        torch.testing.assert_close(loss, reference_loss, rtol=1e-5, atol=1e-6, msg=attention)
        for name, gradient in gradients.items():
            torch.testing.assert_close(gradient, reference_gradients[name], rtol=1e-4, atol=1e-6,
                                       msg=f"{attention}: {name}")


def test_a_kernel_the_device_lacks_is_an_error_not_a_silent_fallback():
    with pytest.raises(RuntimeError, match="No viable backend"):
        loss_and_gradients("sdpa_efficient")  # the memory-efficient kernel is CUDA-only


def test_an_unknown_kernel_is_refused_when_the_config_is_built():
    with pytest.raises(ValueError, match="attention must be one of sdpa, sdpa_flash, sdpa_efficient, sdpa_math, matmul"):
        OpenELMConfig(attention="flash")
