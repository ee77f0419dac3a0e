"""The OpenELM decoder-only transformer, readable top to bottom.

token ids -> embedding -> N x [RMSNorm -> attention -> residual, RMSNorm -> SwiGLU FFN -> residual]
(relufied models: ReLU for SiLU in the FFN, optionally a ReLU after each norm; config.py)
-> RMSNorm -> tied output head -> logits. Each block has its own widths (layer-wise scaling, see
config.py). Attention: one fused QKV projection (rows: queries, then keys, then values), per-head
RMSNorm on queries and keys, rotate-half RoPE applied after that norm, causal grouped-query
attention (PyTorch's fused SDPA kernel; see `attend` for the CPU exceptions). No biases anywhere.
The element-wise pieces (RMSNorm, RoPE, SwiGLU) have hand-written backward passes in kernels.py,
which on CPU makes a training step markedly faster than autograd's versions.

Inference: `make_cache` + `forward_step` decode with a preallocated per-layer KV cache
(kv_cache.py), including left-padded batches; `forward` (the training path) takes no cache.

Parameter names follow the Hugging Face `apple/OpenELM-*` layout without its `transformer.` prefix
(`token_embeddings`, `layers.{i}.attn.qkv_proj`, ...), so export is a rename. Shapes: B batch,
S sequence, D model width, H query heads, K KV heads, E head width, F FFN width, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from plugins.openelm.config import LayerWidths, OpenELMConfig
from plugins.openelm.kernels import (
    apply_rope,
    gated_activation,
    matmul_causal_attention,
    rms_norm,
    rms_norm_reference,
    rope_reference,
)
from plugins.openelm.kv_cache import KVCache


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale: x * rsqrt(mean(x^2) + eps) * weight."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same norm as plain tensor ops (float32 at least): no autograd.Function call overhead,
        which dominates at decoding's one token per step."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        return rms_norm_reference(x.to(dtype), self.weight.to(dtype), self.eps).to(x.dtype)


def rope_tables(length: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each [length, E/2], in float32."""
    inverse_frequency = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    positions = torch.arange(length, device=device, dtype=torch.float32)
    angles = torch.outer(positions, inverse_frequency)  # [length, E/2]
    return angles.cos(), angles.sin()


# Longest sequence for which CPU half-precision attention materialises the [S, S] probabilities.
MATMUL_ATTENTION_MAX_SEQ = 512


# `OpenELMConfig.attention` -> the one SDPA backend it allows.
SDPA_BACKENDS = {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "sdpa_math": SDPBackend.MATH}


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, implementation: str = "sdpa") -> torch.Tensor:
    """Causal attention. q [B, H, S, E], k and v [B, K, S, E] -> [B, H, S, E].

    `implementation` (OpenELMConfig.attention) other than "sdpa" forces one kernel, for
    benchmarks: an SDPA backend (PyTorch raises where that backend cannot run these inputs, the
    memory-efficient one on CPU say) or the explicit matmuls. "sdpa" is the default below.

    KV head j serves query heads j*G .. j*G+G-1 (repeat_interleave order). Normally PyTorch's
    fused SDPA kernel. On CPU in half precision its backward is slow (torch 2.x, S=256, E=64:
    bf16 flash 2.5x, float32 flash 2x the time of batched bf16 matmuls), so short sequences use
    plain batched matmuls with a hand-written backward (kernels.py), and long ones run SDPA in
    float32 (autocast off, or it would cast them back). Without a backward to come (inference,
    evaluation, the Duo oracle) the fused bf16 kernel is the fast one again: 3x the matmuls at
    S=256, E=64.
    """
    grouped = k.shape[1] != q.shape[1]
    if implementation == "matmul":
        return matmul_causal_attention(q, k, v)
    if implementation in SDPA_BACKENDS:
        with sdpa_kernel(SDPA_BACKENDS[implementation]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=grouped)
    needs_backward = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16) and needs_backward:
        if q.shape[2] <= MATMUL_ATTENTION_MAX_SEQ:
            return matmul_causal_attention(q, k, v)
        with torch.autocast("cpu", enabled=False):
            out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, enable_gqa=grouped)
        return out.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=grouped)


class Attention(nn.Module):
    """Causal grouped-query self-attention with Q/K RMSNorm and rotary positions."""

    def __init__(self, config: OpenELMConfig, widths: LayerWidths) -> None:
        super().__init__()
        self.num_query_heads = widths.num_query_heads
        self.num_kv_heads = widths.num_kv_heads
        self.head_dim = config.head_dim
        self.implementation = config.attention
        fused_heads = self.num_query_heads + 2 * self.num_kv_heads
        self.qkv_proj = nn.Linear(config.model_dim, fused_heads * self.head_dim, bias=False)
        # Per-head norms keep attention logits bounded however large the projections grow.
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.normalize_qk else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.normalize_qk else None
        self.out_proj = nn.Linear(self.num_query_heads * self.head_dim, config.model_dim, bias=False)

    def _project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inference: bool = False):
        """q [B, S, H, E], k [B, S, K, E] (normed, rotated) and v [B, S, K, E] from x [B, S, D].

        cos, sin are [S, 1, E/2] (positions shared by the batch) or [B, S, 1, E/2] (per row).
        `inference` uses plain tensor ops instead of the autograd kernels (same function).
        """
        batch, seq, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, seq, -1, self.head_dim)  # [B, S, H + 2K, E]
        q, k, v = qkv.split([self.num_query_heads, self.num_kv_heads, self.num_kv_heads], dim=2)
        if self.q_norm is not None:
            q, k = (self.q_norm.inference(q), self.k_norm.inference(k)) if inference else (self.q_norm(q), self.k_norm(k))
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        rope = rope_reference if inference else apply_rope
        return rope(q, cos, sin), rope(k, cos, sin), v  # [B, S, H, E], [B, S, K, E] x 2

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = self._project(x, cos, sin)
        # Heads before positions for attention: contiguous views for q and k (see apply_rope).
        out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), self.implementation)  # [B, H, S, E]
        out = out.transpose(1, 2).reshape(batch, seq, self.num_query_heads * self.head_dim)  # [B, S, H*E]
        return self.out_proj(out)  # [B, S, D]

    def forward_step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layer: int,
                     mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
        """Attention of the new tokens x [B, S, D] over the cached ones and themselves (inference)."""
        batch, seq, _ = x.shape
        q, k, v = self._project(x, cos, sin, inference=True)
        keys, values = cache.write(layer, k.transpose(1, 2), v.transpose(1, 2))  # [B, K, L, E] each
        q = q.transpose(1, 2)  # [B, H, S, E]
        keys, values = keys.to(q.dtype), values.to(q.dtype)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=is_causal,
                                             enable_gqa=self.num_kv_heads != self.num_query_heads)
        out = out.transpose(1, 2).reshape(batch, seq, self.num_query_heads * self.head_dim)  # [B, S, H*E]
        return self.out_proj(out)  # [B, S, D]


class FeedForward(nn.Module):
    """Gated FFN: proj_2(act(gate) * up), gate and up from one fused matmul (gate first).

    act is silu (SwiGLU) unless the config relufies it (config.ffn_activation)."""

    def __init__(self, config: OpenELMConfig, widths: LayerWidths) -> None:
        super().__init__()
        self.activation = config.ffn_activation
        self.shift = config.activation_shift
        self.proj_1 = nn.Linear(config.model_dim, 2 * widths.ffn_dim, bias=False)
        self.proj_2 = nn.Linear(widths.ffn_dim, config.model_dim, bias=False)

    def intermediate(self, x: torch.Tensor, inference: bool = False) -> torch.Tensor:
        """The activations proj_2 reads: x [B, S, D] -> [B, S, F] (exact zeros where relu cuts)."""
        return gated_activation(self.proj_1(x), self.activation, self.shift, inference)  # [B, S, 2F] -> [B, S, F]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_2(self.intermediate(x))  # [B, S, F] -> [B, S, D]

    def step(self, x: torch.Tensor) -> torch.Tensor:
        """The same FFN for decoding: plain tensor ops, no autograd.Function overhead."""
        return self.proj_2(self.intermediate(x, inference=True))  # [B, S, D]


# The FFN of one decoding step, replaceable (plugins.sparse computes only the active neurons):
# (layer index, FFN input [B, S, D], already normed) -> FFN output [B, S, D].
FFNStep = Callable[[int, torch.Tensor], torch.Tensor]


class Block(nn.Module):
    """One pre-norm transformer block: x + attn(norm(x)), then x + ffn(norm(x)).

    With config.relu_after_norm (relufication stage 2) each norm's output goes through a relu,
    so the inputs of the QKV projection and of the FFN are sparse too."""

    def __init__(self, config: OpenELMConfig, widths: LayerWidths) -> None:
        super().__init__()
        self.widths = widths
        self.relu_after_norm = config.relu_after_norm
        self.attn_norm = RMSNorm(config.model_dim, config.norm_eps)
        self.attn = Attention(config, widths)
        self.ffn_norm = RMSNorm(config.model_dim, config.norm_eps)
        self.ffn = FeedForward(config, widths)

    def after_norm(self, x: torch.Tensor) -> torch.Tensor:
        """A norm's output as the next layer reads it: relu'd in stage 2, else unchanged."""
        return F.relu(x) if self.relu_after_norm else x

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.after_norm(self.attn_norm(x)), cos, sin)  # [B, S, D]
        return x + self.ffn(self.after_norm(self.ffn_norm(x)))  # [B, S, D]

    def ffn_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the FFN reads at decoding: the normed (stage 2: and relu'd) residual [B, S, D]."""
        return self.after_norm(self.ffn_norm.inference(x))

    def forward_step(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache, layer: int,
                     mask: torch.Tensor | None, is_causal: bool, ffn_step: FFNStep | None = None) -> torch.Tensor:
        x = x + self.attn.forward_step(self.after_norm(self.attn_norm.inference(x)), cos, sin, cache, layer, mask,
                                       is_causal)
        hidden = self.ffn_input(x)  # [B, S, D]
        return x + (self.ffn.step(hidden) if ffn_step is None else ffn_step(layer, hidden))  # [B, S, D]


def matmul_flops_factor(parameter: nn.Parameter) -> int:
    """Training FLOPs per token per weight: 6 (forward, input gradient, weight gradient), 4 if frozen."""
    return 6 if parameter.requires_grad else 4


class OpenELM(nn.Module):
    """OpenELM language model: `model(input_ids [B, S]) -> logits [B, S, V]` (float32)."""

    def __init__(self, config: OpenELMConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embeddings = nn.Embedding(config.vocab_size, config.model_dim)
        self.layers = nn.ModuleList(Block(config, widths) for widths in config.layer_widths())
        self.norm = RMSNorm(config.model_dim, config.norm_eps)
        # Untied models get their own head (Hugging Face's name for it); tied ones reuse the embedding.
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.model_dim, config.vocab_size, bias=False)
        # Derived from the config, so not saved: checkpoints hold only learned weights.
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 / nanoGPT initialisation, and the RoPE tables.

        Every matrix ~ N(0, init_std) (0.02: the usual choice at these widths, and with a tied
        head it keeps initial logits near zero so the first loss is close to ln V); the two
        projections that write into the residual stream (out_proj, proj_2) are scaled down by
        sqrt(2 * num_layers) so the residual variance does not grow with depth; norms start at
        one. Safe on the meta device, and callable again after `to_empty()` to materialise.
        """
        std = self.config.init_std
        residual_std = std / math.sqrt(2 * self.config.num_layers)
        for name, parameter in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(parameter)
            elif name.endswith(("out_proj.weight", "proj_2.weight")):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)
            else:
                nn.init.normal_(parameter, mean=0.0, std=std)
        device = self.token_embeddings.weight.device
        cos, sin = rope_tables(self.config.max_context_length, self.config.head_dim, self.config.rope_theta, device)
        self.rope_cos, self.rope_sin = cos, sin

    def _rope(self, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [S, 1, E/2] for positions 0..S-1 (computed afresh past max_context_length)."""
        if seq <= self.rope_cos.shape[0]:
            cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        else:
            cos, sin = rope_tables(seq, self.config.head_dim, self.config.rope_theta, self.rope_cos.device)
        return cos.unsqueeze(1), sin.unsqueeze(1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        cos, sin = self._rope(input_ids.shape[1])  # [S, 1, E/2]
        x = self.token_embeddings(input_ids)  # [B, S, D]
        for layer in self.layers:
            if self.config.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, use_reentrant=False)
            else:
                x = layer(x, cos, sin)
        x = self.norm(x)  # [B, S, D]
        head = self.token_embeddings.weight if self.lm_head is None else self.lm_head.weight  # [V, D]
        # Losses want float32 logits (log-softmax over V in bf16 loses digits); a no-op in fp32.
        return F.linear(x, head).float()  # [B, S, V]

    # --- cached decoding (inference only; `forward` above is the training path) -------------------

    def make_cache(self, batch_size: int, max_length: int, device=None, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch_size` rows of up to `max_length` positions (prompt + new tokens).

        One key and one value buffer [B, K_i, max_length, E] per layer, K_i that layer's KV heads;
        device and dtype default to the model's.
        """
        weight = self.token_embeddings.weight
        kv_heads = [layer.attn.num_kv_heads for layer in self.layers]
        return KVCache(kv_heads, batch_size, max_length, self.config.head_dim,
                       device=weight.device if device is None else device,
                       dtype=weight.dtype if dtype is None else dtype)

    @torch.no_grad()
    def forward_step(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        attention_mask: torch.Tensor | None = None,
        last_only: bool = False,
        ffn_step: FFNStep | None = None,
    ) -> torch.Tensor:
        """Logits [B, S, V] (or [B, 1, V] with `last_only`) for `input_ids` [B, S] following `cache`.

        Appends the new keys and values to `cache`. `attention_mask` [B, S] (1 = token, 0 = padding)
        is for a left-padded prompt: padding is never attended and each row's RoPE positions start
        at 0 on its first real token. Prefill with the whole prompt, then feed one token per step.
        `ffn_step` replaces every block's FFN (see FFNStep; plugins.sparse's sparse decoding).
        """
        seq = input_ids.shape[1]
        start = cache.length
        positions = cache.begin(attention_mask, seq)  # [B, S]
        mask = cache.attention_mask(seq)  # [B, 1, S, L] or None
        # A fresh, unpadded prompt is plain causal attention: let SDPA use its causal kernels.
        is_causal = start == 0 and not cache.padded and seq > 1
        if is_causal:
            mask = None
        needed = cache.length + seq  # positions never exceed slots (no host sync to find the largest)
        if needed <= self.rope_cos.shape[0]:
            cos_table, sin_table = self.rope_cos, self.rope_sin
        else:
            cos_table, sin_table = rope_tables(needed, self.config.head_dim, self.config.rope_theta,
                                               self.rope_cos.device)
        cos, sin = cos_table[positions].unsqueeze(2), sin_table[positions].unsqueeze(2)  # [B, S, 1, E/2]
        x = self.token_embeddings(input_ids)  # [B, S, D]
        for index, layer in enumerate(self.layers):
            # Only a replaced FFN is passed on: subclassed blocks (plugins.duo) keep their own signature.
            extra = {} if ffn_step is None else {"ffn_step": ffn_step}
            x = layer.forward_step(x, cos, sin, cache, index, mask, is_causal, **extra)
        cache.advance(seq)
        if last_only:
            x = x[:, -1:]
        x = self.norm.inference(x)
        head = self.token_embeddings.weight if self.lm_head is None else self.lm_head.weight  # [V, D]
        return F.linear(x, head).float()  # [B, S, V]

    def fsdp_units(self) -> list[nn.Module]:
        """The modules FSDP shards one by one (the engine's `dist.strategy: fsdp`): the blocks."""
        return list(self.layers)

    # --- reporting -------------------------------------------------------------------------------

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters counted once (a tied head is the embedding); optionally without the embedding."""
        total = sum(p.numel() for p in self.parameters())
        return total - self.token_embeddings.weight.numel() if exclude_embeddings else total

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6 N + 12 L H Q T.

        N counts the parameters that take part in a matmul: everything but the input embedding
        lookup, with the output head counted once (tied, it is the embedding table, so then N is
        all parameters). Norm scales are included; they are a rounding error. The attention term
        sums 12 * H_i * E * T over the layers, since OpenELM's layers differ in heads.
        A frozen parameter (requires_grad False: a router trained on a frozen model) counts 4,
        not 6: its forward and the gradient that flows through it, but no weight gradient (an
        upper bound: below the lowest trainable parameter no gradient flows at all).
        """
        attention = sum(12 * layer.widths.num_query_heads * self.config.head_dim * seq_len for layer in self.layers)
        return float(sum(matmul_flops_factor(parameter) * parameter.numel()
                         for parameter in self.matmul_parameters()) + attention)

    def matmul_parameters(self) -> list[nn.Parameter]:
        """Every parameter once (a tied head is the embedding table), without an untied input embedding."""
        embedding = self.token_embeddings.weight
        return [parameter for parameter in self.parameters() if parameter is not embedding or self.lm_head is None]

    def training_flops_per_item(self, sequence_length: int) -> float:
        """toolkit.capabilities.TrainingFlops: an item is a token."""
        return self.flops_per_token(sequence_length)

    def layer_summary(self) -> list[str]:
        """One line per block: widths and parameter count, for `toolkit-train --dry-run`."""
        lines = []
        for index, layer in enumerate(self.layers):
            widths = layer.widths
            count = sum(p.numel() for p in layer.parameters())
            lines.append(
                f"layer {index:2d}: query heads {widths.num_query_heads:3d}, kv heads {widths.num_kv_heads:2d}, "
                f"ffn dim {widths.ffn_dim:5d}, params {count / 1e6:.2f}M"
            )
        return lines

    # --- a minimal sampler for demos (no KV cache: each step re-reads the whole context) ----------

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend `input_ids` [B, S] by up to `max_new_tokens`; temperature 0 is greedy decoding."""
        tokens = input_ids
        finished = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.config.max_context_length:])[:, -1]  # [B, V]
            if temperature <= 0:
                next_token = logits.argmax(dim=-1)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth_best = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                    logits = logits.masked_fill(logits < kth_best, float("-inf"))
                next_token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
            if eos_id is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos_id), next_token)
                finished |= next_token == eos_id
            tokens = torch.cat((tokens, next_token[:, None]), dim=1)  # [B, S + 1]
            if eos_id is not None and bool(finished.all()):
                break
        return tokens
