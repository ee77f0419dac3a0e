"""gsm_symbolic is a plugin like any other: loaded from the entry-point group, listed by `toolkit-plugins`."""

from __future__ import annotations

import json

from helpers import run_command
from toolkit.plugins import get_registries


def test_toolkit_plugins_lists_gsm_symbolic_and_its_evaluator():
    result = run_command(["toolkit-plugins", "--json"])
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["gsm_symbolic"]["module"] == "plugins.gsm_symbolic"
    assert rows["gsm_symbolic"]["registers"] == {"evaluators": ["gsm_symbolic"]}
    assert "gsm_symbolic" not in rows["lm_eval"]["registers"]["evaluators"]
    assert rows["openelm"]["registers"]["model_importers"] == ["openelm-hf"]
    text = run_command(["toolkit-plugins"]).stdout
    assert "gsm_symbolic 0.1.0" in text and "evaluators: gsm_symbolic" in text


def test_the_evaluator_is_registered_by_its_own_plugin():
    component = get_registries(refresh=True)["evaluators"].get("gsm_symbolic")
    assert component.plugin == "gsm_symbolic"
