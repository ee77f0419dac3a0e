"""openelm/tiny_uniform.yaml, the control arm of the layer-wise scaling ablation: every layer has the
same widths, the parameter count matches openelm/tiny.yaml's to within 1%, and everything but the
model's widths and the run directory (data, tokens, optimizer, schedule, trainer) is the same."""

from __future__ import annotations

import pytest
import torch

from plugins.openelm.config import OpenELMConfig
from toolkit.errors import RecipeError
from toolkit.plugins import get_registries
from toolkit.recipe import build_config, load_recipe


def built(name: str):
    recipe = load_recipe(name, [], get_registries())
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = recipe.models["model"].component.build()
    return recipe, model


def test_uniform_recipe_has_one_shape_in_every_layer_and_the_same_parameters():
    _, layerwise = built("openelm/tiny.yaml")
    _, uniform = built("openelm/tiny_uniform.yaml")
    layerwise_widths = layerwise.config.layer_widths()
    uniform_widths = uniform.config.layer_widths()
    # The layer-wise arm really varies (4 -> 8 heads, FFN 256 -> 1024); the uniform one does not.
    assert [(w.num_query_heads, w.num_kv_heads, w.ffn_dim) for w in layerwise_widths] == [
        (4, 1, 256), (8, 2, 512), (8, 2, 512), (8, 2, 768), (8, 2, 768), (8, 2, 1024)]
    assert [(w.num_query_heads, w.num_kv_heads, w.ffn_dim) for w in uniform_widths] == [(8, 2, 624)] * 6
    # The built modules follow the config (head dim 32, model width 256).
    for layer in uniform.layers:
        assert layer.attn.qkv_proj.weight.shape == ((8 + 2 * 2) * 32, 256)
        assert layer.ffn.proj_2.weight.shape == (256, 624)
    assert layerwise.num_parameters() == 4_902_528
    assert uniform.num_parameters() == 4_910_720
    assert abs(uniform.num_parameters() - layerwise.num_parameters()) / layerwise.num_parameters() < 0.01
    assert uniform.config.num_layers == layerwise.config.num_layers
    assert uniform.config.model_dim == layerwise.config.model_dim


def test_uniform_recipe_trains_on_the_same_tokens_with_the_same_settings():
    layerwise, _ = built("openelm/tiny.yaml")
    uniform, _ = built("openelm/tiny_uniform.yaml")
    assert uniform.values["model"].pop("num_query_heads") == 8
    assert uniform.values["model"].pop("num_kv_heads") == 2
    assert uniform.values["model"].pop("ffn_dim") == 624
    assert uniform.values["trainer"].pop("out_dir") != layerwise.values["trainer"].pop("out_dir")
    assert uniform.values == layerwise.values


@pytest.mark.parametrize("key", ["num_query_heads", "num_kv_heads", "ffn_dim"])
def test_a_uniform_width_that_is_not_positive_is_a_recipe_error(key):
    with pytest.raises(RecipeError) as error:
        build_config(OpenELMConfig, {key: 0}, "model")
    assert f"{key} must be positive when set, got 0" in error.value.one_line()
