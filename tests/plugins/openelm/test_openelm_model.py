"""The OpenELM model: sizes, shapes, causality, attention details, training, checkpointing, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from plugins.openelm import build_openelm
from plugins.openelm.config import PRESETS, OpenELMConfig
from plugins.openelm.model import OpenELM, rope_tables


def tiny_config(**overrides) -> OpenELMConfig:
    values = {"vocab_size": 97, "max_context_length": 32, "num_layers": 3, "model_dim": 64, "head_dim": 16,
              "num_gqa_groups": 2, "ffn_dim_divisor": 32}
    values.update(overrides)
    return OpenELMConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> OpenELM:
    torch.manual_seed(seed)
    return OpenELM(tiny_config(**overrides))


@pytest.mark.parametrize(
    "name, published_millions",
    [("openelm-270M", 271.53), ("openelm-450M", 457.18), ("openelm-1_1B", 1079.89), ("openelm-3B", 3036.65)],
)
def test_published_parameter_counts_on_meta(name, published_millions):
    with torch.device("meta"):
        model = build_openelm(PRESETS[name]())
    assert model.token_embeddings.weight.is_meta
    count = model.num_parameters() / 1e6
    assert abs(count - published_millions) / published_millions < 1e-3, count


def test_state_dict_uses_the_hugging_face_names_and_keeps_no_rope_tables():
    keys = set(tiny_model().state_dict())
    expected = {"token_embeddings.weight", "norm.weight"}
    for i in range(3):
        expected |= {f"layers.{i}.{suffix}.weight" for suffix in (
            "attn_norm", "attn.qkv_proj", "attn.q_norm", "attn.k_norm", "attn.out_proj",
            "ffn_norm", "ffn.proj_1", "ffn.proj_2")}
    assert keys == expected


def test_fused_projection_shapes_follow_the_layer_widths():
    model = tiny_model()
    for layer, widths in zip(model.layers, model.config.layer_widths()):
        rows = (widths.num_query_heads + 2 * widths.num_kv_heads) * 16
        assert layer.attn.qkv_proj.weight.shape == (rows, 64)
        assert layer.attn.out_proj.weight.shape == (64, widths.num_query_heads * 16)
        assert layer.ffn.proj_1.weight.shape == (2 * widths.ffn_dim, 64)
        assert layer.ffn.proj_2.weight.shape == (64, widths.ffn_dim)
    assert len({layer.widths for layer in model.layers}) > 1  # layer-wise scaling is on


def test_forward_shape_dtype_and_initial_loss():
    model = tiny_model()
    tokens = torch.randint(0, 97, (2, 11))
    logits = model(tokens)
    assert logits.shape == (2, 11, 97) and logits.dtype == torch.float32
    targets = torch.randint(0, 97, (2 * 11,))
    loss = F.cross_entropy(logits.reshape(-1, 97), targets)
    assert abs(loss.item() - math.log(97)) < 0.5  # small init: close to uniform


def test_bf16_autocast_gives_float32_logits_close_to_fp32():
    model = tiny_model()
    tokens = torch.randint(0, 97, (2, 12))
    reference = model(tokens)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(tokens)
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max() < 5e-2
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = tiny_model()
    tokens = torch.randint(0, 97, (2, 16))
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    before, after = model(tokens), model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], atol=1e-6, rtol=0)
    assert (before[:, 9:] - after[:, 9:]).abs().max() > 1e-4


def test_embeddings_are_tied_unless_asked_otherwise():
    tied = tiny_model()
    assert tied.lm_head is None
    untied = tiny_model(tie_embeddings=False)
    assert untied.num_parameters() == tied.num_parameters() + 97 * 64
    # the tied head really is the embedding: moving one embedding row moves that logit
    tokens = torch.randint(0, 97, (1, 5))
    before = tied(tokens)
    with torch.no_grad():
        tied.token_embeddings.weight[42] += 1.0
    after = tied(tokens)
    assert (after[..., 42] - before[..., 42]).abs().max() > 1e-3


def reference_attention(attn, x, cos, sin):
    """The attention written out naively: explicit KV repeat, explicit mask and softmax."""
    batch, seq, _ = x.shape
    h, k, e = attn.num_query_heads, attn.num_kv_heads, attn.head_dim
    q_w, k_w, v_w = attn.qkv_proj.weight.split([h * e, k * e, k * e])
    q = (x @ q_w.T).view(batch, seq, h, e)
    key = (x @ k_w.T).view(batch, seq, k, e)
    v = (x @ v_w.T).view(batch, seq, k, e)
    if attn.q_norm is not None:
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * attn.q_norm.weight
        key = key * torch.rsqrt(key.pow(2).mean(-1, keepdim=True) + 1e-6) * attn.k_norm.weight

    def rotate(t):  # rotate-half, after the norm
        first, second = t.chunk(2, -1)
        full_cos, full_sin = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
        return t * full_cos + torch.cat((-second, first), -1) * full_sin

    q, key = rotate(q), rotate(key)
    key = key.repeat_interleave(h // k, dim=2)  # KV head j serves query heads j*G .. j*G+G-1
    v = v.repeat_interleave(h // k, dim=2)
    scores = torch.einsum("bqhe,bkhe->bhqk", q, key) / math.sqrt(e)
    mask = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    weights = scores.masked_fill(mask, float("-inf")).softmax(-1)
    out = torch.einsum("bhqk,bkhe->bqhe", weights, v).reshape(batch, seq, h * e)
    return out @ attn.out_proj.weight.T


@pytest.mark.parametrize("normalize_qk", [True, False])
def test_attention_matches_a_naive_gqa_rope_implementation(normalize_qk):
    model = tiny_model(normalize_qk=normalize_qk, num_query_heads=4, num_kv_heads=2)
    attn = model.layers[0].attn
    if normalize_qk:
        with torch.no_grad():
            attn.q_norm.weight.uniform_(0.5, 1.5)
            attn.k_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 10, 64)
    cos, sin = rope_tables(10, 16, 10000.0)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    torch.testing.assert_close(attn(x, cos, sin), reference_attention(attn, x, cos, sin), atol=1e-5, rtol=1e-4)


def test_bf16_attention_on_cpu_matches_fp32():
    attn = tiny_model(num_query_heads=4, num_kv_heads=1).layers[0].attn
    x = torch.randn(2, 10, 64)
    cos, sin = rope_tables(10, 16, 10000.0)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    reference = attn(x, cos, sin)  # [2, 10, 64], entries of about 0.03 with the tiny init
    torch.testing.assert_close(reference, reference_attention(attn, x, cos, sin), atol=1e-6, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, cos, sin)
    assert out.dtype == torch.bfloat16

    def close_in_bf16(candidate):
        # bf16 keeps 8 significant bits (0.4% per rounding): 2% of the output's scale holds the
        # rounding of a few matmuls, while an all-zero or wrongly scaled output misses it by far.
        return (candidate.float() - reference).abs().max() <= 2e-2 * reference.abs().max()

    assert close_in_bf16(out)
    assert not close_in_bf16(torch.zeros_like(out))
    assert not close_in_bf16(0.9 * out.float())
    assert not close_in_bf16(out.float().flip(1))  # positions mixed up


def test_trains_a_few_steps_on_a_fixed_batch():
    model = tiny_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, 97, (4, 17), generator=torch.Generator().manual_seed(1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    losses = []
    for _ in range(25):
        loss = F.cross_entropy(model(inputs).reshape(-1, 97), targets.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_activation_checkpointing_gives_the_same_gradients():
    tokens = torch.randint(0, 97, (2, 12))
    grads = []
    for checkpointing in (False, True):
        model = tiny_model(seed=3, activation_checkpointing=checkpointing)
        F.cross_entropy(model(tokens).reshape(-1, 97), tokens.reshape(-1)).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_flops_per_token_follows_palm_appendix_b():
    model = tiny_model()
    params = model.num_parameters()
    heads = sum(w.num_query_heads for w in model.config.layer_widths())
    assert model.flops_per_token(0) == 6 * params
    untied = tiny_model(tie_embeddings=False)  # the input lookup is no matmul; the head is
    assert untied.flops_per_token(0) == 6 * (untied.num_parameters() - 97 * 64) == 6 * params
    assert model.flops_per_token(100) - model.flops_per_token(50) == 12 * heads * 16 * 50
    with torch.device("meta"):
        big = build_openelm(PRESETS["openelm-270M"]())
    # 6N dominates at 2048 tokens; about 1.6 GFLOPs + attention for 270M
    assert 6 * 271e6 < big.flops_per_token(2048) < 6 * 272e6 + 12 * 16 * 20 * 64 * 2048


def test_layer_summary_has_one_line_per_layer():
    with torch.device("meta"):
        model = build_openelm(PRESETS["openelm-270M"]())
    lines = model.layer_summary()
    assert len(lines) == 16
    assert "query heads  12" in lines[0] and "kv heads  3" in lines[0] and "ffn dim   768" in lines[0]
    assert "query heads  20" in lines[-1] and "ffn dim  5120" in lines[-1]


def test_meta_model_materialises_with_init_weights():
    with torch.device("meta"):
        model = OpenELM(tiny_config())
    model.to_empty(device="cpu")
    model.init_weights()
    reference = tiny_model()
    torch.testing.assert_close(model.rope_cos, reference.rope_cos)
    assert torch.isfinite(model(torch.randint(0, 97, (1, 8)))).all()
    assert all(model.norm.weight == 1)


def test_sequences_longer_than_the_rope_table_still_work():
    model = tiny_model()  # table of 32 positions
    tokens = torch.randint(0, 97, (1, 40))
    logits = model(tokens)
    torch.testing.assert_close(logits[:, :32], model(tokens[:, :32]), atol=1e-5, rtol=1e-4)


def test_generate_greedy_and_sampled():
    model = tiny_model().eval()
    prompt = torch.randint(0, 97, (2, 4))
    out = model.generate(prompt, max_new_tokens=5)
    assert out.shape == (2, 9) and torch.equal(out[:, :4], prompt)
    assert torch.equal(out, model.generate(prompt, max_new_tokens=5))  # greedy is deterministic
    expected_first = model(prompt)[:, -1].argmax(-1)
    assert torch.equal(out[:, 4], expected_first)
    sampled = model.generate(prompt, 5, temperature=1.0, top_k=3, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 9)
    stopped = model.generate(prompt[:1], 5, eos_id=int(expected_first[0]))
    assert stopped.shape == (1, 5)  # stops right after emitting EOS


def test_long_sequences_in_bf16_on_cpu_use_float32_sdpa(monkeypatch):
    from plugins.openelm import model as model_module

    model = tiny_model(num_query_heads=4, num_kv_heads=2)
    tokens = torch.randint(0, 97, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        matmul_path = model(tokens)
        monkeypatch.setattr(model_module, "MATMUL_ATTENTION_MAX_SEQ", 4)
        sdpa_path = model(tokens)
    assert (matmul_path - sdpa_path).abs().max() < 5e-2
    sdpa_path.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_inference_on_cpu_uses_fused_sdpa_and_training_the_matmuls(monkeypatch):
    """No backward to come: the fused bf16 kernel (3x faster there); a backward: the batched matmuls."""
    from plugins.openelm import model as model_module

    calls = []
    original = model_module.matmul_causal_attention
    monkeypatch.setattr(model_module, "matmul_causal_attention", lambda *a: calls.append(1) or original(*a))
    model = tiny_model(num_query_heads=4, num_kv_heads=2)
    tokens = torch.randint(0, 97, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            inference = model(tokens)
        assert calls == []
        training = model(tokens)
    assert len(calls) == len(model.layers)
    assert (inference - training).abs().max() < 5e-2
    assert not torch.equal(inference, training.detach())  # the two kernels really ran
