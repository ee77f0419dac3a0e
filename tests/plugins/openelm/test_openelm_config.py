"""OpenELM config: the layer-wise width rule, make_divisible, presets, and recipe validation."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from plugins.openelm.config import PRESETS, OpenELM270MConfig, OpenELMConfig, layer_multipliers, make_divisible
from toolkit.errors import RecipeError
from toolkit.recipe import build_config


@pytest.mark.parametrize(
    "value, divisor, expected",
    [
        (640, 256, 768),  # 270M first layer: rounds half up to the next multiple
        (1280, 256, 1280),  # already a multiple
        (5120, 256, 5120),
        (10, 256, 256),  # never below the divisor
        (0, 8, 8),
        (127.9, 128, 128),
        (140, 128, 128),  # rounds down to 128 >= 0.9 * 140 = 126: kept
        (191.9, 128, 256),  # rounds down to 128, below 0.9 * 191.9 = 172.7: one more step
        (192, 128, 256),  # int(192 + 64) // 128 * 128 = 256
        (300, 256, 512),  # 256 is below 0.9 * 300 = 270, so one more step
    ],
)
def test_make_divisible_cases(value, divisor, expected):
    assert make_divisible(value, divisor) == expected


@settings(max_examples=300, deadline=None)
@given(value=st.floats(min_value=0, max_value=1e6, allow_nan=False), divisor=st.integers(1, 1024))
def test_make_divisible_properties(value, divisor):
    result = make_divisible(value, divisor)
    assert result % divisor == 0
    assert result >= divisor
    assert result >= 0.9 * value  # never more than 10% below the request
    assert result <= max(divisor, value + divisor)  # never more than one step above


@settings(max_examples=100, deadline=None)
@given(multiple=st.integers(1, 1000), divisor=st.integers(1, 512))
def test_make_divisible_keeps_exact_multiples(multiple, divisor):
    assert make_divisible(multiple * divisor, divisor) == multiple * divisor


def test_layer_multipliers_rounding_and_ends():
    assert layer_multipliers([0.5, 1.0], 16)[0] == 0.5
    assert layer_multipliers([0.5, 1.0], 16)[-1] == 1.0
    assert layer_multipliers([0.5, 4.0], 16)[1] == 0.73  # 0.5 + 3.5 / 15 = 0.7333
    assert layer_multipliers([0.5, 1.0], 1) == [0.5]


def test_270m_layer_widths_match_the_published_table():
    widths = OpenELM270MConfig().layer_widths()
    assert len(widths) == 16
    assert (widths[0].num_query_heads, widths[0].num_kv_heads, widths[0].ffn_dim) == (12, 3, 768)
    assert (widths[-1].num_query_heads, widths[-1].num_kv_heads, widths[-1].ffn_dim) == (20, 5, 5120)
    assert all(w.num_query_heads == 4 * w.num_kv_heads for w in widths)


@pytest.mark.parametrize(
    "name, layers, first, last",
    [
        ("openelm-270M", 16, (12, 3, 768), (20, 5, 5120)),
        ("openelm-450M", 20, (12, 3, 768), (24, 6, 6144)),
        ("openelm-1_1B", 28, (16, 4, 1024), (32, 8, 8192)),
        ("openelm-3B", 36, (12, 3, 1536), (24, 6, 12288)),
    ],
)
def test_preset_first_and_last_layers(name, layers, first, last):
    widths = PRESETS[name]().layer_widths()
    assert len(widths) == layers
    assert (widths[0].num_query_heads, widths[0].num_kv_heads, widths[0].ffn_dim) == first
    assert (widths[-1].num_query_heads, widths[-1].num_kv_heads, widths[-1].ffn_dim) == last


def test_1_1b_has_two_adjacent_layers_with_the_same_ffn_width():
    ffn = [w.ffn_dim for w in PRESETS["openelm-1_1B"]().layer_widths()]
    assert any(a == b for a, b in itertools.pairwise(ffn))


def test_uniform_overrides():
    config = OpenELMConfig(num_query_heads=8, num_kv_heads=2, ffn_dim=768)
    assert {(w.num_query_heads, w.num_kv_heads, w.ffn_dim) for w in config.layer_widths()} == {(8, 2, 768)}
    # equal multipliers at both ends also give uniform layers
    config = OpenELMConfig(qkv_multipliers=[1.0, 1.0], ffn_multipliers=[3.0, 3.0])
    assert len(set(config.layer_widths())) == 1
    # KV heads default to query heads / group size
    assert OpenELMConfig(num_query_heads=8, num_gqa_groups=2).layer_widths()[0].num_kv_heads == 4


@pytest.mark.parametrize("config_class", list(PRESETS.values()))
def test_presets_are_structured_configs(config_class):
    structured = OmegaConf.structured(config_class)
    assert OmegaConf.to_object(structured) == config_class()
    for field in dataclasses.fields(config_class):
        assert field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def test_recipe_values_override_preset_defaults():
    config = build_config(
        OpenELM270MConfig, {"activation_checkpointing": True, "max_context_length": 4096, "qkv_multipliers": [0.5, 0.5]}, "model"
    )
    assert isinstance(config, OpenELM270MConfig)
    assert config.activation_checkpointing and config.max_context_length == 4096
    assert config.model_dim == 1280 and config.num_layers == 16
    assert {w.num_query_heads for w in config.layer_widths()} == {12}


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"head_dim": 33}, "head_dim must be even"),
        ({"head_dimm": 32}, "did you mean"),
        ({"num_query_heads": "many"}, "model.num_query_heads"),
        ({"qkv_multipliers": [0.5]}, "qkv_multipliers"),
        ({"num_query_heads": 6, "num_kv_heads": 4}, "multiple of KV heads"),
        ({"num_layers": 0}, "num_layers must be positive"),
    ],
)
def test_bad_values_are_recipe_errors(values, fragment):
    with pytest.raises(RecipeError) as error:
        build_config(OpenELMConfig, values, "model")
    assert fragment in error.value.one_line()
