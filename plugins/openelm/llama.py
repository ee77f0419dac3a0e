"""Llama checkpoints read into the toolkit's OpenELM: a Llama is an OpenELM with uniform widths.

Sources: a Hugging Face Llama directory (`config.json` with model_type "llama" + safetensors, or
`pytorch_model.bin`, or shards) or a Llama `.gguf` file, which transformers dequantises to float32
offline (its GGUF reader already undoes llama.cpp's Q/K row permutation, so the tensors arrive in
Hugging Face's layout). SmolLM2-135M (DATA.md) is one.

The mapping. Config: hidden_size -> model_dim, the uniform overrides num_query_heads /
num_kv_heads / ffn_dim from num_attention_heads / num_key_value_heads / intermediate_size, no
Q/K norm, rope_theta, rms_norm_eps, tie_word_embeddings. Weights: q, k, v stacked (in that order)
as the rows of the fused `qkv_proj`; gate then up as the rows of the FFN's `proj_1` (OpenELM
computes act(first half) * second half); down -> `proj_2`, o -> `out_proj`, input_layernorm ->
`attn_norm`, post_attention_layernorm -> `ffn_norm`. Both models rotate with rotate-half RoPE
(pairs j and j + E/2) and scale attention by 1/sqrt(head_dim), so nothing else changes.

What OpenELM cannot express is refused in one line before any weights are read: rope scaling of
any kind, attention or MLP biases, an activation other than SiLU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from plugins.lm.hf_model import is_gguf
from plugins.openelm.config import OpenELMConfig
from plugins.openelm.convert import (CONFIG_FILE, _is_buffer, _read_json, build_from_state, hf_config_path,
                                     read_hf_weights)
from plugins.openelm.model import OpenELM
from toolkit.errors import CheckpointError

REQUIRED_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# Tensors of a Llama state dict that are not weights (transformers' RoPE cache, when saved).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

# Per layer: Llama name (under model.layers.{i}.) -> ours (under layers.{i}.), for the unfused tensors.
LAYER_RENAMES = {
    "self_attn.o_proj.weight": "attn.out_proj.weight",
    "mlp.down_proj.weight": "ffn.proj_2.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
# Per layer: our fused tensor -> the Llama tensors stacked into its rows, in order.
LAYER_FUSIONS = {
    "attn.qkv_proj.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "ffn.proj_1.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}


def _rope_theta(config: dict[str, Any], source: str) -> float:
    """rope_theta, refusing any rope scaling (transformers 4 says rope_scaling, 5 rope_parameters)."""
    scaling = config.get("rope_scaling")
    if scaling:
        raise CheckpointError(f"{source}: rope_scaling {scaling!r} is not supported: OpenELM uses plain RoPE")
    parameters = config.get("rope_parameters") or {}
    if not isinstance(parameters, dict):
        raise CheckpointError(f"{source}: rope_parameters must be a mapping, got {parameters!r}")
    rope_type = parameters.get("rope_type", parameters.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope type {rope_type!r} is not supported: OpenELM uses plain RoPE")
    theta = parameters.get("rope_theta", config.get("rope_theta", 10000.0))
    return float(theta)


def config_from_llama(config: dict[str, Any], source: str | Path = CONFIG_FILE) -> OpenELMConfig:
    """The OpenELMConfig of a Llama config (config.json's dict); CheckpointError naming what OpenELM
    cannot express."""
    source = str(source)
    if config.get("model_type") != "llama":
        raise CheckpointError(f"{source}: model_type is {config.get('model_type')!r}, not 'llama'")
    missing = [key for key in REQUIRED_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{source}: not a Llama config, missing {', '.join(missing)}")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise CheckpointError(f"{source}: {key} is true; OpenELM has no biases")
    activation = config.get("hidden_act", "silu")
    if activation != "silu":
        raise CheckpointError(f"{source}: hidden_act is {activation!r}; only 'silu' (SwiGLU) maps onto OpenELM")
    rope_theta = _rope_theta(config, source)
    try:
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or int(config["hidden_size"]) // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        return OpenELMConfig(
            vocab_size=int(config["vocab_size"]),
            max_context_length=int(config.get("max_position_embeddings", 2048)),
            num_layers=int(config["num_hidden_layers"]),
            model_dim=int(config["hidden_size"]),
            head_dim=head_dim,
            num_gqa_groups=max(1, heads // kv_heads),
            num_query_heads=heads,
            num_kv_heads=kv_heads,
            ffn_dim=int(config["intermediate_size"]),
            rope_theta=rope_theta,
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            normalize_qk=False,
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
            init_std=float(config.get("initializer_range", 0.02)),
        )
    except (TypeError, ValueError, ZeroDivisionError) as error:
        raise CheckpointError(f"{source}: invalid Llama config ({error})".splitlines()[0]) from error


def state_from_llama(state: dict[str, torch.Tensor], config: OpenELMConfig, source: str | Path
                     ) -> dict[str, torch.Tensor]:
    """A Llama state dict under OpenELM's names (fused q/k/v and gate/up); CheckpointError if a
    tensor is missing or left over."""
    state = {key: value for key, value in state.items() if not key.endswith(IGNORED_SUFFIXES)}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"{source}: Llama weights lack '{key}'")
        used.add(key)
        return state[key]

    out = {"token_embeddings.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    for index in range(config.num_layers):
        prefix = f"model.layers.{index}."
        for theirs, ours in LAYER_RENAMES.items():
            out[f"layers.{index}.{ours}"] = take(prefix + theirs)
        for ours, parts in LAYER_FUSIONS.items():
            out[f"layers.{index}.{ours}"] = torch.cat([take(prefix + part) for part in parts], dim=0)
    if config.tie_embeddings:
        head = state.get("lm_head.weight")
        if head is not None:  # transformers' in-memory state lists the tied head too: it must be the embedding
            if not torch.equal(take("lm_head.weight"), out["token_embeddings.weight"]):
                raise CheckpointError(f"{source}: tie_word_embeddings is true but lm_head.weight differs from the "
                                      "embedding")
    else:
        out["lm_head.weight"] = take("lm_head.weight")
    left = sorted(set(state) - used)
    if left:
        raise CheckpointError(f"{source}: {len(left)} Llama tensors have no place in OpenELM (e.g. {left[:3]})")
    return out


def first_line(error: BaseException) -> str:
    """An exception's message cut to one line (its type when it has none), for one-line errors."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_gguf(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """config dict and float32 state dict of a GGUF file, through transformers (offline)."""
    from plugins.lm.hf_model import require_transformers

    transformers = require_transformers()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: transformers could not read this GGUF file ({first_line(error)})") from error
    return model.config.to_dict(), {key: value.detach() for key, value in model.state_dict().items()}


def import_llama(src: str | Path) -> tuple[OpenELM, OpenELMConfig]:
    """An OpenELM holding a Llama directory's or GGUF file's weights (float32 for GGUF), in eval mode."""
    src = Path(src)
    config_path = hf_config_path(src, "Llama")
    if config_path is not None:
        config = config_from_llama(_read_json(config_path), config_path)  # refused before the weights are read
        raw, weights_path = read_hf_weights(src)
    elif is_gguf(src):
        config_json, raw = _load_gguf(src)
        config, weights_path = config_from_llama(config_json, src), src
    else:
        raise CheckpointError(f"{src}: neither a Hugging Face Llama directory nor a GGUF file")
    # The toolkit trains float32 master weights (bf16 is autocast): a bf16 directory is widened once here.
    raw = {key: value.float() if value.is_floating_point() else value for key, value in raw.items()}
    state = state_from_llama(raw, config, weights_path)
    return build_from_state(config, state, weights_path), config


def check_llama_exportable(config: OpenELMConfig, source: str | Path) -> None:
    """CheckpointError (one line) unless the model is a Llama: uniform widths, no Q/K norm, SwiGLU."""
    widths = config.layer_widths()
    if any(layer != widths[0] for layer in widths):
        raise CheckpointError(f"{source}: the layers' widths differ (layer-wise scaling); the Llama layout needs "
                              "uniform ones", hint="export with --format hf (the OpenELM layout)")
    if config.normalize_qk:
        raise CheckpointError(f"{source}: normalize_qk is true; Llama has no Q/K norm",
                              hint="export with --format hf (the OpenELM layout)")
    if config.ffn_activation != "silu" or config.relu_after_norm:
        raise CheckpointError(f"{source}: ffn_activation {config.ffn_activation} / relu_after_norm "
                              f"{config.relu_after_norm}: Llama's MLP is SwiGLU after plain norms")


def config_to_llama(config: OpenELMConfig, torch_dtype: str, eos_id: int) -> dict[str, Any]:
    """The transformers LlamaConfig (config.json's dict) of a model check_llama_exportable accepts;
    config_from_llama reads it back to `config`."""
    widths = config.layer_widths()[0]
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": config.vocab_size, "hidden_size": config.model_dim, "intermediate_size": widths.ffn_dim,
        "num_hidden_layers": config.num_layers, "num_attention_heads": widths.num_query_heads,
        "num_key_value_heads": widths.num_kv_heads, "head_dim": config.head_dim,
        "max_position_embeddings": config.max_context_length, "rms_norm_eps": config.norm_eps,
        # transformers 5 reads rope_parameters, 4 reads rope_theta: both, equal.
        "rope_theta": config.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings, "initializer_range": config.init_std,
        "torch_dtype": torch_dtype, "bos_token_id": eos_id, "eos_token_id": eos_id, "use_cache": True,
    }


def state_to_llama(state: dict[str, torch.Tensor], config: OpenELMConfig, source: str | Path
                   ) -> dict[str, torch.Tensor]:
    """The inverse of state_from_llama: our fused q/k/v and gate/up split back into Llama's tensors
    (each its own contiguous copy: safetensors refuses views of one storage)."""
    widths = config.layer_widths()[0]
    query, key_value = widths.num_query_heads * config.head_dim, widths.num_kv_heads * config.head_dim
    split_sizes = {"attn.qkv_proj.weight": [query, key_value, key_value],
                   "ffn.proj_1.weight": [widths.ffn_dim, widths.ffn_dim]}
    state = {key: value for key, value in state.items() if not _is_buffer(key)}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in state:
            raise CheckpointError(f"{source}: the checkpoint lacks '{key}'")
        used.add(key)
        return state[key].detach().to("cpu")

    out = {"model.embed_tokens.weight": take("token_embeddings.weight"), "model.norm.weight": take("norm.weight")}
    for index in range(config.num_layers):
        prefix = f"model.layers.{index}."
        for theirs, ours in LAYER_RENAMES.items():
            out[prefix + theirs] = take(f"layers.{index}.{ours}")
        for ours, parts in LAYER_FUSIONS.items():
            pieces = take(f"layers.{index}.{ours}").split(split_sizes[ours], dim=0)
            out.update({prefix + part: piece for part, piece in zip(parts, pieces)})
    if not config.tie_embeddings:
        out["lm_head.weight"] = take("lm_head.weight")
    left = sorted(set(state) - used)
    if left:
        raise CheckpointError(f"{source}: {len(left)} tensors have no place in a Llama (e.g. {left[:3]})")
    return {key: tensor.contiguous().clone() for key, tensor in out.items()}
