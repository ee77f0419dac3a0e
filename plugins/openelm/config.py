"""OpenELM configuration: one typed dataclass, the layer-wise width rule, and the published presets.

OpenELM scales width layer by layer: layer i of N gets alpha_i = round(linspace(0.5, 1.0, N)[i], 2)
times the model width for its queries and beta_i = round(linspace(0.5, 4.0, N)[i], 2) times the
model width for its feed-forward network, each rounded to a hardware-friendly multiple by
`make_divisible`. KV heads are query heads divided by `num_gqa_groups` (the GQA group size).

Each preset is a subclass with different defaults, so a recipe naming `openelm-270M` can still
override any field (`model.max_context_length: 4096`). Field types are ones OmegaConf can validate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def make_divisible(value: float, divisor: int) -> int:
    """`value` rounded to the nearest multiple of `divisor`, never below `divisor` nor 10% under `value`.

    The MobileNet rounding rule that OpenELM uses for its head and FFN widths.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def layer_multipliers(bounds: list[float], num_layers: int) -> list[float]:
    """`num_layers` multipliers spaced evenly from bounds[0] to bounds[1], rounded to 2 decimals."""
    # numpy's linspace, as the published code uses it: its rounding decides the .xx5 ties.
    return [round(float(v), 2) for v in np.linspace(bounds[0], bounds[1], num=num_layers, dtype=float)]


# The values of `OpenELMConfig.attention` (model.attend runs them).
ATTENTION_IMPLEMENTATIONS = ("sdpa", "sdpa_flash", "sdpa_efficient", "sdpa_math", "matmul")

# The values of `OpenELMConfig.ffn_activation`: the gate's nonlinearity in the gated FFN.
FFN_ACTIVATIONS = ("silu", "relu", "shifted_relu")


@dataclass(frozen=True)
class LayerWidths:
    """The widths of one transformer block."""

    num_query_heads: int
    num_kv_heads: int
    ffn_dim: int


@dataclass
class OpenELMConfig:
    """An OpenELM decoder. The defaults are a small model that trains on a laptop CPU in minutes.

    `num_query_heads`, `num_kv_heads` and `ffn_dim` override the layer-wise rule with uniform
    widths (a LLaMA-shaped model); otherwise the multipliers decide each layer's widths. Each one
    overrides only its own width, so setting all three gives every layer the same shape (the
    `openelm/tiny_uniform` recipe: the control arm of tools/layerwise_ablation.py).
    """

    vocab_size: int = 4096
    max_context_length: int = 2048  # length of the precomputed RoPE table; longer inputs extend it
    num_layers: int = 6
    model_dim: int = 256
    head_dim: int = 32
    num_gqa_groups: int = 4  # query heads per KV head
    qkv_multipliers: list[float] = field(default_factory=lambda: [0.5, 1.0])
    ffn_multipliers: list[float] = field(default_factory=lambda: [0.5, 4.0])
    ffn_dim_divisor: int = 256
    num_query_heads: int | None = None  # uniform override of every layer's query heads
    num_kv_heads: int | None = None  # uniform override; default query heads // num_gqa_groups
    ffn_dim: int | None = None  # uniform override of every layer's FFN width
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    normalize_qk: bool = True  # per-head RMSNorm on queries and keys before RoPE
    tie_embeddings: bool = True  # the output head reuses the token embedding matrix
    init_std: float = 0.02
    activation_checkpointing: bool = False  # recompute each block in backward to save memory
    # causal attention kernel: sdpa (PyTorch picks; on CPU in bf16 the matmul path, see model.attend),
    # sdpa_flash / sdpa_efficient / sdpa_math (that SDPA backend only; an error where it cannot
    # run), or matmul (explicit batched matmuls and softmax, S x S probabilities kept)
    attention: str = "sdpa"
    # Relufication (ReLU Strikes Back, Mirzadeh et al. 2024). The FFN computes act(gate) * up with
    # act silu (SwiGLU, the published models), relu (stage 1: exact zeros, so sparse decoding can
    # skip those neurons) or shifted_relu, relu(gate - activation_shift) (more zeros for b > 0).
    # No parameter changes: a silu checkpoint loads into a relu model for fine-tuning.
    ffn_activation: str = "silu"
    activation_shift: float = 0.0  # b of shifted_relu; must stay 0 for the other activations
    relu_after_norm: bool = False  # stage 2: relu on the outputs of the pre-attention and pre-FFN norms

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_context_length", "num_layers", "model_dim", "head_dim",
                    "num_gqa_groups", "ffn_dim_divisor")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("num_query_heads", "num_kv_heads", "ffn_dim"):  # the uniform overrides, when set
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive when set, got {getattr(self, name)}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {self.head_dim}")
        if self.attention not in ATTENTION_IMPLEMENTATIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {self.attention!r}")
        if self.ffn_activation not in FFN_ACTIVATIONS:
            raise ValueError(f"ffn_activation must be one of {', '.join(FFN_ACTIVATIONS)}, got {self.ffn_activation!r}")
        if self.activation_shift != 0.0 and self.ffn_activation != "shifted_relu":
            raise ValueError(f"activation_shift {self.activation_shift} needs ffn_activation: shifted_relu, "
                             f"got {self.ffn_activation!r}")
        for name in ("qkv_multipliers", "ffn_multipliers"):
            if len(getattr(self, name)) != 2:
                raise ValueError(f"{name} must be [first_layer, last_layer], got {getattr(self, name)}")
        for width in self.layer_widths():
            if width.num_query_heads % width.num_kv_heads:
                raise ValueError(
                    f"query heads ({width.num_query_heads}) must be a multiple of KV heads ({width.num_kv_heads})"
                )

    def layer_widths(self) -> list[LayerWidths]:
        """Query heads, KV heads and FFN width of each of the `num_layers` blocks."""
        alphas = layer_multipliers(self.qkv_multipliers, self.num_layers)
        betas = layer_multipliers(self.ffn_multipliers, self.num_layers)
        widths = []
        for alpha, beta in zip(alphas, betas):
            if self.num_query_heads is not None:
                query_heads = self.num_query_heads
            else:
                query_width = make_divisible(alpha * self.model_dim, self.head_dim * self.num_gqa_groups)
                query_heads = query_width // self.head_dim
            if self.num_kv_heads is not None:
                kv_heads = self.num_kv_heads
            else:
                kv_heads = max(1, query_heads // self.num_gqa_groups)
            if self.ffn_dim is not None:
                ffn_dim = self.ffn_dim
            else:
                ffn_dim = make_divisible(beta * self.model_dim, self.ffn_dim_divisor)
            widths.append(LayerWidths(query_heads, kv_heads, ffn_dim))
        return widths


# The published sizes (CoreNet projects/openelm): 32k LLaMA vocabulary, 2048 context, GQA groups of 4.


@dataclass
class OpenELMTinyConfig(OpenELMConfig):
    """A 6-layer, width-256 OpenELM (about 4.9M parameters with a 4096 vocabulary) for CPU runs."""

    vocab_size: int = 4096
    max_context_length: int = 512
    num_layers: int = 6
    model_dim: int = 256
    head_dim: int = 32


@dataclass
class OpenELM270MConfig(OpenELMConfig):
    """OpenELM-270M: 16 layers, width 1280, 12 -> 20 query heads, 271.53M parameters."""

    vocab_size: int = 32000
    num_layers: int = 16
    model_dim: int = 1280
    head_dim: int = 64


@dataclass
class OpenELM450MConfig(OpenELMConfig):
    """OpenELM-450M: 20 layers, width 1536, 12 -> 24 query heads, 457.18M parameters."""

    vocab_size: int = 32000
    num_layers: int = 20
    model_dim: int = 1536
    head_dim: int = 64


@dataclass
class OpenELM1_1BConfig(OpenELMConfig):
    """OpenELM-1.1B: 28 layers, width 2048, 16 -> 32 query heads, 1079.89M parameters."""

    vocab_size: int = 32000
    num_layers: int = 28
    model_dim: int = 2048
    head_dim: int = 64


@dataclass
class OpenELM3BConfig(OpenELMConfig):
    """OpenELM-3B: 36 layers, width 3072, head dim 128, 12 -> 24 query heads, 3036.65M parameters."""

    vocab_size: int = 32000
    num_layers: int = 36
    model_dim: int = 3072
    head_dim: int = 128


# registered name -> config class
PRESETS: dict[str, type[OpenELMConfig]] = {
    "openelm": OpenELMConfig,
    "openelm-tiny": OpenELMTinyConfig,
    "openelm-270M": OpenELM270MConfig,
    "openelm-450M": OpenELM450MConfig,
    "openelm-1_1B": OpenELM1_1BConfig,
    "openelm-3B": OpenELM3BConfig,
}
