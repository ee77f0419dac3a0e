"""Registries, the plugin manager, `toolkit-plugins`, and a third-party plugin trained end to end."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass

import pytest

from helpers import EXAMPLE_RECIPE, assert_error_output, assert_one_line_error, run_command
from toolkit.cli.common import run_cli
from toolkit.errors import PluginError, RegistryError, ToolkitError
from toolkit.plugins import get_registries
from toolkit.registry import Registry


@dataclass
class SomeConfig:
    size: int = 1


def test_duplicate_name_names_both_plugins():
    registry = Registry("models")
    registry.add("gpt", lambda config: None, SomeConfig, plugin="first")
    with pytest.raises(RegistryError) as caught:
        registry.add("gpt", lambda config: None, SomeConfig, plugin="second")
    assert "'first'" in caught.value.message and "'second'" in caught.value.message


def test_unknown_name_lists_known_and_closest():
    registry = Registry("models")
    for name in ("openelm-270M", "openelm-450M", "vit-b16"):
        registry.add(name, lambda config: None, None, plugin="p")
    with pytest.raises(RegistryError) as caught:
        registry.get("openelm-270m")
    assert "openelm-450M" in caught.value.message and "vit-b16" in caught.value.message
    assert caught.value.hint == "did you mean 'openelm-270M'?"


def test_config_must_be_a_dataclass():
    with pytest.raises(RegistryError, match="not a dataclass"):
        Registry("losses").add("bce", lambda config: None, dict, plugin="p")


def test_first_party_plugins_register_through_entry_points():
    registries = get_registries(refresh=True)
    names = {info.name for info in registries.plugins}
    assert {"openelm", "lm", "optim"} <= names
    assert "openelm-270M" in registries["models"]
    assert registries["models"].get("openelm-270M").plugin == "openelm"
    assert "adamw" in registries["optimizers"] and "cosine" in registries["schedulers"]


def test_environment_variable_restricts_loaded_plugins(monkeypatch):
    monkeypatch.setenv("TOOLKIT_PLUGINS", "optim")
    registries = get_registries(refresh=True)
    assert [info.name for info in registries.plugins] == ["optim"]
    assert len(registries["models"]) == 0
    monkeypatch.delenv("TOOLKIT_PLUGINS")
    get_registries(refresh=True)


def test_third_party_plugin_is_listed_and_trains(plugin_env, tmp_path):
    listing = run_command(["toolkit-plugins", "--json"], env=plugin_env)
    assert listing.returncode == 0, listing.stderr
    rows = {row["name"]: row for row in json.loads(listing.stdout)}
    assert rows["example"]["version"] == "0.3.0"
    assert rows["example"]["registers"] == {"models": ["wave-mlp"], "datasets": ["wave"], "tasks": ["regression"]}
    text = run_command(["toolkit-plugins"], env=plugin_env).stdout
    assert "example 0.3.0" in text and "models: wave-mlp" in text

    out_dir = tmp_path / "run"
    result = run_command(["toolkit-train", str(EXAMPLE_RECIPE), f"trainer.out_dir={out_dir}"], env=plugin_env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [r["val_loss"] for r in records if "val_loss" in r]
    # The target's variance is about 0.6: predicting its mean would score that.
    assert validation[-1] < 0.25
    assert (out_dir / "step-000060" / "model.safetensors").is_file()


def test_plugin_that_fails_to_import_is_named(tmp_path):
    site = tmp_path / "site"
    (site / "broken_plugin").mkdir(parents=True)
    (site / "broken_plugin" / "__init__.py").write_text("import a_module_that_does_not_exist\n")
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [toolkit]
        broken = broken_plugin
        """))
    env = dict(os.environ, PYTHONPATH=str(site))
    result = run_command(["toolkit-plugins"], env=env)
    assert_one_line_error(result, "plugin 'broken'", "a_module_that_does_not_exist")
    restricted = run_command(["toolkit-plugins"], env=dict(env, TOOLKIT_PLUGINS="openelm,optim,lm"))
    assert restricted.returncode == 0


def test_plugin_error_is_a_toolkit_error_and_the_cli_exits_2_with_its_line(capsys):
    assert issubclass(PluginError, ToolkitError) and PluginError("x").exit_code == 2

    def failing(arguments):
        raise PluginError("plugin 'broken': cannot import it", hint="reinstall it")

    code = run_cli(failing, [])
    assert_error_output(code, capsys.readouterr().err, "plugin 'broken': cannot import it", "reinstall it")
