"""OpenELM for transformers, as the toolkit trains it: what `toolkit-export --format hf` ships so that
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` loads the export.

Self-contained (torch and transformers only; the toolkit need not be installed). The computation is
the toolkit's OpenELM in float32 at least: pre-norm blocks of RMSNorm -> fused QKV projection ->
per-head RMSNorm on queries and keys -> rotate-half RoPE -> causal grouped-query attention (KV head
j serves query heads j*G .. j*G+G-1) -> output projection, then RMSNorm -> SwiGLU (gate half of
proj_1 first); a final RMSNorm and the output head (the token embedding when shared). Parameter
names are the `apple/OpenELM-*` layout's (`transformer.layers.0.attn.qkv_proj.weight`, ...).

Generation re-reads the whole context at each step (no KV cache): simple, and independent of
transformers' cache classes, which change between releases. Left-padded batches work: padding is
never attended and each row's positions start at its first real token.
Shapes: B batch, S sequence, D model width, H query heads, K KV heads, E head width, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_toolkit_openelm import ToolkitOpenELMConfig

NORM_EPS = 1e-6  # fixed in OpenELM's published code, not a config.json key


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * weight, computed in float32 at least."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        wide = x.to(dtype)
        normed = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.weight.to(dtype)
        return normed.to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE of x [B, S, heads, E] by angles whose cos/sin are [B, S, 1, E/2]."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ToolkitOpenELMConfig, query_heads: int, kv_heads: int) -> None:
        super().__init__()
        self.query_heads, self.kv_heads, self.head_dim = query_heads, kv_heads, config.head_dim
        self.qkv_proj = nn.Linear(config.model_dim, (query_heads + 2 * kv_heads) * config.head_dim, bias=False)
        self.q_norm = RMSNorm(config.head_dim) if config.normalize_qk_projections else None
        self.k_norm = RMSNorm(config.head_dim) if config.normalize_qk_projections else None
        self.out_proj = nn.Linear(query_heads * config.head_dim, config.model_dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, allowed: torch.Tensor | None):
        batch, seq, _ = x.shape
        qkv = self.qkv_proj(x).view(batch, seq, -1, self.head_dim)  # [B, S, H + 2K, E]
        q, k, v = qkv.split([self.query_heads, self.kv_heads, self.kv_heads], dim=2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rotate(q, cos.to(q.dtype), sin.to(q.dtype)), rotate(k, cos.to(k.dtype), sin.to(k.dtype))
        group = self.query_heads // self.kv_heads
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H or K, S, E]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)  # [B, H, S, E]
        if allowed is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out_proj(out.transpose(1, 2).reshape(batch, seq, self.query_heads * self.head_dim))  # [B, S, D]


class FeedForward(nn.Module):
    def __init__(self, config: ToolkitOpenELMConfig, ffn_dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Linear(config.model_dim, 2 * ffn_dim, bias=False)
        self.proj_2 = nn.Linear(ffn_dim, config.model_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.proj_1(x).chunk(2, dim=-1)  # [B, S, F] each
        return self.proj_2(F.silu(gate) * up)  # [B, S, D]


class Block(nn.Module):
    def __init__(self, config: ToolkitOpenELMConfig, widths: tuple[int, int, int]) -> None:
        super().__init__()
        query_heads, kv_heads, ffn_dim = widths
        self.attn_norm = RMSNorm(config.model_dim)
        self.attn = Attention(config, query_heads, kv_heads)
        self.ffn_norm = RMSNorm(config.model_dim)
        self.ffn = FeedForward(config, ffn_dim)

    def forward(self, x, cos, sin, allowed):
        x = x + self.attn(self.attn_norm(x), cos, sin, allowed)
        return x + self.ffn(self.ffn_norm(x))


class ToolkitOpenELMModel(nn.Module):
    """The decoder under the `transformer.` prefix of the parameter names."""

    def __init__(self, config: ToolkitOpenELMConfig) -> None:
        super().__init__()
        self.token_embeddings = nn.Embedding(config.vocab_size, config.model_dim)
        self.layers = nn.ModuleList(Block(config, widths) for widths in config.layer_widths())
        self.norm = RMSNorm(config.model_dim)


class ToolkitOpenELMForCausalLM(PreTrainedModel, GenerationMixin):
    """`model(input_ids [B, S], attention_mask [B, S]) -> logits [B, S, V]` (float32)."""

    config_class = ToolkitOpenELMConfig
    base_model_prefix = "transformer"
    _no_split_modules = ["Block"]

    def __init__(self, config: ToolkitOpenELMConfig) -> None:
        super().__init__(config)
        self.transformer = ToolkitOpenELMModel(config)
        self.lm_head = None if config.share_input_output_layers else nn.Linear(
            config.model_dim, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        elif isinstance(module, RMSNorm):
            module.weight.data.fill_(1.0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.transformer.token_embeddings

    def _positions_and_mask(self, attention_mask: torch.Tensor | None, batch: int, seq: int, device):
        """RoPE positions [B, S] and the boolean attention mask [B, 1, S, S] (None: plain causal)."""
        if attention_mask is None or bool(attention_mask.all()):
            return torch.arange(seq, device=device).expand(batch, seq), None
        real = attention_mask.to(device=device, dtype=torch.bool)  # [B, S]
        positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # a row's first real token is at 0
        causal = torch.ones(seq, seq, dtype=torch.bool, device=device).tril()  # [S, S]
        allowed = causal & real[:, None, :]  # [B, S, S]: never attend to padding
        allowed |= torch.eye(seq, dtype=torch.bool, device=device)  # a padding row sees itself, not nothing
        return positions, allowed[:, None]

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                labels: torch.LongTensor | None = None, **unused) -> CausalLMOutputWithPast:
        batch, seq = input_ids.shape
        device = input_ids.device
        positions, allowed = self._positions_and_mask(attention_mask, batch, seq, device)
        head_dim = self.config.head_dim
        frequencies = 1.0 / self.config.rope_freq_constant ** (
            torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)  # [E/2]
        angles = positions.to(torch.float32)[..., None] * frequencies  # [B, S, E/2]
        cos, sin = angles.cos()[:, :, None], angles.sin()[:, :, None]  # [B, S, 1, E/2]
        x = self.transformer.token_embeddings(input_ids)  # [B, S, D]
        for layer in self.transformer.layers:
            x = layer(x, cos, sin, allowed)
        x = self.transformer.norm(x)
        head = self.transformer.token_embeddings.weight if self.lm_head is None else self.lm_head.weight  # [V, D]
        logits = F.linear(x, head).float()  # [B, S, V]
        loss = None
        if labels is not None:  # transformers' convention: labels are the inputs, shifted here
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, attention_mask=None, **unused) -> dict:
        """The whole sequence at every step (no KV cache, see the module docstring)."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}
