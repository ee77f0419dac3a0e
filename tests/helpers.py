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
    assert_error_output(result.returncode, result.stderr, *fragments)


def assert_error_output(code: int | None, stderr: str, *fragments: str) -> None:
    """`assert_one_line_error` for a CLI run in-process: its exit code and captured stderr."""
    assert code == 2, (code, stderr[-2000:])
    assert "Traceback" not in stderr, stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, stderr
    assert "internal error" not in error_lines[0], error_lines[0]
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def snapshot(*roots: Path) -> dict[str, object]:
    """Everything on disk under `roots`, to compare before and after a command that must write
    nothing: each path -> ("dir",) or (size, mtime_ns, mode, bytes); an absent root -> None.
    Hidden files count too, so a leftover temporary shows up."""
    state: dict[str, object] = {}
    for root in map(Path, roots):
        if not root.exists():
            state[str(root)] = None
            continue
        for path in [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]:
            if path.is_dir():
                state[str(path)] = ("dir",)
            else:
                status = path.stat()
                state[str(path)] = (status.st_size, status.st_mtime_ns, status.st_mode, path.read_bytes())
    return state


def assert_unchanged(before: dict[str, object], *roots: Path) -> None:
    """Nothing under `roots` was created, removed or rewritten since `before = snapshot(*roots)`."""
    after = snapshot(*roots)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key, "absent") != after.get(key, "absent"))
    assert not changed, f"written or removed: {changed[:10]}"


def train_in_process(recipe_name: str, overrides: list[str], out_dir: Path) -> Path:
    """`toolkit-train recipe_name overrides` into `out_dir`, in this process (a tiny recipe: seconds)."""
    import torch

    from toolkit.assembly import build_trainer
    from toolkit.plugins import get_registries
    from toolkit.recipe import load_recipe

    threads = torch.get_num_threads()  # recipes pin their thread count; give the test process its own back
    trainer = build_trainer(load_recipe(recipe_name, [*overrides, f"trainer.out_dir={out_dir}"], get_registries()))
    try:
        trainer.fit()
    finally:
        trainer.close()
        torch.set_num_threads(threads)
    return out_dir
