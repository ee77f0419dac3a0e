"""The toolkit as a user gets it from a wheel: its plugins' recipes travel inside their packages.

Builds a wheel of this checkout offline (no index, no build isolation: the installed setuptools),
installs it into a fresh folder with `pip install --target`, and trains nothing but dry runs from a
directory outside the repository. The editable install of this checkout is on the path too, so the
test checks that every toolkit module and every recipe the run used came from the wheel's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO

SOURCES = ("pyproject.toml", "README.md", "toolkit", "plugins")
RECIPES = {  # recipe name -> the plugin package that must ship it
    "openelm/tiny.yaml": "openelm",
    "catlip/tiny.yaml": "catlip",
    "clip/tiny.yaml": "clip",
    "transfer/fashion_mnist.yaml": "transfer",
}
# Run inside the installed copy: load every plugin, find each recipe, dry-run one, then report
# where the modules and recipes came from.
PROBE = """
import json, sys
from toolkit.cli.train import main_with_arguments
from toolkit.plugins import get_registries
from toolkit.recipe import find_recipe
assert main_with_arguments(["catlip/tiny.yaml", "--dry-run"]) == 0
recipe_dirs = get_registries().recipe_dirs
modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()
           if name.split(".")[0] in ("toolkit", "plugins")}
recipes = {name: str(find_recipe(name, recipe_dirs)) for name in json.loads(sys.argv[1])}
print(json.dumps({"modules": modules, "recipes": recipes}))
"""


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A wheel of this checkout, built and installed offline into a folder of its own."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy, so the build leaves no build/ or egg-info in the checkout
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = _run([*pip, "wheel", "--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir",
                  str(root / "dist"), str(source)], cwd=root, env=dict(os.environ))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("toolkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for recipe, plugin in RECIPES.items():
        assert f"plugins/{plugin}/recipes/{recipe.split('/')[1]}" in names, f"{recipe} is not in {wheel.name}"
    assert any(name.startswith("plugins/gsm_symbolic/templates/symbolic/") for name in names)
    target = root / "site"
    install = _run([*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                   cwd=root, env=dict(os.environ))
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    return target


def _environment(target: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("TOOLKIT_PLUGINS", "PYTHONPATH")}
    return dict(env, PYTHONPATH=str(target), OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_installed_wheel_finds_each_plugins_recipes_in_its_own_package(installed, tmp_path):
    result = _run([sys.executable, "-c", PROBE, json.dumps(list(RECIPES))], cwd=tmp_path,
                  env=_environment(installed))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "params:" in result.stdout
    outside = {name: path for name, path in report["modules"].items()
               if path is not None and not Path(path).is_relative_to(installed)}
    assert not outside, f"modules imported from outside the wheel's folder: {outside}"
    assert report["modules"]["toolkit"] == str(installed / "toolkit" / "__init__.py")
    for name, plugin in RECIPES.items():
        assert Path(report["recipes"][name]) == installed / "plugins" / plugin / "recipes" / name.split("/")[1]


@pytest.mark.slow
@pytest.mark.parametrize("recipe, expected", [("catlip/tiny.yaml", "model: catlip-vit-tiny"),
                                              ("openelm/tiny.yaml", "model: openelm-tiny")])
def test_installed_console_script_dry_runs_a_recipe(installed, tmp_path, recipe, expected):
    script = installed / "bin" / "toolkit-train"
    assert script.is_file(), "pip install --target did not write the toolkit-train script"
    result = _run([sys.executable, str(script), recipe, "--dry-run"], cwd=tmp_path, env=_environment(installed))
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected in result.stdout and "params:" in result.stdout
