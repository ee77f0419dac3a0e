"""The configuration of an OpenELM that the toolkit exported, for transformers (`trust_remote_code`).

It reads the keys of Apple's `apple/OpenELM-*` config.json. Each layer's widths come from the lists
the exporter writes (`num_query_heads`, `num_kv_heads`) and from `ffn_multipliers` (one per layer,
or one for all) through the make-divisible rounding of OpenELM. Self-contained: torch and
transformers only.
"""

from __future__ import annotations

from transformers import PretrainedConfig


def make_divisible(value: float, divisor: int) -> int:
    """OpenELM's rounding of a width: the nearest multiple of `divisor`, at least `divisor` and
    never more than 10% under `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ToolkitOpenELMConfig(PretrainedConfig):
    """OpenELM widths, positions and tokens as config.json states them."""

    model_type = "openelm"
    # transformers' generic names for what generation and pipelines ask about
    attribute_map = {"hidden_size": "model_dim", "num_hidden_layers": "num_transformer_layers",
                     "max_position_embeddings": "max_context_length"}

    def __init__(
        self,
        vocab_size: int = 32000,
        max_context_length: int = 2048,
        num_transformer_layers: int = 12,
        model_dim: int = 1024,
        head_dim: int = 64,
        num_gqa_groups: int = 4,
        num_query_heads: list[int] | None = None,
        num_kv_heads: list[int] | None = None,
        ffn_multipliers: float | list[float] = 4.0,
        ffn_dim_divisor: int = 256,
        normalize_qk_projections: bool = True,
        share_input_output_layers: bool = True,
        rope_freq_constant: float = 10000.0,
        initializer_range: float = 0.02,
        bos_token_id: int = 2,
        eos_token_id: int = 2,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.max_context_length = max_context_length
        self.num_transformer_layers = num_transformer_layers
        self.model_dim = model_dim
        self.head_dim = head_dim
        self.num_gqa_groups = num_gqa_groups
        self.num_query_heads = list(num_query_heads or [])
        self.num_kv_heads = list(num_kv_heads or [])
        self.ffn_multipliers = ffn_multipliers
        self.ffn_dim_divisor = ffn_dim_divisor
        self.normalize_qk_projections = normalize_qk_projections
        self.share_input_output_layers = share_input_output_layers
        self.rope_freq_constant = rope_freq_constant
        self.initializer_range = initializer_range
        # The model reads a shared head from the embedding itself, so transformers must not tie anything.
        kwargs["tie_word_embeddings"] = False
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)

    def layer_widths(self) -> list[tuple[int, int, int]]:
        """(query heads, KV heads, FFN width) of each layer."""
        layers = self.num_transformer_layers
        if len(self.num_query_heads) != layers or len(self.num_kv_heads) != layers:
            raise ValueError(f"config.json needs num_query_heads and num_kv_heads with one entry per layer "
                             f"({layers}), as toolkit-export writes them")
        multipliers = self.ffn_multipliers
        if isinstance(multipliers, (int, float)):
            multipliers = [float(multipliers)] * layers
        if len(multipliers) != layers:
            raise ValueError(f"config.json's ffn_multipliers must be one number or one per layer ({layers})")
        return [(queries, kv, make_divisible(multiplier * self.model_dim, self.ffn_dim_divisor))
                for queries, kv, multiplier in zip(self.num_query_heads, self.num_kv_heads, multipliers)]
