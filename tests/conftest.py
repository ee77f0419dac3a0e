"""Shared fixtures: the example third-party plugin (installed into a temporary folder) and CLI runners."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import EXAMPLE_PLUGIN_SOURCE


@pytest.fixture(scope="session")
def example_plugin_dir(tmp_path_factory) -> Path:
    """The third-party plugin installed with pip, as a user would, into a folder of its own."""
    target = tmp_path_factory.mktemp("example_plugin_site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(EXAMPLE_PLUGIN_SOURCE)],
        check=True, capture_output=True,
    )
    return target


@pytest.fixture
def plugin_env(example_plugin_dir, monkeypatch) -> dict[str, str]:
    """Environment for subprocesses (and this process) that sees the example plugin."""
    path = os.pathsep.join(filter(None, [str(example_plugin_dir), os.environ.get("PYTHONPATH")]))
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.syspath_prepend(str(example_plugin_dir))
    import importlib

    importlib.invalidate_caches()
    from toolkit.plugins import get_registries

    get_registries(refresh=True)
    yield dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    monkeypatch.undo()
    get_registries(refresh=True)
