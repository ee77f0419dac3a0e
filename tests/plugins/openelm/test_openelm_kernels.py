"""The hand-written backward passes of kernels.py against plain autograd on the reference formulas."""

from __future__ import annotations

import pytest
import torch

from plugins.openelm import kernels
from plugins.openelm.model import rope_tables


def _grads(function, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = function(*leaves)
    wanted = [t for t in leaves if t.requires_grad]
    return out.detach(), torch.autograd.grad(out, wanted, grad_out)


def test_rms_norm_matches_reference_in_float64():
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: kernels.rms_norm(a, w, 1e-6), (x, weight))
    grad = torch.randn(3, 5, 16, dtype=torch.float64)
    ours = _grads(lambda a, w: kernels.rms_norm(a, w, 1e-6), (x, weight), grad)
    reference = _grads(lambda a, w: kernels.rms_norm_reference(a, w, 1e-6), (x, weight), grad)
    torch.testing.assert_close(ours, reference)


def test_rms_norm_weight_without_grad_and_bf16():
    x = torch.randn(4, 8, 32, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.rand(32)  # float32 scale with a bf16 input, as under autocast
    out = kernels.rms_norm(x, weight, 1e-6)
    assert out.dtype == torch.bfloat16
    expected = kernels.rms_norm_reference(x.float(), weight, 1e-6)
    torch.testing.assert_close(out.float(), expected, atol=2e-2, rtol=2e-2)
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_rope_matches_reference_on_strided_input():
    cos, sin = rope_tables(7, 8, 10000.0)
    cos, sin = cos.unsqueeze(1).double(), sin.unsqueeze(1).double()
    fused = torch.randn(2, 7, 5, 8, dtype=torch.float64, requires_grad=True)  # [B, S, heads, E]
    view = lambda t: t[:, :, 1:4]  # a strided slice of the heads, like q inside qkv
    assert torch.autograd.gradcheck(lambda t: kernels.apply_rope(view(t), cos, sin), (fused,))
    grad = torch.randn(2, 7, 3, 8, dtype=torch.float64)
    ours = _grads(lambda t: kernels.apply_rope(view(t), cos, sin), (fused,), grad)
    reference = _grads(lambda t: kernels.rope_reference(view(t), cos, sin), (fused,), grad)
    torch.testing.assert_close(ours, reference)


def test_rope_preserves_norms_and_position_zero():
    cos, sin = rope_tables(6, 16, 10000.0)
    x = torch.randn(2, 6, 3, 16)
    rotated = kernels.apply_rope(x, cos.unsqueeze(1), sin.unsqueeze(1))
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(rotated[:, 0], x[:, 0])  # angle 0 at position 0


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_tables(32, 16, 10000.0)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    q, k = torch.randn(16), torch.randn(16)

    def score(query_position, key_position):
        qs = q.expand(1, 32, 1, 16)
        ks = k.expand(1, 32, 1, 16)
        rq = kernels.apply_rope(qs, cos, sin)[0, query_position, 0]
        rk = kernels.apply_rope(ks, cos, sin)[0, key_position, 0]
        return torch.dot(rq, rk)

    torch.testing.assert_close(score(5, 2), score(20, 17), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(score(9, 9), score(0, 0), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_swiglu_matches_reference(dtype):
    fused = torch.randn(3, 4, 2 * 12, dtype=dtype, requires_grad=True)
    grad = torch.randn(3, 4, 12, dtype=dtype)
    ours = _grads(kernels.swiglu, (fused,), grad)
    reference = _grads(kernels.swiglu_reference, (fused,), grad)
    tolerance = {} if dtype == torch.float64 else {"atol": 3e-2, "rtol": 3e-2}
    torch.testing.assert_close(ours, reference, **tolerance)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(kernels.swiglu, (fused,))


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2), (4, 1)])
def test_matmul_causal_attention_matches_sdpa(heads, kv_heads):
    q = torch.randn(2, heads, 9, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, kv_heads, 9, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, kv_heads, 9, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.matmul_causal_attention, (q, k, v))
    grad = torch.randn(2, heads, 9, 8, dtype=torch.float64)

    def sdpa(a, b, c):
        return torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=heads != kv_heads)

    torch.testing.assert_close(
        _grads(kernels.matmul_causal_attention, (q, k, v), grad), _grads(sdpa, (q, k, v), grad)
    )


def test_matmul_causal_attention_in_fp32_matches_sdpa_tightly():
    q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(kernels.matmul_causal_attention(q, k, v), reference, atol=1e-5, rtol=1e-5)
    wrong = kernels.matmul_causal_attention(q, k, v.roll(1, dims=2))  # values one position off
    assert not torch.allclose(wrong, reference, atol=1e-5, rtol=1e-5)


def test_matmul_causal_attention_in_bf16_under_autocast():
    q, k, v = (torch.randn(2, 4, 16, 8, requires_grad=True) for _ in range(3))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = kernels.matmul_causal_attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16

    def close_in_bf16(candidate):
        # bf16 keeps 8 significant bits: 2% of the output's scale holds its rounding; an all-zero,
        # wrongly scaled or position-shuffled output misses it by far.
        return (candidate.float() - reference).abs().max() <= 2e-2 * reference.abs().max()

    assert close_in_bf16(out)
    for wrong in (torch.zeros_like(reference), 0.9 * reference, reference.flip(2)):
        assert not close_in_bf16(wrong)
    out.float().sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
