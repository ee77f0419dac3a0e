"""The README's "Writing a plugin" snippet runs as written: it defines what it uses, registers through
the plugin manager, and its model builds (also on the meta device, as dry runs need) and runs."""

from __future__ import annotations

import re
import sys
import types

import pluggy
import pytest
import torch

from helpers import REPO
from toolkit import hookspecs
from toolkit.plugins import ENTRY_POINT_GROUP, PluginInfo, collect_registries


def writing_a_plugin_blocks() -> dict[str, str]:
    """The fenced code blocks of the README section "Writing a plugin", by language; blocks of one
    language are joined in order, as a user pastes them into one file."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Writing a plugin", 1)[1].split("\n## ", 1)[0]
    blocks: dict[str, str] = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.DOTALL):
        blocks[language] = blocks.get(language, "") + body
    return blocks


@pytest.fixture
def snippet_module(tmp_path):
    blocks = writing_a_plugin_blocks()
    module = types.ModuleType("readme_plugin")
    module.__file__ = str(tmp_path / "toolkit_plugin.py")  # the recipe-dir snippet finds recipes/ beside it
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is made
    try:
        exec(compile(blocks["python"], "README.md (Writing a plugin)", "exec"), module.__dict__)
        yield module
    finally:
        del sys.modules[module.__name__]


def test_the_entry_point_block_names_the_toolkit_group():
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in writing_a_plugin_blocks()["toml"]


def test_the_python_snippet_registers_a_model_that_builds_and_runs(snippet_module):
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    manager.register(snippet_module, name="readme")
    registries = collect_registries(manager, [PluginInfo("readme", "readme_plugin", None, None)])
    component = registries["models"].get("my-model")
    assert component.plugin == "readme"
    config = component.make_config(hidden=8)
    model = component.factory(config)
    assert isinstance(model, torch.nn.Module)
    assert model(torch.zeros(4, config.in_features)).shape[0] == 4
    with torch.device("meta"):
        on_meta = component.factory(component.make_config())
    assert isinstance(on_meta, torch.nn.Module)
    assert all(parameter.is_meta for parameter in on_meta.parameters()) and list(on_meta.parameters())


def test_the_recipe_snippet_registers_its_folder_under_the_family_name(snippet_module, tmp_path):
    manager = pluggy.PluginManager(ENTRY_POINT_GROUP)
    manager.add_hookspecs(hookspecs)
    manager.register(snippet_module, name="readme")
    registries = collect_registries(manager, [PluginInfo("readme", "readme_plugin", None, None)])
    assert [(d.path, d.namespace) for d in registries.recipe_dirs if d.plugin == "readme"] == [
        (tmp_path / "recipes", "my_family")]
