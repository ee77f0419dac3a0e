"""OpenELM checkpoints in and out: the Hugging Face `apple/OpenELM-*` layout and CoreNet `.pt` files.

Hugging Face layout: a directory with `config.json` (model_type "openelm") and `model.safetensors`
(or `pytorch_model.bin`, or shards listed in `model.safetensors.index.json`). Parameter names are
this plugin's names with a `transformer.` prefix; a tied model has no `lm_head.weight`, an untied
one stores it as `lm_head.weight` (no prefix). RoPE tables are never saved. CoreNet's own `.pt`
holds the same names without the prefix.

How the Hugging Face config decides each layer's widths (its `__post_init__`): query heads from
`qkv_multipliers` (one number, or a [first, last] pair spread over the layers with
round(linspace, 2)) through make_divisible(m * model_dim, head_dim * num_gqa_groups) / head_dim;
KV heads = query heads // num_gqa_groups; FFN width = make_divisible(m * model_dim,
ffn_dim_divisor) with `ffn_multipliers` one number, a pair, or one value per layer. The
`num_query_heads` / `num_kv_heads` lists in config.json are what that rule produced; they must agree.

Nothing here unpickles arbitrary objects: `.bin` / `.pt` files go through `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import json
from numbers import Number
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from plugins.openelm.config import (
    LayerWidths,
    OpenELMConfig,
    layer_multipliers,
    make_divisible,
)
from plugins.openelm.model import OpenELM, rope_tables
from toolkit.checkpoint import load_pickle_free, load_state_strict, load_weights
from toolkit.errors import CheckpointError
from toolkit.files import atomic_directory

HF_PREFIX = "transformer."
HEAD_KEY = "lm_head.weight"
HF_NORM_EPS = 1e-6  # hard-coded in the Hugging Face OpenELM model, not part of its config.json
CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# Buffers derived from the config, never weights: ours, and the HF rotary module's caches.
NON_PERSISTENT_SUFFIXES = ("rope_cos", "rope_sin", "_cached_cos", "_cached_sin", "inv_freq")

REQUIRED_HF_KEYS = ("num_transformer_layers", "model_dim", "head_dim", "num_gqa_groups", "qkv_multipliers",
                    "ffn_multipliers", "vocab_size")


# ---------------------------------------------------------------------------------------------
# config.json <-> OpenELMConfig


def _spread(value: Any, num_layers: int, name: str, source: str) -> list[float]:
    """A multiplier setting (one number, [first, last], or one per layer) as one value per layer."""
    if isinstance(value, Number) and not isinstance(value, bool):
        return [float(value)] * num_layers
    if isinstance(value, (list, tuple)) and all(isinstance(v, Number) and not isinstance(v, bool) for v in value):
        if len(value) == 2:
            return layer_multipliers([float(value[0]), float(value[1])], num_layers)
        if len(value) == num_layers:
            return [float(v) for v in value]
    raise CheckpointError(
        f"{source}: {name} must be a number, [first, last] or one value per layer ({num_layers}), got {value!r}"
    )


def hf_layer_widths(config_json: dict, source: str = CONFIG_FILE) -> list[LayerWidths]:
    """Each layer's widths as the Hugging Face OpenELM config derives them from config.json."""
    num_layers = int(config_json["num_transformer_layers"])
    model_dim, head_dim = int(config_json["model_dim"]), int(config_json["head_dim"])
    groups, divisor = int(config_json["num_gqa_groups"]), int(config_json.get("ffn_dim_divisor", 256))
    qkv = config_json["qkv_multipliers"]
    if isinstance(qkv, (list, tuple)) and len(qkv) != 2:
        raise CheckpointError(f"{source}: qkv_multipliers must be a number or [first, last], got {qkv!r}")
    widths = []
    for alpha, beta in zip(_spread(qkv, num_layers, "qkv_multipliers", source),
                           _spread(config_json["ffn_multipliers"], num_layers, "ffn_multipliers", source)):
        query_heads = make_divisible(alpha * model_dim, head_dim * groups) // head_dim
        widths.append(LayerWidths(query_heads, query_heads // groups, make_divisible(beta * model_dim, divisor)))
    return widths


def _first_mismatch(got: list[LayerWidths], want: list[LayerWidths]) -> str:
    for index, (a, b) in enumerate(zip(got, want)):
        for name in ("num_query_heads", "num_kv_heads", "ffn_dim"):
            if getattr(a, name) != getattr(b, name):
                return f"layer {index} {name}: {getattr(b, name)} in config.json, {getattr(a, name)} in OpenELMConfig"
    return f"{len(want)} layers in config.json, {len(got)} in OpenELMConfig"


def config_from_hf(config_json: dict, source: str | Path = CONFIG_FILE) -> OpenELMConfig:
    """The OpenELMConfig of a Hugging Face OpenELM config.json; CheckpointError if not expressible exactly.

    `rope_max_length` is only the length of HF's precomputed RoPE table; this model computes the
    same values for any position, so it is not kept.
    """
    source = str(source)
    if not isinstance(config_json, dict):
        raise CheckpointError(f"{source}: not a JSON object")
    model_type = config_json.get("model_type", "openelm")
    if model_type != "openelm":
        raise CheckpointError(f"{source}: model_type is {model_type!r}, not 'openelm'")
    missing = [key for key in REQUIRED_HF_KEYS if key not in config_json]
    if missing:
        raise CheckpointError(f"{source}: not an OpenELM config.json, missing {', '.join(missing)}")
    for key, expected in (("ffn_with_glu", True), ("activation_fn_name", "swish"),
                          ("normalization_layer_name", "rms_norm")):
        if key in config_json and config_json[key] != expected:
            raise CheckpointError(f"{source}: {key} is {config_json[key]!r}; OpenELM here supports only {expected!r}")
    try:
        num_layers = int(config_json["num_transformer_layers"])
        want = hf_layer_widths(config_json, source)
        for name, index in (("num_query_heads", 0), ("num_kv_heads", 1)):
            listed = config_json.get(name)
            if listed is None:
                continue
            derived = [(w.num_query_heads, w.num_kv_heads)[index] for w in want]
            if list(listed) != derived:
                raise CheckpointError(f"{source}: {name} {list(listed)} disagrees with the {derived} that "
                                      f"qkv_multipliers and num_gqa_groups give")

        def pair(value):
            spread = _spread(value, num_layers, "multipliers", source)
            return [spread[0], spread[-1]]

        values = {
            "vocab_size": int(config_json["vocab_size"]),
            "max_context_length": int(config_json.get("max_context_length", 2048)),
            "num_layers": num_layers,
            "model_dim": int(config_json["model_dim"]),
            "head_dim": int(config_json["head_dim"]),
            "num_gqa_groups": int(config_json["num_gqa_groups"]),
            "qkv_multipliers": pair(config_json["qkv_multipliers"]),
            "ffn_multipliers": pair(config_json["ffn_multipliers"]),
            "ffn_dim_divisor": int(config_json.get("ffn_dim_divisor", 256)),
            "rope_theta": float(config_json.get("rope_freq_constant", 10000.0)),
            "norm_eps": HF_NORM_EPS,
            "normalize_qk": bool(config_json.get("normalize_qk_projections", True)),
            "tie_embeddings": bool(config_json.get("share_input_output_layers", True)),
            "init_std": float(config_json.get("initializer_range", 0.02)),
        }
        config = OpenELMConfig(**values)
        # Widths the layer-wise rule cannot produce (a uniform multiplier off the 2-decimal grid):
        # fall back to the uniform overrides where the widths are the same in every layer.
        if config.layer_widths() != want:
            queries = {(w.num_query_heads, w.num_kv_heads) for w in want}
            ffns = {w.ffn_dim for w in want}
            if len(queries) == 1 and [w.num_query_heads for w in config.layer_widths()] != [
                    w.num_query_heads for w in want]:
                values["num_query_heads"], values["num_kv_heads"] = next(iter(queries))
            if len(ffns) == 1 and [w.ffn_dim for w in config.layer_widths()] != [w.ffn_dim for w in want]:
                values["ffn_dim"] = next(iter(ffns))
            config = OpenELMConfig(**values)
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{source}: invalid OpenELM config ({error})".splitlines()[0]) from error
    got = config.layer_widths()
    if got != want:
        raise CheckpointError(f"{source}: OpenELMConfig cannot express this config exactly: {_first_mismatch(got, want)}")
    return config


def config_to_hf(config: OpenELMConfig, torch_dtype: str = "float32") -> dict:
    """A Hugging Face OpenELM config.json for `config`; CheckpointError if that layout cannot express it."""
    if config.norm_eps != HF_NORM_EPS:
        raise CheckpointError(f"norm_eps {config.norm_eps} cannot be exported: Hugging Face OpenELM fixes it "
                              f"at {HF_NORM_EPS}")
    widths = config.layer_widths()
    ffn_divisor = config.ffn_dim_divisor
    if config.num_query_heads is None and config.num_kv_heads is None:
        qkv_multipliers: Any = [float(v) for v in config.qkv_multipliers]
    else:  # uniform heads: one multiplier that lands exactly on them
        qkv_multipliers = widths[0].num_query_heads * config.head_dim / config.model_dim
    if config.ffn_dim is None:
        ffn_multipliers = layer_multipliers(config.ffn_multipliers, config.num_layers)
    else:
        ffn_multipliers = [config.ffn_dim / config.model_dim] * config.num_layers
        if config.ffn_dim % ffn_divisor:
            ffn_divisor = config.ffn_dim  # make_divisible(F, F) == F; the divisor has no other use
    hf = {
        "architectures": ["OpenELMForCausalLM"],
        "model_type": "openelm",
        "activation_fn_name": "swish",
        "ffn_dim_divisor": ffn_divisor,
        "ffn_multipliers": ffn_multipliers,
        "ffn_with_glu": True,
        "head_dim": config.head_dim,
        "initializer_range": config.init_std,
        "max_context_length": config.max_context_length,
        "model_dim": config.model_dim,
        "normalization_layer_name": "rms_norm",
        "normalize_qk_projections": config.normalize_qk,
        "num_gqa_groups": config.num_gqa_groups,
        "num_kv_heads": [w.num_kv_heads for w in widths],
        "num_query_heads": [w.num_query_heads for w in widths],
        "num_transformer_layers": config.num_layers,
        "qkv_multipliers": qkv_multipliers,
        "rope_freq_constant": config.rope_theta,
        "rope_max_length": 2 * config.max_context_length,  # as apple/OpenELM-*: 4096 for a 2048 context
        "share_input_output_layers": config.tie_embeddings,
        "torch_dtype": torch_dtype,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }
    derived = hf_layer_widths(hf)
    if derived != widths:
        raise CheckpointError(f"this OpenELMConfig cannot be written as a Hugging Face config.json: "
                              f"{_first_mismatch(widths, derived).replace('config.json', 'the HF rule')}")
    return hf


# ---------------------------------------------------------------------------------------------
# State dicts


def _is_buffer(key: str) -> bool:
    return key.endswith(NON_PERSISTENT_SUFFIXES)


def state_to_hf(state: dict[str, torch.Tensor], tie_embeddings: bool = True) -> dict[str, torch.Tensor]:
    """This plugin's state dict in the HF layout: `transformer.` prefix, no lm_head when tied, no buffers."""
    out = {}
    for key, tensor in state.items():
        if _is_buffer(key) or (key == HEAD_KEY and tie_embeddings):
            continue
        out[key if key == HEAD_KEY else HF_PREFIX + key] = tensor
    return out


def state_from_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An HF (or CoreNet: no prefix) OpenELM state dict with this plugin's names; buffers dropped."""
    out = {}
    for key, tensor in state.items():
        if _is_buffer(key):
            continue
        out[key.removeprefix(HF_PREFIX)] = tensor
    return out


def load_corenet_pt(path: str | Path) -> dict[str, torch.Tensor]:
    """A CoreNet `.pt` state dict (tensors only; pickled objects refused), with this plugin's names."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    state = load_pickle_free(path)
    if isinstance(state, dict):
        for wrapper in ("model_state_dict", "state_dict", "model"):
            if isinstance(state.get(wrapper), dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state_from_hf(state)


# ---------------------------------------------------------------------------------------------
# Import


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable JSON ({error})".splitlines()[0]) from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return value


def _load_sharded(directory: Path, index_name: str, loader) -> dict[str, torch.Tensor]:
    index_path = directory / index_name
    weight_map = _read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no weight_map")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = directory / shard
        if Path(shard).name != shard or not shard_path.is_file():
            raise CheckpointError(f"{index_path}: shard {shard!r} is missing")
        state.update(loader(shard_path))
    missing = [key for key in weight_map if key not in state]
    if missing:
        raise CheckpointError(f"{index_path}: {len(missing)} listed tensors are in no shard (e.g. {missing[:3]})")
    return state


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    state = load_pickle_free(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return state


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The raw tensors of an HF directory and the file (or index) they came from."""
    for name, load in ((SAFETENSORS_FILE, load_weights), (BIN_FILE, _load_bin)):
        if (directory / name).is_file():
            return load(directory / name), directory / name
    for name, load in ((SAFETENSORS_INDEX, load_weights), (BIN_INDEX, _load_bin)):
        if (directory / name).is_file():
            return _load_sharded(directory, name, load), directory / name
    raise CheckpointError(f"{directory}: has {CONFIG_FILE} but no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX} or {BIN_FILE}")


def _resolve_config(config: OpenELMConfig | dict | str | Path | None, weights: Path) -> OpenELMConfig:
    if isinstance(config, OpenELMConfig):
        return config
    if isinstance(config, dict):
        return config_from_hf(config)
    path = Path(config) if config is not None else weights.parent / CONFIG_FILE
    if path.is_dir():
        path = path / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{weights}: a CoreNet .pt needs an OpenELM config.json ({path} does not exist)")
    return config_from_hf(_read_json(path), path)


def build_from_state(config: OpenELMConfig, state: dict[str, torch.Tensor], source: Path) -> OpenELM:
    """An OpenELM holding exactly `state`'s tensors (no copy, no random init); checks names and shapes."""
    with torch.device("meta"):
        model = OpenELM(config)
    load_state_strict(model, state, source, assign=True)
    cos, sin = rope_tables(config.max_context_length, config.head_dim, config.rope_theta, device="cpu")
    model.rope_cos, model.rope_sin = cos, sin
    return model.eval()


def hf_config_path(src: Path, family: str) -> Path | None:
    """The config.json of `src` when it is a directory (CheckpointError if it has none), None when it
    is a file; CheckpointError if it does not exist. `family` names the layout in messages."""
    if not src.exists():
        raise CheckpointError(f"{src}: no such file or directory")
    if not src.is_dir():
        return None
    if not (src / CONFIG_FILE).is_file():
        raise CheckpointError(f"{src}: not a Hugging Face {family} directory (no {CONFIG_FILE})")
    return src / CONFIG_FILE


def import_openelm(src: str | Path, config: OpenELMConfig | dict | str | Path | None = None
                   ) -> tuple[OpenELM, OpenELMConfig]:
    """Load an HF OpenELM directory, or a CoreNet `.pt` (config: OpenELMConfig, config.json dict or
    path; default the `config.json` beside it), into an OpenELM with bit-identical weights."""
    src = Path(src)
    config_path = hf_config_path(src, "OpenELM")
    if config_path is not None:
        resolved = config if isinstance(config, OpenELMConfig) else config_from_hf(_read_json(config_path), config_path)
        raw, weights_path = read_hf_weights(src)
        state = state_from_hf(raw)
    else:
        weights_path = src
        state = load_corenet_pt(src)
        resolved = _resolve_config(config, src)
        state = trim_padded_vocabulary(state, resolved.vocab_size)
    return build_from_state(resolved, state, weights_path), resolved


EMBEDDING_KEY = "token_embeddings.weight"


def trim_padded_vocabulary(state: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """Drop the rows CoreNet pads its embedding with (32000 LLaMA tokens are stored as 32128 rows,
    a multiple of 64 for fast matmuls); no token id reaches them, so nothing is lost. Any other
    size difference is left for the strict shape check to report."""
    embedding = state.get(EMBEDDING_KEY)
    if embedding is None or embedding.shape[0] <= vocab_size:
        return state
    padded_to = embedding.shape[0]
    if padded_to % 64 != 0 or padded_to - vocab_size >= 64 * 8:
        return state
    return {**state, EMBEDDING_KEY: embedding[:vocab_size]}


# ---------------------------------------------------------------------------------------------
# Export


def _dtype_name(state: dict[str, torch.Tensor]) -> str:
    dtypes = {tensor.dtype for tensor in state.values() if tensor.is_floating_point()}
    return str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else "float32"


def write_hf(config: OpenELMConfig, state: dict[str, torch.Tensor], out_dir: str | Path) -> Path:
    """Write `state` (this plugin's names) as `out_dir/config.json` + `out_dir/model.safetensors`,
    atomically: both are written into a temporary directory that is then renamed to `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise CheckpointError(f"{out_dir}: already exists and is not an empty directory")
    state = {key: tensor.detach().to("cpu").contiguous()
             for key, tensor in state_to_hf(state, config.tie_embeddings).items()}
    hf_config = config_to_hf(config, _dtype_name(state))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # An empty `out_dir` (checked above) is replaced by the rename; a non-empty one that appeared
    # meanwhile makes it fail, leaving that directory as it was.
    with atomic_directory(out_dir) as staging:
        save_file(state, str(staging / SAFETENSORS_FILE), metadata={"format": "pt"})
        (staging / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    return out_dir
