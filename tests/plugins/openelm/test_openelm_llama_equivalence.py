"""With uniform widths and no Q/K norm, OpenELM is LLaMA: same logits as transformers' LlamaForCausalLM."""

from __future__ import annotations

import pytest
import torch

from plugins.openelm.config import OpenELMConfig
from plugins.openelm.model import OpenELM

transformers = pytest.importorskip("transformers")


def to_llama_state_dict(model: OpenELM) -> dict[str, torch.Tensor]:
    """OpenELM weights under LlamaForCausalLM's names: qkv_proj split into q/k/v, proj_1 into gate/up."""
    state = {"model.embed_tokens.weight": model.token_embeddings.weight, "model.norm.weight": model.norm.weight}
    head_dim = model.config.head_dim
    for i, layer in enumerate(model.layers):
        widths = layer.widths
        q, k, v = layer.attn.qkv_proj.weight.split(
            [widths.num_query_heads * head_dim, widths.num_kv_heads * head_dim, widths.num_kv_heads * head_dim]
        )
        gate, up = layer.ffn.proj_1.weight.chunk(2, dim=0)
        prefix = f"model.layers.{i}"
        state.update({
            f"{prefix}.self_attn.q_proj.weight": q,
            f"{prefix}.self_attn.k_proj.weight": k,
            f"{prefix}.self_attn.v_proj.weight": v,
            f"{prefix}.self_attn.o_proj.weight": layer.attn.out_proj.weight,
            f"{prefix}.mlp.gate_proj.weight": gate,
            f"{prefix}.mlp.up_proj.weight": up,
            f"{prefix}.mlp.down_proj.weight": layer.ffn.proj_2.weight,
            f"{prefix}.input_layernorm.weight": layer.attn_norm.weight,
            f"{prefix}.post_attention_layernorm.weight": layer.ffn_norm.weight,
        })
    if model.lm_head is not None:
        state["lm_head.weight"] = model.lm_head.weight
    return {name: tensor.detach().clone() for name, tensor in state.items()}


@pytest.mark.parametrize("heads, kv_heads, tied", [(4, 4, True), (8, 2, True), (4, 1, False)])
def test_same_logits_as_llama(heads, kv_heads, tied):
    torch.manual_seed(0)
    vocab, dim, layers, ffn = 211, 128, 2, 96
    head_dim = dim // heads
    model = OpenELM(OpenELMConfig(
        vocab_size=vocab, max_context_length=64, num_layers=layers, model_dim=dim, head_dim=head_dim,
        num_query_heads=heads, num_kv_heads=kv_heads, ffn_dim=ffn, normalize_qk=False, tie_embeddings=tied,
    )).eval()
    with torch.no_grad():  # non-trivial norm scales and larger weights, so every path matters
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
            else:
                parameter.normal_(0.0, 0.1)
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=64,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=tied, attention_bias=False, mlp_bias=False,
        attn_implementation="eager",
    )).eval()
    missing, unexpected = llama.load_state_dict(to_llama_state_dict(model), strict=False)
    assert not unexpected
    assert set(missing) <= ({"lm_head.weight"} if tied else set())
    if tied:
        assert llama.lm_head.weight.data_ptr() == llama.model.embed_tokens.weight.data_ptr()
    tokens = torch.randint(0, vocab, (2, 37))
    with torch.no_grad():
        ours = model(tokens)
        theirs = llama(input_ids=tokens, use_cache=False).logits.float()
    assert ours.abs().max() > 1.0  # the comparison is not between two near-zero tensors
    assert (ours - theirs).abs().max() < 1e-4
