"""A document-masked forward pass of OpenELM, for packed rows that hold several examples.

Packing puts several short examples in one row. The model's own `forward` is plain causal
attention over the whole row, so a later example would read the earlier ones; here each token
attends only to earlier tokens of its own document (a block-diagonal causal mask given to SDPA)
and RoPE positions restart at 0 on each document's first token, so a packed example computes
exactly what it would alone in a row.

It drives OpenELM's public submodules (embedding, per-block norms, projections, FFN, final norm)
in the order `OpenELM.forward` does, with the mask added. It needs the plain model: a DDP or
FSDP wrapper's hooks run around the model's `forward`, which this does not call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from plugins.openelm.kernels import rope_reference
from plugins.openelm.model import OpenELM, rope_tables
from toolkit.errors import RecipeError

PADDING_DOCUMENT = -1  # document id of padding tokens (they attend to their own run only)


def supports_packing(model: nn.Module) -> bool:
    """Exactly an OpenELM (not a wrapper or a sharded subclass, whose hooks this would skip)."""
    return type(model) is OpenELM


def require_packing_support(model: nn.Module) -> OpenELM:
    if not supports_packing(model):
        raise RecipeError(f"data.packing needs a plain OpenELM model on one process, got {type(model).__name__}",
                          hint="set data.packing=false (one example per row)")
    return model


def document_positions(document_ids: torch.Tensor) -> torch.Tensor:
    """Each token's position within its document [B, S], from document ids [B, S] (runs of equal ids)."""
    batch, seq = document_ids.shape
    index = torch.arange(seq, device=document_ids.device).expand(batch, seq)  # [B, S]
    starts = torch.ones_like(document_ids, dtype=torch.bool)
    starts[:, 1:] = document_ids[:, 1:] != document_ids[:, :-1]  # a new run begins here
    start_index = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # [B, S]
    return index - start_index


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """Boolean attention mask [B, 1, S, S]: query i may see key j when j <= i in the same document."""
    seq = document_ids.shape[1]
    same = document_ids[:, :, None] == document_ids[:, None, :]  # [B, S, S]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=document_ids.device).tril()  # [S, S]
    return (same & causal)[:, None]


def packed_hidden(model: OpenELM, input_ids: torch.Tensor, document_ids: torch.Tensor) -> torch.Tensor:
    """Final hidden states [B, S, D] (after the last norm) of rows whose documents never see each other."""
    config = model.config
    positions = document_positions(document_ids)  # [B, S]
    longest = input_ids.shape[1]
    if longest <= model.rope_cos.shape[0]:
        cos_table, sin_table = model.rope_cos, model.rope_sin
    else:
        cos_table, sin_table = rope_tables(longest, config.head_dim, config.rope_theta, model.rope_cos.device)
    cos, sin = cos_table[positions].unsqueeze(2), sin_table[positions].unsqueeze(2)  # [B, S, 1, E/2]
    mask = document_mask(document_ids)  # [B, 1, S, S]
    batch, seq = input_ids.shape
    x = model.token_embeddings(input_ids)  # [B, S, D]
    for layer in model.layers:
        attention = layer.attn
        normed = layer.after_norm(layer.attn_norm(x))
        qkv = attention.qkv_proj(normed).view(batch, seq, -1, config.head_dim)  # [B, S, H + 2K, E]
        q, k, v = qkv.split([attention.num_query_heads, attention.num_kv_heads, attention.num_kv_heads], dim=2)
        if attention.q_norm is not None:
            q, k = attention.q_norm(q), attention.k_norm(k)
        q = rope_reference(q, cos.to(q.dtype), sin.to(q.dtype)).transpose(1, 2)  # [B, H, S, E]
        k = rope_reference(k, cos.to(k.dtype), sin.to(k.dtype)).transpose(1, 2)  # [B, K, S, E]
        v = v.transpose(1, 2).to(q.dtype)  # [B, K, S, E]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             enable_gqa=attention.num_kv_heads != attention.num_query_heads)
        out = out.transpose(1, 2).reshape(batch, seq, attention.num_query_heads * config.head_dim)  # [B, S, H*E]
        x = x + attention.out_proj(out)
        x = x + layer.ffn(layer.after_norm(layer.ffn_norm(x)))  # [B, S, D]
    return model.norm(x)


def output_head(model: OpenELM) -> torch.Tensor:
    """The output projection [V, D]: the embedding when tied."""
    return model.token_embeddings.weight if model.lm_head is None else model.lm_head.weight


def packed_logits(model: OpenELM, input_ids: torch.Tensor, document_ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, S, V] (float32, as `OpenELM.forward` returns them) of packed rows."""
    return F.linear(packed_hidden(model, input_ids, document_ids), output_head(model)).float()
