"""Pieces of the OpenELM block with hand-written backward passes, for CPU training speed.

Autograd's versions of RMSNorm, rotate-half RoPE and SwiGLU run one kernel and allocate one
temporary per primitive, forward and backward. On CPU, where these memory-bound passes cost as
much as the matmuls around them, doing each in a few passes that write straight into their
outputs makes a training step markedly faster. The causal attention here (batched matmuls, for
short sequences in bf16) exists because PyTorch's CPU flash-attention backward is slow in bf16.
Each function is checked against its plain formula (`*_reference`, or SDPA) in the tests.

Under `torch.compile` the plain formulas are used instead: the compiler fuses them itself, and
the in-place `out=` writes here would split its graph at every block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- RMSNorm: y = x * rsqrt(mean(x^2) + eps) * w, over the last dimension -------------------------


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, out_dtype: torch.dtype) -> torch.Tensor:
        # One reduction pass for the norms, one pass for the output (weight applied in place).
        accumulate = torch.promote_types(x.dtype, torch.float32)  # float32 at least
        rms = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=accumulate)  # [..., 1]
        rstd = rms.square_().div_(x.shape[-1]).add_(eps).rsqrt_()  # [..., 1]
        out = torch.mul(x, rstd.to(x.dtype)).mul_(weight)
        ctx.save_for_backward(x, weight, rstd)
        return out if out.dtype == out_dtype else out.to(out_dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        dim = x.shape[-1]
        rows = x.numel() // dim
        rstd = rstd.to(x.dtype)
        grad_times_x = (grad_out * x).reshape(rows, dim)  # [N, D]: the one full product both grads need
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad_times_x.t().mv(rstd.reshape(rows))  # sum_n g * x * rstd  [D]
        grad_x = None
        if ctx.needs_input_grad[0]:
            # y = x * r * w with r = rsqrt(mean(x^2) + eps):
            # dx = r * g * w - x * r^3 * sum(g * w * x) / D
            correction = grad_times_x.mv(weight).reshape(rstd.shape).mul_(rstd.pow(3)).div_(dim)  # [..., 1]
            grad_x = (grad_out * weight).mul_(rstd).addcmul_(x, correction, value=-1)
        return grad_x, grad_weight, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension, computed in x's dtype with `weight` cast to it.

    Under autocast the result comes out in the autocast dtype, as every consumer of a norm here
    is a matmul that autocast would cast it for; the backward then takes the half-precision
    gradient as it is, without a cast node of its own.
    """
    out_dtype = x.dtype
    if torch.is_autocast_enabled(x.device.type):
        out_dtype = torch.get_autocast_dtype(x.device.type)
    if torch.compiler.is_compiling():
        return rms_norm_reference(x, weight.to(x.dtype), eps).to(out_dtype)
    return _RMSNorm.apply(x, weight.to(x.dtype), eps, out_dtype)


# --- rotate-half RoPE: pairs (x[j], x[j + E/2]) rotated by position * frequency_j -----------------


def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


def _rotate_into(out: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """out = rotation of x by the angles whose cos/sin are given (pass -sin to rotate back)."""
    first, second = x.chunk(2, dim=-1)
    out_first, out_second = out.chunk(2, dim=-1)
    torch.mul(first, cos, out=out_first)
    out_first.addcmul_(second, sin, value=-1)
    torch.mul(second, cos, out=out_second)
    out_second.addcmul_(first, sin)
    return out


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        batch, seq, heads, head_dim = x.shape
        # Written heads-first, so the attention's transpose to [B, heads, S, E] is contiguous.
        out = torch.empty((batch, heads, seq, head_dim), dtype=x.dtype, device=x.device).transpose(1, 2)
        return _rotate_into(out, x, cos, sin)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        cos, sin = ctx.saved_tensors
        # A rotation's transpose is the rotation by the opposite angle.
        grad_x = torch.empty(grad_out.shape, dtype=grad_out.dtype, device=grad_out.device)
        return _rotate_into(grad_x, grad_out, cos, -sin), None, None


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE. x [B, S, heads, E] (any strides); cos, sin [S, 1, E/2] in x's dtype.

    The result has x's shape with heads-first memory: `.transpose(1, 2)` of it is contiguous.
    """
    if torch.compiler.is_compiling():
        return rope_reference(x, cos, sin)
    return _RoPE.apply(x, cos, sin)


# --- SwiGLU on a fused projection: silu(h[..., :F]) * h[..., F:] ---------------------------------


def swiglu_reference(fused: torch.Tensor) -> torch.Tensor:
    gate, up = fused.chunk(2, dim=-1)
    return F.silu(gate) * up


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, fused: torch.Tensor) -> torch.Tensor:
        gate, up = fused.chunk(2, dim=-1)  # [..., F] each, strided views of [..., 2F]
        activated = F.silu(gate)  # [..., F]
        ctx.save_for_backward(fused, activated)
        return activated * up

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        fused, activated = ctx.saved_tensors
        gate, up = fused.chunk(2, dim=-1)
        # Both halves of the gradient are written in place: no concatenation afterwards.
        grad_fused = torch.empty(fused.shape, dtype=grad_out.dtype, device=fused.device)  # [..., 2F]
        grad_gate, grad_up = grad_fused.chunk(2, dim=-1)
        torch.mul(grad_out, activated, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad_out * up, gate, grad_input=grad_gate)
        return grad_fused


def swiglu(fused: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up for fused [..., 2F] = [gate | up]; returns [..., F]."""
    if torch.compiler.is_compiling():
        return swiglu_reference(fused)
    return _SwiGLU.apply(fused)


def gated_activation(fused: torch.Tensor, activation: str, shift: float = 0.0, inference: bool = False) -> torch.Tensor:
    """act(gate) * up for fused [..., 2F] = [gate | up] -> [..., F] (config.ffn_activation).

    silu is SwiGLU (the hand-written kernel when training, the plain formula at inference);
    relu and shifted_relu, relu(gate - shift), give exact zeros wherever the gate is at or below
    the shift, which is what sparse decoding skips.
    """
    if activation == "silu":
        return swiglu_reference(fused) if inference else swiglu(fused)
    gate, up = fused.chunk(2, dim=-1)  # [..., F] each
    if shift:
        gate = gate - shift
    return F.relu(gate) * up


# --- causal attention by batched matmuls, for short sequences in bf16 on CPU ----------------------


def _causal_bias(seq: int, group: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[G*S, S]: 0 where a query may look, -inf above the diagonal; repeated for the G query heads."""
    bias = torch.full((seq, seq), float("-inf"), dtype=dtype, device=device).triu(1)
    return bias.repeat(group, 1)


class _MatmulCausalAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(E) + causal) v with the probabilities kept for backward.

    Grouped-query attention without copying KV heads: query heads j*G .. j*G+G-1 are stacked
    along the rows of one [G*S, E] matrix per KV head j, so each batched matmul serves a group.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        batch, heads, seq, head_dim = q.shape
        kv_heads = k.shape[1]
        group = heads // kv_heads
        scale = head_dim**-0.5
        with torch.autocast(q.device.type, enabled=False):  # keep softmax in the inputs' dtype
            q_rows = q.reshape(batch * kv_heads, group * seq, head_dim)  # [B*K, G*S, E]
            k_rows = k.reshape(batch * kv_heads, seq, head_dim)  # [B*K, S, E]
            v_rows = v.reshape(batch * kv_heads, seq, head_dim)  # [B*K, S, E]
            bias = _causal_bias(seq, group, q.dtype, q.device)  # [G*S, S]
            scores = torch.baddbmm(bias, q_rows, k_rows.transpose(1, 2), alpha=scale)  # [B*K, G*S, S]
            probabilities = torch.softmax(scores, dim=-1)
            out = torch.bmm(probabilities, v_rows)  # [B*K, G*S, E]
        ctx.save_for_backward(q_rows, k_rows, v_rows, probabilities)
        ctx.scale, ctx.shapes = scale, (q.shape, k.shape)
        return out.view(q.shape)  # [B, H, S, E]

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q_rows, k_rows, v_rows, probabilities = ctx.saved_tensors
        q_shape, kv_shape = ctx.shapes
        grad_rows = grad_out.reshape(q_rows.shape).to(q_rows.dtype)  # [B*K, G*S, E]
        grad_v = torch.bmm(probabilities.transpose(1, 2), grad_rows)  # [B*K, S, E], summed over the group
        grad_probabilities = torch.bmm(grad_rows, v_rows.transpose(1, 2))  # [B*K, G*S, S]
        grad_scores = torch.ops.aten._softmax_backward_data(grad_probabilities, probabilities, -1, probabilities.dtype)
        grad_q = torch.bmm(grad_scores, k_rows).mul_(ctx.scale)  # [B*K, G*S, E]
        grad_k = torch.bmm(grad_scores.transpose(1, 2), q_rows).mul_(ctx.scale)  # [B*K, S, E]
        return grad_q.view(q_shape), grad_k.view(kv_shape), grad_v.view(kv_shape)


def matmul_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention, q [B, H, S, E], k and v [B, K, S, E] (H a multiple of K) -> [B, H, S, E].

    Memory grows as S^2 (the probabilities are kept), so only for short sequences.
    """
    if torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != q.shape[1])
    return _MatmulCausalAttention.apply(q.contiguous(), k.contiguous(), v.contiguous())
