"""The oracle's compiled per-token cross-entropy equals PyTorch's on the same logits, in bfloat16
and float32, with ignored targets and logits spread wide enough to reach the exponential's clamp;
a wrong target fails the same tolerance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from plugins.duo.token_loss import token_cross_entropy

pytest.importorskip("numba")  # without it the function is F.cross_entropy itself
IGNORE = -100


def reference(logits, targets):
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="none")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 8.0, 300.0])  # 300: most terms fall below 2^-125 and are clamped
def test_equals_torch_cross_entropy(dtype, scale):
    generator = torch.Generator().manual_seed(int(scale))
    logits = (torch.randn(200, 4096, generator=generator) * scale).to(dtype)  # 200: not a multiple of a task
    targets = torch.randint(0, 4096, (200,), generator=generator)
    targets[[0, 17, 199]] = IGNORE
    losses = token_cross_entropy(logits, targets, IGNORE)
    assert losses.dtype == torch.float32 and losses.shape == (200,)
    torch.testing.assert_close(losses, reference(logits, targets), rtol=1e-6, atol=1e-5 * max(1.0, scale / 8))
    assert losses[17] == 0.0


def test_a_wrong_target_fails_the_tolerance():
    logits = torch.randn(64, 4096, generator=torch.Generator().manual_seed(1)).bfloat16()
    targets = torch.arange(64)
    shifted = token_cross_entropy(logits, targets + 1, IGNORE)
    assert not torch.allclose(shifted, reference(logits, targets), rtol=1e-6, atol=1e-5)


def test_targets_outside_the_vocabulary_are_refused():
    with pytest.raises(IndexError, match=r"targets must lie in \[0, 16\) or equal -100"):
        token_cross_entropy(torch.zeros(2, 16), torch.tensor([3, 16]), IGNORE)
