"""The OpenELM plugin as the core sees it: registered names, recipe directory, published recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import run_command
from omegaconf import OmegaConf

from plugins.openelm import RECIPES_DIR
from plugins.openelm.config import PRESETS
from toolkit.config import DistConfig, TrainerConfig
from toolkit.errors import ToolkitError
from toolkit.plugins import RecipeDir, get_registries
from toolkit.recipe import build_config, load_recipe

REPO = Path(__file__).resolve().parents[3]
PUBLISHED = {  # recipe -> (model name, parameters in millions, peak lr, activation checkpointing, strategy)
    "270M": ("openelm-270M", 271.53, 5.3e-3, False, "ddp"),
    "450M": ("openelm-450M", 457.18, 3.9e-3, True, "ddp"),
    "1_1B": ("openelm-1_1B", 1079.89, 2.4e-3, True, "ddp"),
    "3B": ("openelm-3B", 3036.65, 1.2e-3, True, "fsdp"),
}


def test_models_and_recipe_dir_are_registered():
    registries = get_registries(refresh=True)
    models = registries["models"]
    for name in ("openelm", "openelm-tiny", "openelm-270M", "openelm-450M", "openelm-1_1B", "openelm-3B"):
        assert models.get(name).plugin == "openelm"
        assert models.get(name).config_class is PRESETS[name]
    assert RECIPES_DIR == REPO / "plugins" / "openelm" / "recipes"
    assert RecipeDir(RECIPES_DIR, namespace="openelm", plugin="openelm") in registries.recipe_dirs


def test_toolkit_plugins_shows_where_the_recipes_are():
    result = run_command(["toolkit-plugins", "--json"])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["openelm"]["registers"]["recipe_dirs"] == [f"openelm/ -> {RECIPES_DIR}"]


def test_generic_model_builds_from_the_registry_on_meta():
    component = get_registries()["models"].get("openelm")
    with torch.device("meta"):
        model = component.factory(component.make_config(num_layers=2))
    assert len(model.layers) == 2 and model.token_embeddings.weight.is_meta


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_published_recipe_sections(size):
    name, millions, lr, checkpointing, strategy = PUBLISHED[size]
    values = OmegaConf.to_container(OmegaConf.load(RECIPES_DIR / f"{size}.yaml"), resolve=True)
    model_values = dict(values["model"])
    assert model_values.pop("name") == name
    config = build_config(PRESETS[name], model_values, "model")
    assert config.activation_checkpointing is checkpointing
    assert (config.vocab_size, config.max_context_length) == (32000, 2048)
    with torch.device("meta"):
        model = get_registries()["models"].get(name).factory(config)
    assert abs(model.num_parameters() / 1e6 - millions) / millions < 1e-3
    assert values["optim"]["lr"] == lr and values["optim"]["betas"] == [0.9, 0.95]
    assert values["optim"]["weight_decay"] == 0.1 and values["loss"]["z_loss"] == 1e-4
    assert values["schedule"]["warmup_steps"] == 5000 and values["schedule"]["min_lr_ratio"] == 0.1
    trainer = build_config(TrainerConfig, values["trainer"], "trainer")
    assert (trainer.max_steps, trainer.precision, trainer.clip_grad) == (350000, "bf16", 1.0)
    assert build_config(DistConfig, values["dist"], "dist").strategy == strategy
    assert values["data"]["seq_len"] == 2048 and values["data"]["batch_size"] == 16


@pytest.mark.parametrize("size", list(PUBLISHED))
def test_published_recipe_loads_with_every_plugin(size):
    """The whole recipe through the core, once the LM and optimizer plugins register their parts."""
    registries = get_registries()
    needed = {"tasks": "causal_lm", "losses": "cross_entropy", "datasets": "text_shards",
              "optimizers": "adamw", "schedulers": "cosine"}
    missing = [f"{kind}/{name}" for kind, name in needed.items() if name not in registries[kind]]
    assert not missing, f"first-party components not registered: {', '.join(missing)}"
    try:
        recipe = load_recipe(f"openelm/{size}.yaml", [], registries)
    except ToolkitError as error:  # pragma: no cover - shows the one-line message
        pytest.fail(error.one_line())
    with torch.device("meta"):
        model = recipe.models["model"].component.build()
    assert len(model.layer_summary()) == model.config.num_layers
