"""Helpers shared by the tests: run an installed console script, check a one-line error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN_SOURCE = REPO / "tests" / "thirdparty_plugin"
EXAMPLE_RECIPE = EXAMPLE_PLUGIN_SOURCE / "recipe.yaml"


def run_command(args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Run an installed toolkit console script (`toolkit-train ...`), capturing its output."""
    executable = shutil.which(args[0])
    assert executable, f"{args[0]} is not installed; run the README's setup first"
    return subprocess.run([executable, *args[1:]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """The clear path for bad input: exit 2 (not 1, which a crash gets), no traceback, and one
    `error:` line that is not an "internal error" and contains the fragments (what and where)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert "internal error" not in error_lines[0], error_lines[0]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]

