"""Recipes: inheritance, overrides that win, validation with paths and did-you-mean, no code execution."""

from __future__ import annotations

from pathlib import Path

import pluggy
import pytest

from toolkit import hookimpl, hookspecs
from toolkit.errors import PluginError, RecipeError
from toolkit.plugins import RecipeDir, collect_registries, get_registries
from toolkit.recipe import find_recipe, load_recipe

BASE = """
model: {name: openelm, num_layers: 2, model_dim: 64}
task: {name: causal_lm}
loss: {name: cross_entropy, z_loss: 1.0e-4}
data: {name: text_shards, seq_len: 32, batch_size: 2}
optim: {name: adamw, lr: 1.0e-3, weight_decay: 0.1}
schedule: {name: cosine, warmup_steps: 2}
trainer: {max_steps: 5, precision: fp32}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def registries():
    return get_registries(refresh=True)


def test_base_inheritance_and_overrides_win(tmp_path, registries):
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", "base: base.yaml\noptim: {lr: 3.0e-3}\ntrainer: {max_steps: 7}\n")
    recipe = load_recipe(str(child), ["trainer.max_steps=9", "optim.betas=[0.9,0.95]"], registries)
    optim = recipe.components["optim"].config
    assert optim.lr == 3.0e-3  # the child beats its base
    assert optim.weight_decay == 0.1  # deep merge keeps the base's other keys
    assert list(optim.betas) == [0.9, 0.95]
    assert recipe.trainer.max_steps == 9  # the command line beats the file
    assert recipe.values["trainer"]["max_steps"] == 9
    assert "base" not in recipe.values


def test_interpolation_between_sections(tmp_path, registries):
    text = BASE.replace("model_dim: 64}", "model_dim: 64, vocab_size: '${data.vocab_size}'}")
    recipe = load_recipe(str(write(tmp_path, "r.yaml", text)), ["data.vocab_size=512"], registries)
    assert recipe.models["model"].component.config.vocab_size == 512


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("optim.lrr=1", ["optim.lrr: unknown key", "did you mean 'lr'"]),
        ("trainer.max_step=3", ["trainer.max_step: unknown key", "did you mean 'max_steps'"]),
        ("trainer.max_steps=many", ["trainer.max_steps", "many"]),
        ("optim.name=adamm", ["optim.name: unknown optimizer 'adamm'", "adamw", "did you mean 'adamw'"]),
        ("model.name=nope", ["unknown model 'nope'", "openelm-270M"]),
        ("trainr.max_steps=3", ["unknown recipe section 'trainr'", "did you mean 'trainer'"]),
        ("oops", ["override 'oops'"]),
        ("model.extra={a:[b]}", ["override 'model.extra={a:[b]}'", "not valid YAML", "column 3", "space after"]),
    ],
)
def test_bad_recipes_get_one_clear_message(tmp_path, registries, override, fragments):
    path = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(RecipeError) as caught:
        load_recipe(str(path), [override], registries)
    line = caught.value.one_line()
    for fragment in fragments:
        assert fragment in line


def test_missing_file_and_missing_section(tmp_path, registries):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(str(tmp_path / "nope.yaml"), [], registries)
    path = write(tmp_path, "r.yaml", BASE.replace("task: {name: causal_lm}\n", ""))
    with pytest.raises(RecipeError, match="no 'task' section"):
        load_recipe(str(path), [], registries)


def test_inheritance_loop_is_reported(tmp_path, registries):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError, match="loops"):
        load_recipe(str(tmp_path / "a.yaml"), [], registries)


def test_recipes_never_execute_code(tmp_path, registries):
    marker = tmp_path / "executed"
    evil = BASE + f"\nextra: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(RecipeError):
        load_recipe(str(write(tmp_path, "r.yaml", evil)), [], registries)
    assert not marker.exists()


def test_recipes_found_in_plugin_recipe_dirs(registries):
    recipe = load_recipe("openelm/270M.yaml", [], registries)
    assert recipe.models["model"].component.component.name == "openelm-270M"


def test_an_override_with_nothing_after_the_equals_sign_is_the_empty_string(tmp_path, registries):
    recipe = load_recipe(str(write(tmp_path, "r.yaml", BASE + "  \n")),
                         ["data.val_shards=", "data.tokenizer=''", "data.cache_dir="], registries)
    data = recipe.components["data"].config
    assert (data.val_shards, data.tokenizer, data.cache_dir) == ("", "", "")


def test_precision_and_strategy_are_checked_when_the_recipe_loads(plugin_env):
    from helpers import EXAMPLE_RECIPE

    for override, fragment in (("trainer.precision=fp16", "trainer.precision: Invalid value 'fp16'"),
                               ("dist.strategy=zero3", "dist.strategy: Invalid value 'zero3'")):
        with pytest.raises(RecipeError) as caught:
            load_recipe(str(EXAMPLE_RECIPE), [override], get_registries())
        assert str(EXAMPLE_RECIPE) in caught.value.message and fragment in caught.value.message


def test_models_section_names_trained_and_frozen_models(plugin_env, tmp_path):
    from helpers import EXAMPLE_RECIPE

    base = ["model=null", "models.student.name=wave-mlp", "models.teacher.name=wave-mlp",
            "models.teacher.frozen=true", "models.teacher.dtype=bf16"]
    recipe = load_recipe(str(EXAMPLE_RECIPE), base, get_registries())
    assert list(recipe.models) == ["student", "teacher"]
    assert recipe.models["teacher"].frozen and recipe.models["teacher"].dtype == "bf16"
    assert not recipe.models["student"].frozen and recipe.models["student"].component.component.name == "wave-mlp"
    bad = {
        "models.student.frozen=true": "every model under 'models:' is frozen",
        "models.student.dtype=bf16": "only a frozen model is kept in bf16",
        "models.teacher.name=null": "models.teacher needs a 'name:'",
        "model.name=wave-mlp": "has both 'model:' and 'models:'",
    }
    for override, fragment in bad.items():
        overrides = [item for item in base if item != "model=null"] if override.startswith("model.") else base
        with pytest.raises(RecipeError) as caught:
            load_recipe(str(EXAMPLE_RECIPE), [*overrides, override], get_registries())
        assert fragment in caught.value.message, (override, caught.value.message)


def test_a_namespaced_recipe_dir_answers_only_names_under_its_prefix(tmp_path):
    write(tmp_path, "small.yaml", BASE)
    family = RecipeDir(tmp_path, namespace="family", plugin="family")
    assert family.candidate("family/small.yaml") == tmp_path / "small.yaml"
    assert family.candidate("other/small.yaml") is None and family.candidate("small.yaml") is None
    assert find_recipe("family/small", [family]) == tmp_path / "small.yaml"
    with pytest.raises(RecipeError, match="recipe file not found: small.yaml"):
        find_recipe("small.yaml", [family])


def test_a_plain_recipe_dir_still_answers_every_name(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "small.yaml", BASE)
    assert find_recipe("sub/small.yaml", [RecipeDir(tmp_path)]) == tmp_path / "sub" / "small.yaml"


def test_each_family_finds_its_recipes_in_its_own_plugin(registries):
    for name, plugin in [("openelm/tiny.yaml", "openelm"), ("catlip/tiny.yaml", "catlip"),
                         ("clip/tiny.yaml", "clip"), ("transfer/fashion_mnist.yaml", "transfer"),
                         ("distill/tiny.yaml", "distill")]:
        path = find_recipe(name, registries.recipe_dirs)
        assert path.parent.name == "recipes" and path.parent.parent.name == plugin, path


def test_base_reaches_into_another_plugins_namespace(registries):
    """clip/tiny.yaml inherits catlip/tiny.yaml (its data and trainer) across the two plugins."""
    recipe = load_recipe("clip/tiny.yaml", [], registries)
    assert recipe.models["model"].component.component.name == "clip-vit-tiny"
    assert recipe.components["data"].config.top_k == 384 and recipe.trainer.max_steps == 600
    assert recipe.trainer.out_dir == "runs/clip-tiny"


def test_two_plugins_claiming_one_namespace_is_an_error_naming_both(tmp_path):
    manager = pluggy.PluginManager("toolkit")
    manager.add_hookspecs(hookspecs)

    class First:
        @hookimpl
        def register_recipe_dirs(self, register):
            register(tmp_path / "a", namespace="family")

    class Second:
        @hookimpl
        def register_recipe_dirs(self, register):
            register(tmp_path / "b", namespace="family")

    class Plain:  # what a third-party plugin written before namespaces does
        @hookimpl
        def register_recipe_dirs(self, register):
            register(tmp_path / "c")

    manager.register(Plain(), name="plain")
    manager.register(First(), name="first")
    registries = collect_registries(manager, [])
    assert registries.recipe_dirs == [RecipeDir(tmp_path / "c", "", "plain"),
                                      RecipeDir(tmp_path / "a", "family", "first")]
    manager.register(Second(), name="second")
    with pytest.raises(PluginError, match="'family/'.*'first'.*'second'|'family/'.*'second'.*'first'"):
        collect_registries(manager, [])
