"""Shared fixtures: the example third-party plugin (installed into a temporary folder) and CLI runners."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN_SOURCE = REPO / "tests" / "thirdparty_plugin"
EXAMPLE_RECIPE = EXAMPLE_PLUGIN_SOURCE / "recipe.yaml"


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


def run_command(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed toolkit console script (`toolkit-train ...`), capturing its output."""
    executable = shutil.which(args[0])
    assert executable, f"{args[0]} is not installed; run the README's setup first"
    return subprocess.run([executable, *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A clean failure: non-zero exit, no traceback, one `error:` line containing the fragments."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]
